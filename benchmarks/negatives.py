"""Negatives (chapter 5.7): in-batch only, a memory bank, a bigger batch, semantic hard negatives.

    .venv/bin/python benchmarks/negatives.py --data datasets/babyai-GoToLocal-XXXX --steps 2000 \
        --episodes 500 --out runs/bench-negatives
    .venv/bin/python benchmarks/negatives.py --data /tmp/neg/data --steps 20 --episodes 10 \
        --no-select --out /tmp/neg/runs                       # a smoke run

Every cell trains one run with `vla-align train --preset P --data D --train.steps N` plus its flags and
evaluates it with `vla-align eval --episodes E` (closed loop on the test split's seeds, the same seeds
in every cell). Cells:

  b64          batch 64, in-batch negatives only (the reference row)
  b64-bank     batch 64 + a memory bank of --bank past samples (--loss.memory-bank.size; capped at
               the training split's samples)
  b256         batch 256, in-batch negatives only (the bank's alternative: 4x the compute per step)
  b64-hard     batch 64, --hard-fraction of each batch drawn as attribute neighbours (a colour or object
               swapped: "go to the red ball" -> "go to the blue ball")
  b256-hard    batch 256 with the same hard negatives (not run by default)

Reported per cell: image->text and text->image R@10 on the test split (the eval protocol: one frame
per episode), closed-loop success, the colour-swap confusion (test split: for every sample whose
instruction has a colour-swapped twin among the split's instructions, e.g. "go to the red ball" and
"go to the grey ball", the share of (sample, twin) pairs where image->text scores the twin above the
true instruction; 0.5 = chance, 0 = never confused), the mean optimiser step time (batch size /
samples_per_s of the last metrics.jsonl record; it includes the bank's extra columns) and the training
wall time. Equal steps: b256 sees 4x the samples of the batch-64 cells.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

from common import cpu_name, train_and_eval, write_table

COLOURS = frozenset({"red", "green", "blue", "purple", "yellow", "grey"})  # BabyAI's COLOR_NAMES
ORDER = ["b64", "b64-bank", "b256", "b64-hard", "b256-hard"]


def cell_flags(cell: str, args: argparse.Namespace, bank: int) -> list[str]:
    batch = "256" if cell.startswith("b256") else "64"
    flags = ["--train.batch-size", batch]
    if cell.endswith("-bank"):
        flags += ["--loss.memory-bank.size", str(bank)]
    if cell.endswith("-hard"):
        flags += ["--data.hard-negatives.fraction", str(args.hard_fraction)]
        flags += ["--data.hard-negatives.kinds", *args.hard_kinds]
    if args.no_select:
        flags += ["--train.select.every", "0"]
    return flags + args.flags


def train_samples(data: Path) -> int:
    """Rows of the training split (what the bank's size is capped at)."""
    from vla_align.data.lerobot import read_dataset

    return int(read_dataset(data, split="train").num_frames)


def colour_twins(texts: list[str]) -> dict[str, list[str]]:
    """Per instruction, the instructions of ``texts`` that differ from it in exactly one word, a colour."""
    from vla_align.data.hard_negatives import content_words

    words = {t: content_words(t) for t in set(texts)}
    out: dict[str, list[str]] = {}
    for t, w in words.items():
        twins = []
        for u, v in words.items():
            diff = [i for i, (x, y) in enumerate(zip(w, v, strict=False)) if x != y] if len(v) == len(w) else []
            if len(diff) == 1 and w[diff[0]] in COLOURS and v[diff[0]] in COLOURS and u != t:
                twins.append(u)
        if twins:
            out[t] = sorted(twins)
    return out


def colour_confusion(run: Path, data: Path) -> tuple[float, int]:
    """(share of (sample, colour twin) pairs where image->text scores the twin above the true instruction,
    number of pairs) on the test split, one frame per episode as in the retrieval protocol."""
    from vla_align.data.lerobot import read_dataset
    from vla_align.data.windows import ChunkSampler
    from vla_align.evaluate import embed_samples
    from vla_align.runs import load_model

    model, cfg = load_model(run)
    table = read_dataset(data, split="test")
    sampler = ChunkSampler(table, model.cfg.action.chunk_len, model.cfg.policy.history)
    rows = sampler.one_per_episode(cfg.eval.seed, cfg.eval.frame)
    z = embed_samples(model, sampler, rows, cfg.eval.batch_size)
    texts = [table.instructions[e] for e in sampler.row_episode[rows]]
    gallery = sorted(set(texts))
    first = {t: texts.index(t) for t in gallery}
    scores = z["image"] @ z["text"][[first[t] for t in gallery]].T  # (N, G)
    column = {t: j for j, t in enumerate(gallery)}
    twins = colour_twins(gallery)
    above, pairs = 0, 0
    for i, t in enumerate(texts):
        for u in twins.get(t, []):
            above += int(bool(scores[i, column[u]] > scores[i, column[t]]))
            pairs += 1
    return (above / pairs if pairs else math.nan), pairs


def step_time(run: Path, batch: int) -> float:
    """Seconds per optimiser step: batch / samples_per_s of the last training record (averaged over the run)."""
    rates = [
        r["samples_per_s"]
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if "samples_per_s" in r
    ]
    return batch / rates[-1] if rates else math.nan


def table(args: argparse.Namespace) -> list[str]:
    lines = [
        f"BabyAI negatives, preset {args.preset}, {args.steps} steps per cell, data {args.data}, "
        f"{args.episodes} closed-loop test seeds per cell (the same in every cell).",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, python {platform.python_version()}.",
        f"Command: {' '.join([sys.executable, *sys.argv])}",
        "",
        "| cell | flags | image→text R@10 | text→image R@10 | success | colour-swap confusion (pairs) "
        "| step s | train s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in ORDER:
        path = args.out / cell
        try:
            spec = json.loads((path / "cell.json").read_text())
            m = json.loads((path / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        lines.append(
            f"| {cell} | `{' '.join(spec['flags'])}` | {m.get('retrieval/image_to_text/R@10', math.nan):.3f} "
            f"| {m.get('retrieval/text_to_image/R@10', math.nan):.3f} | {m.get('sim/success_rate', math.nan):.3f} "
            f"| {spec['confusion']:.3f} ({spec['pairs']}) | {spec['step_s']:.3f} | {spec['train_s']:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a BabyAI GoToLocal dataset (vla-align data babyai)")
    parser.add_argument("--cells", nargs="+", default=ORDER[:4], choices=ORDER)
    parser.add_argument("--preset", default="babyai-quick")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=500, help="closed-loop test episodes per cell")
    parser.add_argument("--bank", type=int, default=4096, help="memory-bank size of the bank cell")
    parser.add_argument("--hard-fraction", type=float, default=0.25, help="share of each batch of the hard cells")
    parser.add_argument("--hard-kinds", nargs="+", default=["attribute"], help="attribute, verb, scene")
    parser.add_argument("--no-select", action="store_true", help="no validation checks (--train.select.every 0)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-negatives"))
    parser.add_argument(
        "--flags", nargs=argparse.REMAINDER, default=[], help="more training flags for every cell (put it last)"
    )
    parser.add_argument("--table-only", action="store_true", help="print the table of the finished cells")
    args = parser.parse_args()
    env = {**os.environ, "VLA_ALIGN_QUIET": "1"}
    bank = args.bank
    if not args.table_only and any(c.endswith("-bank") for c in args.cells):
        rows = train_samples(args.data)
        if bank > rows:
            print(f"memory bank {bank} > the {rows} training samples of {args.data}: using {rows}", flush=True)
            bank = rows
    for cell in [] if args.table_only else args.cells:
        path = args.out / cell
        if (path / "cell.json").is_file():
            continue
        flags = cell_flags(cell, args, bank)
        train_s = train_and_eval(args.preset, args.data, path, args.steps, flags, args.episodes, env)
        confusion, pairs = colour_confusion(path, args.data)
        batch = int(flags[flags.index("--train.batch-size") + 1])
        spec = {
            "cell": cell,
            "flags": flags,
            "train_s": train_s,
            "step_s": step_time(path, batch),
            "confusion": confusion,
            "pairs": pairs,
            "data": str(args.data),
        }
        (path / "cell.json").write_text(json.dumps(spec, indent=1) + "\n")
    write_table(table(args), args.out)


if __name__ == "__main__":
    main()
