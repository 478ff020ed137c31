"""Closed-loop success on a BabyAI level against the number of demonstrations, at equal training steps.

    .venv/bin/python benchmarks/babyai_data_efficiency.py --sizes 1000 3000 10000 \
        --variants bc joint pretrain --fusions film --steps 3000 --episodes 500 --out runs/bench-data

Every (size, variant, fusion) cell trains one run with `vla-align train` on a dataset of that many
training demonstrations (the datasets share their validation and test seeds, so every cell is judged
on the same held-out episodes) and evaluates it with `vla-align eval --episodes N`. Equal steps with
equal batch size is equal compute for a given model; the wall time of each run is printed beside it.

Variants (what the chapter asks the benchmark to separate):
  bc        behaviour cloning only (contrastive weights 0) -- the reference column
  joint     contrastive + behaviour cloning from step 0
  pretrain  contrastive only for the first half, then BC with the encoders frozen for a quarter
  scratch   joint, with the trainable from-scratch text encoder instead of frozen MiniLM
  mirror    joint, with left-right mirror augmentation (p = 0.5; swaps left/right actions and words)

Prints a Markdown table (and writes it to OUT/table.md) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from common import run_timed, write_table

VARIANTS: dict[str, list[str]] = {
    "bc": ["--loss.weights.image-text", "0", "--loss.weights.text-action", "0", "--loss.weights.image-action", "0"],
    "joint": [],
    "pretrain": [],  # filled in from --steps
    "scratch": ["--model.text.backbone", "scratch"],
    "mirror": ["--train.augment-mirror", "0.5"],
}


def run(cmd: list[str]) -> float:
    return run_timed(cmd, env={**os.environ, "VLA_ALIGN_QUIET": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="GoToLocal")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--variants", nargs="+", default=["bc", "joint", "pretrain"], choices=list(VARIANTS))
    parser.add_argument("--fusions", nargs="+", default=["film"])
    parser.add_argument("--preset", default="babyai")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--episodes", type=int, default=500, help="closed-loop test episodes per cell")
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-data"))
    parser.add_argument("--data", type=Path, help="an existing dataset to use (with a single --sizes value)")
    args = parser.parse_args()
    exe = [sys.executable, "-m", "vla_align"]
    half = args.steps // 2
    VARIANTS["pretrain"] = [
        "--model.policy.start-step",
        str(half),
        "--model.policy.freeze-encoders-until",
        str(half + args.steps // 4),
    ]

    rows = []
    for size in args.sizes:
        data = args.data or args.out / f"data-{args.level}-{size}"
        if args.data and len(args.sizes) > 1:
            raise SystemExit("--data needs a single --sizes value")
        if not (data / "meta" / "info.json").is_file():
            run(
                [
                    *exe,
                    "data",
                    "babyai",
                    "--level",
                    args.level,
                    "--episodes",
                    str(size),
                    "--val-episodes",
                    str(args.val),
                    "--test-episodes",
                    str(args.test),
                    "--out",
                    str(data),
                    "--overwrite",
                ]
            )
        for fusion in args.fusions:
            for variant in args.variants:
                name = args.out / f"{args.level}-{size}-{fusion}-{variant}"
                cmd = [
                    *exe,
                    "train",
                    "--preset",
                    args.preset,
                    "--data",
                    str(data),
                    "--out",
                    str(name),
                    "--train.steps",
                    str(args.steps),
                    "--model.policy.enabled",
                    "true",
                    "--model.policy.fusion",
                    fusion,
                    *VARIANTS[variant],
                ]
                if (name / "metrics.json").is_file():
                    train_s = float("nan")
                else:
                    if name.exists():
                        subprocess.run(["rm", "-rf", str(name)], check=True)
                    train_s = run(cmd)
                    run([*exe, "eval", "--run", str(name), "--episodes", str(args.episodes)])
                m = json.loads((name / "metrics.json").read_text())
                rows.append((size, fusion, variant, m, train_s))

    lines = [
        f"BabyAI {args.level}, preset {args.preset}, {args.steps} steps per run, "
        f"{args.episodes} held-out test episodes per cell; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}",
        "",
        "| demos | fusion | variant | success | SPL | shuffled-text success | shuffled-image success "
        "| image→text R@10 | train s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size, fusion, variant, m, train_s in rows:
        lines.append(
            f"| {size} | {fusion} | {variant} | {m.get('sim/success_rate', float('nan')):.3f} "
            f"| {m.get('sim/spl', float('nan')):.3f} | {m.get('ablation/shuffle_text/sim/success_rate', float('nan')):.3f} "
            f"| {m.get('ablation/shuffle_image/sim/success_rate', float('nan')):.3f} "
            f"| {m.get('retrieval/image_to_text/R@10', float('nan')):.3f} | {train_s:.0f} |"
        )
    write_table(lines, args.out)


if __name__ == "__main__":
    main()
