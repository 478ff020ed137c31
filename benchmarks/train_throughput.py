"""Training throughput of the tri-modal model vs this machine's measured matmul peak.

    .venv/bin/python benchmarks/train_throughput.py [--preset babyai-quick] [--steps 20] [--device cpu]

The step is the one ``vla-align train`` takes (``vla_align.step.TrainingStep``: the preset's pair InfoNCE,
policy and auxiliary terms, its balancer, gradient clipping and AdamW) on one batch of an in-memory table
of random frames, repeated. Prints one table: samples/s, achieved GFLOP/s (FLOPs counted by torch's
FlopCounterMode for one step) and the ratio to a large fp32 matmul's GFLOP/s measured in the same process.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from common import synthetic_table, training_step
from torch.utils.flop_counter import FlopCounterMode

from vla_align.data.episode import ActionSpec
from vla_align.presets import get_preset
from vla_align.train import make_optimizer


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="babyai-quick")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = get_preset(args.preset)
    cfg.loss.balancer.conflict_every = 0  # the gradient-conflict check runs once per 1,000 steps: not per-step cost
    spec = ActionSpec(kind="discrete", num_actions=7)
    model = cfg.model.build(spec).to(device)
    table = synthetic_table(spec, cfg.data.image_size)
    step_id = 10**9  # past every curriculum: all pairs and the policy are on
    unit, inp = training_step(cfg, model, table, step_id)
    opt = make_optimizer(model, cfg.train, unit.aux)
    balancer = cfg.loss.balancer.build(unit.names).to(device)
    b, s = cfg.train.batch_size, cfg.data.image_size

    def step() -> None:  # the preset's training step: every loss term, balancer backward, clip, AdamW
        unit.apply(unit.compute_losses(inp, step_id).weighted, opt, balancer, step_id)

    step()  # warm-up (and MiniLM cache fill)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    peak = matmul_peak(device)
    achieved = flops / dt / 1e9
    print(
        f"machine: {platform.machine()} {torch.get_num_threads()} threads, device {device}, torch {torch.__version__}"
    )
    policy = f"policy {cfg.model.policy.fusion.name}" if model.policy is not None else "no policy"
    print(f"preset {args.preset}: batch {b}, image {s}px, D={cfg.model.embed_dim}, {policy}, {args.steps} timed steps")
    print(f"loss terms: {', '.join(unit.names)}; balancer {cfg.loss.balancer.name}")
    print("| step ms | samples/s | GFLOP/step | achieved GFLOP/s | matmul peak GFLOP/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {dt * 1e3:.1f} | {b / dt:.0f} | {flops / 1e9:.2f} | {achieved:.1f} | {peak:.1f} | {achieved / peak:.2f} |"
    )


if __name__ == "__main__":
    main()
