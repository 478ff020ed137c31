"""Shared bits of the benchmark scripts: the machine's name, timed subprocesses, Markdown tables, and the
training step on an in-memory table (the same ``TrainingStep`` that ``vla-align train`` runs)."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vla_align.data.episode import ActionSpec
    from vla_align.data.lerobot import FrameTable
    from vla_align.model import TriModalModel
    from vla_align.presets import RunConfig
    from vla_align.step import StepBatch, TrainingStep


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


INSTRUCTIONS = [
    f"go to the {c} {o}" for c in ("red", "green", "blue", "grey", "purple", "yellow") for o in ("ball", "box", "key")
]


def synthetic_table(
    spec: ActionSpec,
    image_size: int,
    episodes: int = 64,
    length: int = 8,
    seed: int = 0,
    instructions: list[str] | None = None,
) -> FrameTable:
    """An in-memory training split of random frames, BabyAI-like instructions and random actions (for timing,
    not learning): what the training step reads, without a dataset on disk."""
    import numpy as np

    from vla_align.data.lerobot import FrameTable

    rng = np.random.default_rng(seed)
    n = episodes * length
    if spec.kind == "discrete":
        actions = rng.integers(0, spec.num_actions, size=n)
    else:
        actions = rng.normal(size=(n, spec.dim)).astype(np.float32)
    texts = list(instructions or INSTRUCTIONS)
    task = np.arange(episodes) % len(texts)
    return FrameTable(
        root=Path("<synthetic>"),
        frames=rng.integers(0, 256, size=(n, image_size, image_size, 3), dtype=np.uint8),
        actions=actions,
        state=None,
        episode_start=np.arange(episodes) * length,
        episode_length=np.full(episodes, length),
        episode_ids=np.arange(episodes),
        instructions=[texts[t] for t in task],
        task_index=task,
        tasks=texts,
        seeds=np.arange(episodes),
        success=np.ones(episodes, dtype=bool),
        env_tasks=[""] * episodes,
        fps=10.0,
        action_spec=spec,
        info={"vla_align": {"action_spec": spec.to_dict()}},
    )


def training_step(cfg: RunConfig, model: TriModalModel, table: FrameTable, step: int) -> tuple[TrainingStep, StepBatch]:
    """The run's training step as ``vla-align train`` builds it for ``model`` (normalisers and text encoder
    fitted on ``table``) and batch ``step`` of ``table``, augmented as in training."""
    from vla_align.data.windows import ChunkSampler
    from vla_align.step import TrainingStep

    model.fit_normalizers(table.actions, table.state)
    model.text_encoder.fit(table.instructions)
    unit = TrainingStep(cfg, model, table)
    sampler = ChunkSampler(table, cfg.model.action.chunk_len, cfg.model.policy.history)
    return unit, unit.prepare_batch(sampler, step)
