"""Mutual-vote filtering (`vla-align data vote`, chapter 5.7) against known instruction faults.

1. corrupt: from a clean dataset, write a noisy copy in which a fraction of the TRAINING episodes get
   the instruction of another random episode whose instruction differs; the ground truth goes to
   ``NOISY.faults.json`` beside the copy (never inside it). info.json's splits are kept.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vote_faults.py corrupt --data datasets/babyai \\
        --out datasets/babyai-noisy --rate 0.1 --seed 0

2. train a run on the noisy copy, keeping checkpoints (so early ones can vote):

    OMP_NUM_THREADS=1 .venv/bin/vla-align train --preset quick --data datasets/babyai-noisy \\
        --out runs/noisy --train.keep-checkpoints 20

3. measure: vote with the run (its final weights and the kept checkpoints named) and print, per
   checkpoint / pooling / top-k, precision and recall of the flagged training episodes against the ground
   truth at several thresholds, the average precision of the agreement score (lower = more suspect), and
   the wall time and CPU seconds of embedding and voting:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vote_faults.py measure --noisy datasets/babyai-noisy \\
        --run runs/noisy --checkpoints final step-000500 step-001000 --top-k 1 3 5 --pool mean max

The score of the instruction check alone (``instruction_agreement``) is reported beside the episode's
overall ``agreement``, since the injected faults are instruction faults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vla_align.data.info_checks import parse_splits  # noqa: E402
from vla_align.data.lerobot import read_dataset, read_episodes, read_info  # noqa: E402
from vla_align.data.lerobot_write import write_dataset  # noqa: E402
from vla_align.vote import VoteConfig, check_votable, decide, embed_episodes, vote_ranks  # noqa: E402

FORMAT = "vla-align-vote-faults"


def faults_path(noisy: Path) -> Path:
    return noisy.with_name(noisy.name + ".faults.json")


def corrupt(clean: Path, out: Path, rate: float, seed: int, overwrite: bool) -> None:
    info = read_info(clean)
    splits = parse_splits(info, clean / "meta" / "info.json")
    if "train" not in splits:
        raise SystemExit(f"{clean}: info.json has no train split; the faults go into training episodes")
    if clean.with_name(clean.name + ".splits.json").is_file():
        print(f"note: {clean}.splits.json is not copied; the noisy copy uses info.json's splits {splits}")
    episodes = read_episodes(clean)
    start, end = splits["train"]
    rng = np.random.default_rng(seed)
    train = np.arange(start, min(end, len(episodes)))
    chosen = np.sort(rng.choice(train, size=round(rate * len(train)), replace=False))
    truth = []
    for e in chosen:
        original = episodes[e].instruction
        donors = [i for i in range(len(episodes)) if episodes[i].instruction != original]
        donor = int(rng.choice(donors))
        truth.append({"episode_index": int(e), "original": original, "replaced": episodes[donor].instruction})
        episodes[e].instruction = episodes[donor].instruction
    extra = {k: v for k, v in info.get("vla_align", {}).items() if k != "action_spec"}
    write_dataset(
        out,
        iter(episodes),
        action_spec=read_dataset(clean, max_episodes=1).action_spec,
        fps=float(info["fps"]),
        splits=splits,
        robot_type=str(info.get("robot_type", "unknown")),
        extra=extra,
        overwrite=overwrite,
        total_episodes=len(episodes),
    )
    doc = {
        "format": FORMAT,
        "clean": str(clean.resolve()),
        "noisy": str(out.resolve()),
        "rate": rate,
        "seed": seed,
        "train_episodes": len(train),
        "corrupted": truth,
    }
    faults_path(out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(truth)} of {len(train)} training episodes got another episode's instruction")
    print(f"ground truth: {faults_path(out)}")


def precision_recall(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hits = float((flagged & truth).sum())
    return hits / max(int(flagged.sum()), 1), hits / max(int(truth.sum()), 1)


def average_precision(score: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of ranking the episodes by ``score``, lowest (most suspect) first."""
    order = np.argsort(score, kind="stable")
    hits = truth[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / max(hits.sum(), 1.0))


def measure(args: argparse.Namespace) -> None:
    import torch

    from vla_align import checkpoint
    from vla_align.runs import load_model

    truth_doc = json.loads(faults_path(args.noisy).read_text(encoding="utf-8"))
    table = read_dataset(args.noisy, split="train")
    bad = {r["episode_index"] for r in truth_doc["corrupted"]}
    truth = np.isin(table.episode_ids, sorted(bad))
    print(
        f"machine: {platform.node()} {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(
        f"dataset: {args.noisy} train split, {table.num_episodes} episodes, {int(truth.sum())} corrupted "
        f"({truth_doc['rate']:.0%} of training, seed {truth_doc['seed']}); run {args.run}"
    )
    header = "| checkpoint | pool | top-k | threshold | flagged | precision | recall | AP agreement | AP instruction |"
    lines = [header, "|" + "---|" * 9]
    for name in args.checkpoints:
        model, _ = load_model(args.run, "cpu")
        if name != "final":
            checkpoint.load_weights(model, checkpoint.snapshot_dir(args.run, name))
        t0, c0 = time.perf_counter(), time.process_time()
        z = embed_episodes(model, table, VoteConfig(frames=args.frames, chunks=args.chunks))
        embed_s, embed_cpu = time.perf_counter() - t0, time.process_time() - c0
        for pool in args.pool:
            for k in args.top_k:
                cfg = VoteConfig(top_k=k, pool=pool, frames=args.frames, chunks=args.chunks)
                check_votable(table, cfg)
                t1, c1 = time.perf_counter(), time.process_time()
                result = decide(vote_ranks(z, cfg), cfg)
                vote_s, vote_cpu = time.perf_counter() - t1, time.process_time() - c1
                ap = average_precision(result.agreement, truth)
                ap_inst = average_precision(result.instruction_agreement, truth)
                for th in args.thresholds:
                    flagged = result.agreement < th
                    p, r = precision_recall(flagged, truth)
                    lines.append(
                        f"| {name} | {pool} | {k} | {th:g} | {int(flagged.sum())} | {p:.2f} | {r:.2f} | "
                        f"{ap:.2f} | {ap_inst:.2f} |"
                    )
                worst = np.argsort(result.instruction_agreement)[: int(truth.sum())]
                p_at = float(truth[worst].mean()) if len(worst) else 0.0
                print(
                    f"{name} pool={pool} top-k={k}: precision of the {len(worst)} lowest instruction agreements "
                    f"{p_at:.2f}; vote {vote_s:.2f} s wall / {vote_cpu:.2f} s CPU"
                )
        print(f"{name}: embedding {table.num_episodes} episodes took {embed_s:.1f} s wall / {embed_cpu:.1f} s CPU")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corrupt", help="write a noisy copy of a clean dataset and its ground truth")
    c.add_argument("--data", type=Path, required=True, help="the clean dataset")
    c.add_argument("--out", type=Path, required=True, help="the noisy copy to write")
    c.add_argument("--rate", type=float, default=0.1, help="fraction of training episodes corrupted")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--overwrite", action="store_true")
    m = sub.add_parser("measure", help="vote with a run trained on the noisy copy; precision / recall")
    m.add_argument("--noisy", type=Path, required=True)
    m.add_argument("--run", type=Path, required=True)
    m.add_argument("--checkpoints", nargs="+", default=["final"], help="final and/or kept step-NNNNNN names")
    m.add_argument("--pool", nargs="+", default=["mean", "max"], choices=["mean", "max"])
    m.add_argument("--top-k", nargs="+", type=int, default=[1, 3, 5])
    m.add_argument("--thresholds", nargs="+", type=float, default=[-0.05, 0.0, 0.05, 0.1])
    m.add_argument("--frames", type=int, default=8)
    m.add_argument("--chunks", type=int, default=8)
    args = parser.parse_args()
    if args.cmd == "corrupt":
        corrupt(args.data, args.out, args.rate, args.seed, args.overwrite)
    else:
        measure(args)


if __name__ == "__main__":
    main()
