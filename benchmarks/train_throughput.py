"""Training throughput of the tri-modal model vs this machine's measured matmul peak.

    .venv/bin/python benchmarks/train_throughput.py [--preset babyai-quick] [--steps 20] [--device cpu]

Prints one table: samples/s, achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode for one
forward+backward step) and the ratio to a large fp32 matmul's GFLOP/s measured in the same process.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vla_align.data.episode import ActionSpec
from vla_align.losses import AlignmentLoss
from vla_align.modalities import PAIRS, Batch
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
    spec = ActionSpec(kind="discrete", num_actions=7)
    model = cfg.model.build(spec).to(device)
    opt = make_optimizer(model, cfg.train)
    objective = AlignmentLoss(cfg.loss)
    b, s, t = cfg.train.batch_size, cfg.data.image_size, cfg.model.action.chunk_len
    texts = [f"go to the {c} {o}" for c in ("red", "green", "blue", "grey") for o in ("ball", "box", "key")]
    batch = Batch(
        image=torch.randint(0, 256, (b, s, s, 3), dtype=torch.uint8),
        text=[texts[i % len(texts)] for i in range(b)],
        action=torch.randint(0, 7, (b, t)),
        action_mask=torch.ones(b, t, dtype=torch.bool),
        text_group=torch.arange(b) % len(texts),
        prev_action=torch.randint(-1, 7, (b,)),
    ).to(device)

    def step() -> None:  # the training step of the preset: contrastive terms (+ the policy's BC loss)
        emb, logits = model.run(batch, objective.modalities(10**9), policy=model.policy is not None)
        losses = objective(emb, batch, {p: model.logit_scale(p) for p in PAIRS}, step=10**9)
        if logits is not None and model.policy is not None:
            losses["policy"] = model.policy.loss(logits, batch.action, batch.action_mask)
        opt.zero_grad()
        objective.total(losses, {"policy": cfg.model.policy.weight}).backward()
        opt.step()

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
    policy = f"policy {cfg.model.policy.fusion}" if model.policy is not None else "no policy"
    print(f"preset {args.preset}: batch {b}, image {s}px, D={cfg.model.embed_dim}, {policy}, {args.steps} timed steps")
    print("| step ms | samples/s | GFLOP/step | achieved GFLOP/s | matmul peak GFLOP/s | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {dt * 1e3:.1f} | {b / dt:.0f} | {flops / 1e9:.2f} | {achieved:.1f} | {peak:.1f} | {achieved / peak:.2f} |"
    )


if __name__ == "__main__":
    main()
