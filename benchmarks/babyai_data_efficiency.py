"""Closed-loop success on a BabyAI level against the number of demonstrations, at equal training steps.

    .venv/bin/python benchmarks/babyai_data_efficiency.py --sizes 1000 3000 10000 \
        --variants bc joint pretrain --fusions film --steps 1000 --episodes 500 --out runs/bench-data
    .venv/bin/python benchmarks/babyai_data_efficiency.py --sizes 1000 \
        --variants joint --fusions late gated xattn --steps 1000 --out runs/bench-data

Every (size, fusion, variant) cell trains one run with `vla-align train` on a dataset of that many
training demonstrations and evaluates it with `vla-align eval --episodes N`. The datasets of every size
share their validation and test seeds (a split's env seeds depend only on the split and the index), so
every cell is judged on the same held-out episodes. Equal steps at equal batch size is equal compute for
a given model; each cell's training wall time is printed beside it. A dataset already in `--datasets`
with the same level, seed, image size and split sizes is reused; otherwise one is generated under OUT.

Variants (what the chapter asks the benchmark to separate):
  bc        behaviour cloning only (contrastive weights 0) -- the reference column
  joint     contrastive + behaviour cloning from step 0
  pretrain  contrastive only for the first half, then BC with the encoders frozen for a quarter,
            then everything trained (the chapter's "freeze first, then unfreeze")
  scratch   joint, with the trainable from-scratch GRU text encoder instead of frozen MiniLM
  mirror    joint, with left-right mirror augmentation (p = 0.5; swaps left/right actions and words)
  hd0       joint, without the preset's history dropout (the last 4 actions always visible)

Cells accumulate in OUT: the table (printed and written to OUT/table.md) lists every finished cell
there, with success relative to the bc cell of the same size and fusion when that cell exists.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

from common import cpu_name, run_timed, train_and_eval, write_table

VARIANTS: dict[str, list[str]] = {
    "bc": ["--loss.weights.image-text", "0", "--loss.weights.text-action", "0", "--loss.weights.image-action", "0"],
    "joint": [],
    "pretrain": [],  # filled in from --steps
    "scratch": ["--model.text.backbone", "scratch"],
    "mirror": ["--train.augment-mirror", "0.5"],
    "hd0": ["--model.policy.history-dropout", "0"],
}
ORDER = list(VARIANTS)


def run(cmd: list[str]) -> float:
    return run_timed(cmd, env={**os.environ, "VLA_ALIGN_QUIET": "1"})


def find_dataset(root: Path, level: str, size: int, val: int, test: int) -> Path | None:
    """A finished dataset under ``root`` of exactly this level and these split sizes (seed 0, 56 px)."""
    want = {"train": f"0:{size}", "val": f"{size}:{size + val}", "test": f"{size + val}:{size + val + test}"}
    for info_path in sorted(root.glob("*/meta/info.json")):
        try:
            info = json.loads(info_path.read_text())
            meta = info["vla_align"]
        except (OSError, ValueError, KeyError):
            continue
        if (
            meta.get("source") == "babyai"
            and meta.get("levels") == [f"BabyAI-{level}-v0"]
            and meta.get("seed") == 0
            and meta.get("image_size") == 56
            and info.get("splits") == want
        ):
            return info_path.parent.parent
    return None


def dataset(args: argparse.Namespace, exe: list[str], size: int) -> Path:
    if args.data is not None:
        return Path(args.data)
    found = find_dataset(args.datasets, args.level, size, args.val, args.test)
    if found is not None:
        return found
    data = args.out / f"data-{args.level}-{size}"
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
    return data


def cell_row(cell: Path) -> tuple[int, str, str, dict[str, float], float] | None:
    """(size, fusion, variant, metrics, train seconds) of a finished cell directory, else None."""
    try:
        spec = json.loads((cell / "cell.json").read_text())
        metrics = json.loads((cell / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if "sim/success_rate" not in metrics:
        return None
    return int(spec["size"]), str(spec["fusion"]), str(spec["variant"]), metrics, float(spec["train_s"])


def table(args: argparse.Namespace) -> list[str]:
    rows = [r for r in (cell_row(c) for c in sorted(args.out.glob("*/"))) if r is not None]
    rows.sort(key=lambda r: (r[0], r[1], ORDER.index(r[2]) if r[2] in ORDER else len(ORDER)))
    bc = {(size, fusion): m["sim/success_rate"] for size, fusion, variant, m, _ in rows if variant == "bc"}
    lines = [
        f"BabyAI {args.level}, preset {args.preset}, {args.steps} steps × batch of the preset per cell "
        f"(equal compute), {args.episodes} held-out test seeds per cell (the same seeds in every cell).",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, python {platform.python_version()}.",
        "",
        "| demos | fusion | variant | success | ÷ bc | SPL | shuffled-text success | shuffled-image success "
        "| image→text R@10 | train s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    borrowed = False
    for size, fusion, variant, m, train_s in rows:
        ref, mark = bc.get((size, fusion)), ""
        if ref is None and (size, "film") in bc:  # no bc cell of this fusion: the film one, marked
            ref, mark, borrowed = bc[(size, "film")], " †", True
        ratio = f"{m['sim/success_rate'] / ref:.2f}{mark}" if ref else "–"
        lines.append(
            f"| {size} | {fusion} | {variant} | {m['sim/success_rate']:.3f} | {ratio} "
            f"| {m.get('sim/spl', math.nan):.3f} | {m.get('ablation/shuffle_text/sim/success_rate', math.nan):.3f} "
            f"| {m.get('ablation/shuffle_image/sim/success_rate', math.nan):.3f} "
            f"| {m.get('retrieval/image_to_text/R@10', math.nan):.3f} | {train_s:.0f} |"
        )
    if borrowed:
        lines += ["", "† against the film bc cell of the same size (no bc cell of that fusion was run)."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--level", default="GoToLocal")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--variants", nargs="+", default=["bc", "joint", "pretrain"], choices=ORDER)
    parser.add_argument("--fusions", nargs="+", default=["film"])
    parser.add_argument("--preset", default="babyai")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=500, help="closed-loop test episodes per cell")
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-data"))
    parser.add_argument("--datasets", type=Path, default=Path("datasets"), help="where to look for datasets")
    parser.add_argument("--data", type=Path, help="an existing dataset to use (with a single --sizes value)")
    parser.add_argument("--table-only", action="store_true", help="print the table of the finished cells")
    args = parser.parse_args()
    if args.data and len(args.sizes) > 1:
        raise SystemExit("--data needs a single --sizes value")
    exe = [sys.executable, "-m", "vla_align"]
    half = args.steps // 2
    VARIANTS["pretrain"] = [
        "--model.policy.start-step",
        str(half),
        "--model.policy.freeze-encoders-until",
        str(half + args.steps // 4),
    ]

    for size in [] if args.table_only else args.sizes:
        data = dataset(args, exe, size)
        for fusion in args.fusions:
            for variant in args.variants:
                cell = args.out / f"{args.level}-{size}-{fusion}-{variant}"
                if cell_row(cell) is not None:
                    continue
                flags = ["--model.policy.enabled", "true", "--model.policy.fusion", fusion, *VARIANTS[variant]]
                env = {**os.environ, "VLA_ALIGN_QUIET": "1"}
                train_s = train_and_eval(args.preset, data, cell, args.steps, flags, args.episodes, env)
                spec = {"size": size, "fusion": fusion, "variant": variant, "train_s": train_s, "data": str(data)}
                (cell / "cell.json").write_text(json.dumps(spec, indent=1) + "\n")
    write_table(table(args), args.out)


if __name__ == "__main__":
    main()
