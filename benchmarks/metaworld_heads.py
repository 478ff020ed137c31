"""The three continuous policy heads (regression, binned, flow) on the same Meta-World data and CPU budget.

    MUJOCO_GL=egl .venv/bin/python benchmarks/metaworld_heads.py --data datasets/metaworld-mt10 \
        [--preset metaworld-mt10] [--heads regression,binned,flow] [--minutes 30 | --steps 6000] \
        [--episodes 10] [--threads 2] [--workers 2] [--set KEY=VALUE ...] [--out runs/bench-heads] \
        [--reuse] [--save]

For each head, one `vla-align train --model.policy.head.name HEAD` on the same dataset, preset and
seed, then `vla-align eval --run OUT/HEAD --episodes K` (K closed-loop held-out episodes per task);
both run as subprocesses with OMP_NUM_THREADS = --threads.

Budget rule. ``--minutes M`` (the default, 30) gives every head the same wall-clock budget for its
training loop: a short probe run of the same head (``--probe-steps``, default 30, same flags) is
timed from its own log, over the second half of the probe only (first-step allocation and
start-up excluded), and the head is then trained for ``steps = M * 60 / (seconds per step)``. A
head that costs more per step gets fewer steps. Process start-up, dataset loading and the final
checkpoint are outside the budget; the table shows both the training loop's measured time and the
whole `train` wall time, so the reader can see how close each head came to the budget. ``--steps N``
trains every head for N steps instead (equal data), with the same two times reported. Model
selection on validation is off (``--train.select.every 0``: every head is judged at its last step)
and so is the shuffled-instruction ablation (``--eval.sim.ablations false``); ``--set`` turns them
back on (``--set train.select.every=500``), but then validation is not part of the probe's estimate.

Inference latency per chunk: the trained run is loaded back with ``load_model`` and
``act_chunk(image, texts, state)`` is timed in this process on one thread, for a batch of 1 and a
batch of 10 (random uint8 frames of the run's size, real instructions of the dataset's tasks, zero
proprioception): the median of ``--latency-calls`` calls after 5 warm-up calls, in ms. The flow head
integrates ``model.policy.head.steps`` Euler steps per chunk; the other two heads are one pass.

``--reuse`` keeps a head whose run already has closed-loop results in OUT/HEAD/metrics.json (and
only evaluates a head that was trained but not evaluated); without it every head is retrained from
scratch. Prints two Markdown tables (heads; success per task and head) with the machine, the date
and the exact commands, writes them to OUT/table.md, and with ``--save`` also to
benchmarks/results/metaworld_heads.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import cpu_name, run_timed, write_table

HEADS = ["regression", "binned", "flow"]
RESULTS = Path(__file__).resolve().parent / "results" / "metaworld_heads.md"
WARMUP_CALLS = 5


def shown(cmd: list[str], threads: int) -> str:
    """A command as a reader can paste it (the venv's python shown relative to the working directory)."""
    exe = cmd[0]
    if Path(exe).absolute().is_relative_to(Path.cwd()):
        exe = os.path.relpath(exe)
    return f"OMP_NUM_THREADS={threads} " + shlex.join([exe, *cmd[1:]])


def set_flags(items: list[str]) -> list[str]:
    """``--set a.b_c=V`` -> ``--a.b-c V`` (the flag spelling of `vla-align train`)."""
    out: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
        out += ["--" + key.removeprefix("--").replace("_", "-"), value]
    return out


def seconds_per_step(run_dir: Path) -> float:
    """Training-loop seconds per step from a probe's metrics.jsonl: the logged rate is samples seen
    since the loop started over the time since then, so two log lines give the time between them."""
    batch = json.loads((run_dir / "config.json").read_text())["train"]["batch_size"]
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "samples_per_s" in record:
            points.append((record["step"], record["step"] * batch / record["samples_per_s"]))
    if not points:
        raise SystemExit(f"{run_dir}/metrics.jsonl has no samples_per_s line; cannot time the probe")
    if len(points) == 1:
        return points[0][1] / points[0][0]
    (s1, t1), (s2, t2) = points[-2], points[-1]
    return (t2 - t1) / (s2 - s1)


def loop_seconds(run_dir: Path) -> float:
    """The training loop's own wall time, from the last logged rate (start-up and loading excluded)."""
    try:
        batch = json.loads((run_dir / "config.json").read_text())["train"]["batch_size"]
        last = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        record = [r for r in last if "samples_per_s" in r][-1]
        return record["step"] * batch / record["samples_per_s"]
    except (OSError, IndexError, KeyError):
        return float("nan")


def chunk_latency(run_dir: Path, batches: tuple[int, ...], calls: int) -> dict[int, float]:
    """Median ms of one ``act_chunk`` call per batch size, on the current (single) torch thread."""
    import torch

    from vla_align.runs import load_model, load_run_config
    from vla_align.sim.metaworld.instructions import instruction_for

    model, _ = load_model(run_dir)
    _, extra = load_run_config(run_dir)
    h, w, c = (int(x) for x in extra["dataset"]["image_shape"])
    tasks = list(extra["dataset"]["info"].get("tasks") or ["reach"])
    state_dim = int(extra["dataset"].get("state_dim", 0))
    gen = torch.Generator().manual_seed(0)
    out: dict[int, float] = {}
    for b in batches:
        image = torch.randint(0, 256, (b, h, w, c), dtype=torch.uint8, generator=gen)
        texts = [instruction_for(tasks[i % len(tasks)], i) for i in range(b)]
        state = torch.zeros(b, state_dim) if state_dim else None
        times = []
        for i in range(WARMUP_CALLS + calls):
            t0 = time.perf_counter()
            model.act_chunk(image, texts, state, gen)
            if i >= WARMUP_CALLS:
                times.append(time.perf_counter() - t0)
        out[b] = 1000 * statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--data", type=Path, required=True, help="a Meta-World dataset (vla-align data metaworld)")
    parser.add_argument("--preset", default="metaworld-mt10")
    parser.add_argument("--heads", default=",".join(HEADS), help="comma list of: " + ", ".join(HEADS))
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="training-loop wall-clock budget per head (default 30)")
    budget.add_argument("--steps", type=int, help="train every head for this many steps instead")
    parser.add_argument("--probe-steps", type=int, default=30, help="steps of the timing probe (--minutes)")
    parser.add_argument("--episodes", type=int, default=10, help="closed-loop test episodes per task")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch / OpenMP threads")
    parser.add_argument("--workers", type=int, help="eval processes (--eval.sim.workers; default: the preset's)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra train flag, e.g. train.batch_size=64"
    )
    parser.add_argument("--latency-calls", type=int, default=50, help="timed act_chunk calls per batch size")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-heads"))
    parser.add_argument("--reuse", action="store_true", help="keep heads already trained / evaluated in OUT")
    parser.add_argument("--save", action="store_true", help="also write benchmarks/results/metaworld_heads.md")
    args = parser.parse_args()
    heads = [h for h in args.heads.split(",") if h]
    if unknown := sorted(set(heads) - set(HEADS)):
        raise SystemExit(f"unknown head {unknown[0]!r}; use {', '.join(HEADS)}")
    if args.steps is None and args.minutes is None:
        args.minutes = 30.0
    if args.probe_steps < 4:
        raise SystemExit("--probe-steps must be >= 4 (it is timed over its second half)")
    if not (args.data / "meta" / "info.json").is_file():
        raise SystemExit(f"{args.data}: not a dataset (no meta/info.json); make one with `vla-align data metaworld`")
    info = json.loads((args.data / "meta" / "info.json").read_text()).get("vla_align", {})
    if info.get("source") != "metaworld":
        raise SystemExit(f"{args.data}: not a Meta-World dataset (source {info.get('source')!r})")

    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
        "VLA_ALIGN_QUIET": "1",
    }
    exe = [sys.executable, "-m", "vla_align"]
    common_flags = [
        "--preset",
        args.preset,
        "--data",
        str(args.data),
        "--train.threads",
        str(args.threads),
        "--train.select.every",
        "0",
        "--eval.sim.ablations",
        "false",
        *(["--eval.sim.workers", str(args.workers)] if args.workers else []),
    ]
    extra = set_flags(args.set)

    def train_cmd(head: str, out: Path, steps: int, *more: str) -> list[str]:
        return [
            *exe,
            "train",
            *common_flags,
            "--out",
            str(out),
            "--model.policy.head.name",
            head,
            "--train.steps",
            str(steps),
            *more,
            *extra,  # last: the user's --set wins
        ]

    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for head in heads:
        run_dir = args.out / head
        bench_path = run_dir / "bench.json"
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        if args.reuse and (bench_path.is_file() or "sim/success_rate" in metrics):
            print(f"{head}: reusing the run in {run_dir}", flush=True)
            bench = json.loads(bench_path.read_text()) if bench_path.is_file() else {"commands": []}
            bench["reused"] = True
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            bench = {"commands": [], "reused": False}
            steps = args.steps
            if steps is None:  # time this head's steps, then fit its step count to the budget
                probe = args.out / f"probe-{head}"
                shutil.rmtree(probe, ignore_errors=True)
                half = str(args.probe_steps // 2)
                cmd = train_cmd(head, probe, args.probe_steps, "--train.log-every", half)
                bench["probe_s"] = run_timed(cmd, env=env)
                bench["commands"].append(shown(cmd, args.threads))
                bench["s_per_step"] = seconds_per_step(probe)
                shutil.rmtree(probe)
                steps = max(1, int(args.minutes * 60 / bench["s_per_step"]))
                print(f"{head}: {bench['s_per_step']:.3f} s/step -> {steps} steps in {args.minutes:g} min", flush=True)
            cmd = train_cmd(head, run_dir, steps)
            bench["train_s"] = run_timed(cmd, env=env)
            bench["commands"].append(shown(cmd, args.threads))
            bench["steps"] = steps
            bench_path.write_text(json.dumps(bench, indent=1) + "\n")
        if not (args.reuse and "sim/success_rate" in metrics):
            cmd = [*exe, "eval", "--run", str(run_dir), "--episodes", str(args.episodes)]
            bench["eval_s"] = run_timed(cmd, env=env)
            bench["commands"].append(shown(cmd, args.threads))
            bench_path.write_text(json.dumps(bench, indent=1) + "\n")
            metrics = json.loads(metrics_path.read_text())
        if "steps" not in bench:
            bench["steps"] = json.loads((run_dir / "config.json").read_text())["train"]["steps"]
        bench["loop_s"] = loop_seconds(run_dir)
        rows.append((head, metrics, bench))

    import torch

    torch.set_num_threads(1)
    for head, _, bench in rows:
        bench["latency_ms"] = chunk_latency(args.out / head, (1, 10), args.latency_calls)

    def f(m: dict[str, Any], key: str, digits: int = 3) -> str:
        return f"{m[key]:.{digits}f}" if key in m else "n/a"

    tasks = sorted(
        {k.split("/")[2] for _, m, _ in rows for k in m if k.startswith("sim/by_task/") and k.endswith("/success_rate")}
    )
    suite = "MT10" if len(tasks) == 10 else f"{len(tasks)}-task"
    episodes = sorted({int(m.get("sim/episodes", -1)) for _, m, _ in rows})
    if args.steps is not None:
        rule = f"{args.steps} steps per head (equal steps; the wall times are shown)"
    else:
        rule = (
            f"{args.minutes:g} min of training loop per head (steps = budget / s per step of a "
            f"{args.probe_steps}-step probe of the same head)"
        )
    lines = [
        f"Meta-World, dataset {args.data} ({len(info.get('tasks', []))} tasks, "
        f"{info.get('episodes_per_task', {}).get('train', '?')} training demos per task, "
        f"{info.get('image_size', '?')} px), preset {args.preset}; budget: {rule}; "
        f"{args.episodes} closed-loop test episodes per task ({'/'.join(map(str, episodes))} in all); "
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {args.threads} threads; "
        f"python {platform.python_version()}, torch {torch.__version__}; {datetime.date.today().isoformat()}",
        "",
        f"| head | steps | {suite} mean success | ADE | FDE | DTW | violation rate | RMS jerk "
        "| train loop s | train wall s | latency ms (B=1) | latency ms (B=10) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for head, m, bench in rows:
        lat = bench["latency_ms"]
        lines.append(
            f"| {head} | {bench['steps']} | {f(m, 'sim/success_rate')} | {f(m, 'traj/ade', 4)} "
            f"| {f(m, 'traj/fde', 4)} | {f(m, 'traj/dtw', 4)} | {f(m, 'sim/violation_rate')} "
            f"| {f(m, 'sim/comfort_rms_jerk', 2)} | {bench['loop_s']:.1f} | {bench.get('train_s', float('nan')):.1f} "
            f"| {lat[1]:.1f} | {lat[10]:.1f} |"
        )
    lines += [
        "",
        "Success per task:",
        "",
        "| task | " + " | ".join(h for h, _, _ in rows) + " |",
        "|---|" + "---:|" * len(rows),
    ]
    for task in tasks:
        cells = [f(m, f"sim/by_task/{task}/success_rate", 2) for _, m, _ in rows]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines.append(f"| **{suite} mean** | " + " | ".join(f(m, "sim/success_rate", 3) for _, m, _ in rows) + " |")
    lines += [
        "",
        f"ADE / FDE / DTW: offline, on the held-out split's expert chunks, in action units. Violation rate and "
        f"RMS jerk: of the commanded actions in closed loop. Latency: median of {args.latency_calls} "
        f"`act_chunk` calls after {WARMUP_CALLS} warm-up calls, one thread, this process.",
        "",
        *(
            [
                f"Reused from an earlier invocation (budget as it was then): {', '.join(h for h, _, b in rows if b['reused'])}.",
                "",
            ]
            if any(b["reused"] for _, _, b in rows)
            else []
        ),
        "Command: `" + shlex.join(["python", "benchmarks/metaworld_heads.py", *sys.argv[1:]]) + "`",
        "",
        "```",
        *(c for _, _, bench in rows for c in bench["commands"] or ["(reused run; commands not recorded)"]),
        "```",
    ]
    write_table(lines, args.out)
    if args.save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(lines) + "\n")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
