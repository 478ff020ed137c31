"""Shared bits of the benchmark scripts: the machine's name, timed subprocesses, Markdown tables."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` (echoed), fail on a non-zero exit, return its wall time in seconds."""
    t0 = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def write_table(lines: list[str], out: Path) -> None:
    """Print a Markdown table and write it to ``out/table.md``."""
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")


def train_and_eval(
    preset: str, data: Path, out: Path, steps: int, flags: list[str], episodes: int, env: dict[str, str] | None = None
) -> float:
    """Train ``out`` from scratch (``vla-align train --preset P --data D --train.steps N *flags``), evaluate
    it with ``--episodes`` closed-loop episodes, and return the training wall time in seconds."""
    import shutil
    import sys

    exe = [sys.executable, "-m", "vla_align"]
    shutil.rmtree(out, ignore_errors=True)
    cmd = [*exe, "train", "--preset", preset, "--data", str(data), "--out", str(out), "--train.steps", str(steps)]
    train_s = run_timed([*cmd, *flags], env=env)
    run_timed([*exe, "eval", "--run", str(out), "--episodes", str(episodes)], env=env)
    return train_s
