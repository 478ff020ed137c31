"""Mutual-vote filtering (`vla-align data vote`, chapter 5.7) against known instruction faults.

1. a noisy copy of a clean dataset in which 10 % of the TRAINING episodes get the instruction of
   another episode whose instruction differs (the truth goes to NOISY/meta/vla_align/faults.json):

    .venv/bin/vla-align data inject datasets/goto3k --out datasets/goto3k-noisy --wrong-instruction 0.1

2. a run trained on the noisy copy, keeping checkpoints (so early ones can vote):

    .venv/bin/vla-align train --preset babyai-quick --data datasets/goto3k-noisy --out runs/noisy \
        --train.keep-checkpoints 4 --train.checkpoint-every 250

3. this script: vote with the run (its final weights and the kept checkpoints named) and print, per
   checkpoint / pooling / top-k, precision and recall of the flagged training episodes against the truth
   at several thresholds, the average precision of the agreement score (lower = more suspect), and the
   wall time and CPU seconds of embedding and voting:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vote_faults.py --noisy datasets/goto3k-noisy \
        --run runs/noisy --checkpoints final step-000500 --top-k 1 3 5 --pool mean max

The score of the instruction check alone (``instruction_agreement``) is reported beside the episode's
overall ``agreement``, since the injected faults are instruction faults.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vla_align.data.inject import read_truth  # noqa: E402
from vla_align.data.lerobot import read_dataset  # noqa: E402
from vla_align.vote import VoteConfig, check_votable, decide, embed_episodes, vote_ranks  # noqa: E402


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

    truth_doc = read_truth(args.noisy)
    table = read_dataset(args.noisy, split="train")
    bad = {int(i) for i in truth_doc.get("wrong_instruction", {})}
    truth = np.isin(table.episode_ids, sorted(bad))
    print(
        f"machine: {platform.node()} {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(
        f"dataset: {args.noisy} train split, {table.num_episodes} episodes, {int(truth.sum())} corrupted "
        f"({truth_doc['params']['wrong_instruction']:.0%} of training, seed {truth_doc['seed']}); run {args.run}"
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
    parser.add_argument("--noisy", type=Path, required=True, help="a dataset written by `vla-align data inject`")
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--checkpoints", nargs="+", default=["final"], help="final and/or kept step-NNNNNN names")
    parser.add_argument("--pool", nargs="+", default=["mean", "max"], choices=["mean", "max"])
    parser.add_argument("--top-k", nargs="+", type=int, default=[1, 3, 5])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[-0.05, 0.0, 0.05, 0.1])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=8)
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
