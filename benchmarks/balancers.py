"""Cost of multi-objective balancing (chapter 5.10) on the BabyAI-sized tri-modal model.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/balancers.py [--preset babyai] [--batch 256] [--steps 5]
        [--threads 2] [--text auto|scratch] [--contiguous-images]

Builds the preset's model as training does (``cfg.model.build`` with a 7-action discrete spec;
the text backbone falls back to ``scratch`` when MiniLM cannot be loaded), one batch of an in-memory
table of random frames, and the weighted loss dict of the training step (``TrainingStep``: the
preset's InfoNCE pairs, the policy's behaviour-cloning loss and its auxiliary objectives, each
multiplied by its config prior). Then, for every method, forward + loss + gradient computation
(no optimizer step, so every round does the same work), rounds interleaved across methods so a
background load hits them alike, median over ``--steps`` rounds after ``--warmup``:

* plain: ``sum(losses).backward()``;
* naive loop: one ``autograd.grad`` per objective over all parameters, summed into ``.grad``;
* per_objective_grads loop / batched: the helper alone, each path forced;
* every registered balancer's ``backward``.

``--contiguous-images`` patches ``ImageEncoder.preprocess`` in this process to return a contiguous
tensor; without it, GroupNorm's backward under vmap fails on the channels-last feature maps that
the permuted uint8 input produces, so the batched path cannot run. ``--vjp`` picks the balancers'
per-objective path (``auto``: the loop on CPU, see ``per_objective_grads``).

Prints a Markdown table: ms per step, backward-only ms and the ratios to plain and to the naive loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from common import cpu_name, synthetic_table, training_step
from torch import Tensor, nn

from vla_align.balancing import (
    BALANCERS,
    VJP_STATUS,
    Balancer,
    PerObjectiveBalancer,
    per_objective_grads,
)
from vla_align.balancing.base import accumulate
from vla_align.data.episode import ActionSpec
from vla_align.encoders.image import ImageEncoder
from vla_align.presets import RunConfig, get_preset
from vla_align.step import StepBatch, TrainingStep

STEP = 10**9  # past every curriculum: all pairs and the policy are on


def build(cfg: RunConfig, text: str) -> tuple[TrainingStep, StepBatch, str]:
    """The preset's training step and one batch, with the text backbone ``text`` or else ``scratch``."""
    spec = ActionSpec(kind="discrete", num_actions=7)
    table = synthetic_table(spec, cfg.data.image_size)
    for backbone in dict.fromkeys([text, "scratch"]):
        cfg.model.text.backbone = backbone  # type: ignore[assignment]
        try:
            model = cfg.model.build(spec)
            unit, inp = training_step(cfg, model, table, STEP)
            unit.compute_losses(inp, STEP)
        except Exception as exc:  # MiniLM missing or not loadable: fall back to the scratch encoder
            print(f"text backbone {backbone!r} failed ({type(exc).__name__}: {exc}); trying 'scratch'")
            continue
        return unit, inp, model.text_backbone
    raise RuntimeError("could not build the model")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="babyai")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed rounds per method")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--text", default="auto", choices=["auto", "minilm", "scratch"])
    parser.add_argument("--contiguous-images", action="store_true")
    parser.add_argument("--vjp", default="auto", choices=["auto", "batched", "loop"], help="the balancers' path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="There is a performance drop")
    if args.contiguous_images:
        original = ImageEncoder.preprocess
        ImageEncoder.preprocess = staticmethod(lambda image: original(image).contiguous())  # type: ignore[method-assign]

    cfg = get_preset(args.preset)
    cfg.train.batch_size = args.batch
    unit, inp, backbone = build(cfg, args.text)
    model = unit.model
    model.train()
    params = unit.parameters()

    def losses() -> dict[str, Tensor]:  # the training step's terms, each times its prior λ
        return unit.compute_losses(inp, STEP).weighted

    names = list(losses())

    def plain(values: dict[str, Tensor], step: int) -> None:
        sum(values.values(), torch.zeros(())).backward()

    def naive(values: dict[str, Tensor], step: int) -> None:
        for k, v in enumerate(values.values()):
            grads = torch.autograd.grad(v, params, retain_graph=k < len(values) - 1, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                if g is not None:
                    accumulate(p, g)

    def helper(mode: str) -> Callable[[dict[str, Tensor], int], object]:
        def run(values: dict[str, Tensor], step: int) -> None:
            per_objective_grads(values, params, mode=mode)  # type: ignore[arg-type]

        return run

    methods: dict[str, Callable[[dict[str, Tensor], int], object]] = {
        "plain sum backward": plain,
        "naive loop (K autograd.grad)": naive,
        "per_objective_grads loop": helper("loop"),
    }
    batched_error = ""
    try:
        per_objective_grads(losses(), params, mode="batched")
        methods["per_objective_grads batched"] = helper("batched")
    except RuntimeError as exc:
        batched_error = str(exc).strip().splitlines()[0][:160]
    model.zero_grad(set_to_none=True)
    for name in BALANCERS.names():
        balancer = BALANCERS.get(name)().build(names)
        if isinstance(balancer, PerObjectiveBalancer):
            balancer.vjp = args.vjp
        methods[f"balancer {name}"] = bind(balancer, params)

    forward_ms: list[float] = []
    step_ms: dict[str, list[float]] = {m: [] for m in methods}
    paths: dict[str, str] = {}
    load = os.getloadavg()[0]
    for round_ in range(args.warmup + args.steps):
        for method, fn in methods.items():
            model.zero_grad(set_to_none=True)
            VJP_STATUS.last_path = ""
            t0 = time.perf_counter()
            values = losses()
            t1 = time.perf_counter()
            fn(values, round_)
            t2 = time.perf_counter()
            paths[method] = VJP_STATUS.last_path or "-"
            if round_ >= args.warmup:
                forward_ms.append((t1 - t0) * 1e3)
                step_ms[method].append((t2 - t0) * 1e3)
    fwd = statistics.median(forward_ms)
    med = {m: statistics.median(v) for m, v in step_ms.items()}
    base, loop = med["plain sum backward"], med["naive loop (K autograd.grad)"]

    n_params = sum(p.numel() for p in params)
    print(
        f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"load average {load:.2f} at start"
    )
    print(
        f"preset {args.preset}: batch {args.batch}, text backbone {backbone}, {n_params / 1e6:.2f}M parameters, "
        f"K={len(names)} objectives ({', '.join(names)}), median of {args.steps} rounds after {args.warmup} warm-up"
    )
    print(f"contiguous images: {args.contiguous_images}; batched VJP: {batched_error or 'ok'}")
    print(f"forward + losses: {fwd:.0f} ms (median over all methods' rounds)")
    print()
    print("| method | ms/step | backward ms | × plain | × naive loop | VJP path |")
    print("|---|---:|---:|---:|---:|---|")
    for method in methods:
        print(
            f"| {method} | {med[method]:.0f} | {med[method] - fwd:.0f} | {med[method] / base:.2f} | "
            f"{med[method] / loop:.2f} | {paths[method]} |"
        )


def bind(balancer: Balancer, params: list[nn.Parameter]) -> Callable[[dict[str, Tensor], int], object]:
    def run(values: dict[str, Tensor], step: int) -> object:
        return balancer.backward(values, params, step)

    return run


if __name__ == "__main__":
    main()
