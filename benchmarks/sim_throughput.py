"""Closed-loop evaluation speed: vectorised rollouts vs a plain single-process loop, same episodes.

    .venv/bin/python benchmarks/sim_throughput.py --run runs/babyai [--episodes 500]

Runs the same held-out episodes (the run's test split, ``episode_specs`` seed 0) with the run's
policy three ways and prints episodes/s side by side, with the ratio to the plain loop:

* ``loop``: one environment at a time, one policy call per step (what a first script does);
* ``lock-step``: ``envs`` environments in one process, one batched policy call per step;
* ``lock-step x workers``: the same pool split over ``workers`` spawned processes.

Every way must reach the same success rate (the policy is greedy and the seeds are the same);
the script checks it. Absolute numbers depend on the machine, which is printed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from common import cpu_name

from vla_align.data.lerobot import read_dataset
from vla_align.runs import load_model
from vla_align.sim import EvalContext, evaluate_closed_loop, get_simulator
from vla_align.sim.base import SimConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    model, cfg = load_model(args.run)
    table = read_dataset(cfg.data.resolved_path(), split="test")
    ways = [
        ("loop (1 env, 1 process)", SimConfig(episodes=args.episodes, envs=1, ablations=False)),
        (
            f"lock-step ({args.envs} envs, 1 process)",
            SimConfig(episodes=args.episodes, envs=args.envs, ablations=False),
        ),
        (
            f"lock-step ({args.envs} envs over {args.workers} processes)",
            SimConfig(
                episodes=args.episodes, envs=max(1, args.envs // args.workers), ablations=False, workers=args.workers
            ),
        ),
    ]
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"run: {args.run}  episodes: {args.episodes} ({table.root}, test split)\n")
    print("| way | seconds | episodes/s | vs loop | success |")
    print("|---|---:|---:|---:|---:|")
    base = None
    success = None
    for name, sim in ways:
        t0 = time.perf_counter()
        metrics = evaluate_closed_loop(
            get_simulator("babyai"), model, EvalContext.from_table(table, "test"), sim, False
        )
        seconds = time.perf_counter() - t0
        rate = args.episodes / seconds
        base = base or rate
        if success is None:
            success = metrics["sim/success_rate"]
        elif metrics["sim/success_rate"] != success:
            raise SystemExit(f"{name}: success {metrics['sim/success_rate']} differs from the loop's {success}")
        print(f"| {name} | {seconds:.1f} | {rate:.1f} | {rate / base:.2f}x | {metrics['sim/success_rate']:.3f} |")


if __name__ == "__main__":
    main()
