"""Meta-World demonstration speed: rendered frames/s of the whole generate path vs the raw simulator.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/render_throughput.py [--tasks reach push drawer-open window-open]
        [--episodes 5] [--image-size 84] [--out runs/bench-render]

For each task, the same episodes (env seeds 0..episodes-1 of the train split, dataset seed
``--seed``) two ways, in one process:

* ``generate``: ``generate_metaworld`` into a temporary directory, everything included: env and
  GL context set-up, expert, offscreen render at ``--image-size`` px, state, PNG encoding, parquet;
  frames/s = frames written / wall time;
* ``sim``: the same episodes' simulator steps with the expert's actions and no rendering
  (env set-up excluded): the rate the simulator alone allows.

The ratio ``generate / sim`` is what rendering and writing cost. Prints a Markdown table (and
writes OUT/table.md) with the machine it ran on; the target is >= 70 frames/s at 84 px.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from common import cpu_name, write_table

from vla_align.data.lerobot import read_info
from vla_align.data.splits import split_seed
from vla_align.sim.metaworld.env import make_env, resolve_tasks
from vla_align.sim.metaworld.generate import generate_metaworld


def sim_rate(task: str, seeds: list[int], lengths: list[int]) -> tuple[int, float]:
    """Steps and seconds of the expert's episodes without rendering (same seeds and lengths)."""
    with make_env(task) as env:
        t0 = time.perf_counter()
        steps = 0
        for seed, n in zip(seeds, lengths, strict=True):
            env.reset_sim(seed)
            for _ in range(n):
                env.step_sim(env.expert_action())
            steps += n
        return steps, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["reach", "push", "drawer-open", "window-open"])
    parser.add_argument("--episodes", type=int, default=5, help="episodes per task")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-render"))
    args = parser.parse_args()
    os.environ.setdefault("VLA_ALIGN_QUIET", "1")
    tasks = resolve_tasks(args.tasks)
    seeds = [split_seed(args.seed, "train", i) for i in range(args.episodes)]
    rows = []
    tot_frames = tot_gen = tot_steps = tot_sim = 0.0
    for task in tasks:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            path = generate_metaworld(
                Path(tmp) / "ds", [task], {"train": args.episodes}, seed=args.seed, image_size=args.image_size
            )
            gen_s = time.perf_counter() - t0
            info = read_info(path)
            lengths = _lengths(path)
        frames = int(info["total_frames"])
        steps, sim_s = sim_rate(task, seeds, lengths)
        tot_frames += frames
        tot_gen += gen_s
        tot_steps += steps
        tot_sim += sim_s
        rows.append((task, frames, gen_s, frames / gen_s, steps / sim_s))
    lines = [
        f"Meta-World v3 demonstrations, {args.episodes} expert episodes per task, {args.image_size} px, "
        f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}; machine: {cpu_name()} ({platform.machine()}), "
        f"{os.cpu_count()} CPUs, one process",
        "",
        "| task | frames | generate s | generate frames/s | sim steps/s (no render) | generate / sim |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for task, frames, gen_s, gen_fps, sim_sps in rows:
        lines.append(f"| {task} | {frames} | {gen_s:.1f} | {gen_fps:.1f} | {sim_sps:.0f} | {gen_fps / sim_sps:.3f} |")
    all_gen, all_sim = tot_frames / tot_gen, tot_steps / tot_sim
    lines.append(
        f"| **all** | {int(tot_frames)} | {tot_gen:.1f} | **{all_gen:.1f}** | {all_sim:.0f} | {all_gen / all_sim:.3f} |"
    )
    write_table(lines, args.out)


def _lengths(path: Path) -> list[int]:
    files = sorted((path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    table = pq.read_table(files[0], columns=["episode_index", "length"]).sort_by("episode_index")
    return [int(x) for x in table["length"].to_pylist()]


if __name__ == "__main__":
    main()
