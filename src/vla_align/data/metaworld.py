"""Meta-World v3 expert demonstrations written as a LeRobotDataset v3.0 (``vla-align data metaworld``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..sim.metaworld import (
    ACTION_SPEC,
    CAMERA,
    CONTROL_FPS,
    STATE_NAMES,
    SUCCESS_EXTRA_STEPS,
    default_max_steps,
    expert_episode,
    make_env,
    resolve_tasks,
)
from .babyai import SPLITS, split_layout, split_seed
from .episode import Episode
from .lerobot import write_dataset
from .metaworld_instructions import instructions_for


def generate_metaworld(
    out: str | Path,
    tasks: str | Iterable[str],
    episodes: dict[str, int],
    seed: int,
    image_size: int = 84,
    max_steps: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``episodes[split]`` scripted-expert demonstrations per task and split to ``out``.

    ``tasks``: v3 task names and/or ``mt10`` / ``mt50`` (see :func:`~vla_align.sim.metaworld.resolve_tasks`).
    Splits come in the order train, val, test; inside a split, all episodes of ``tasks[0]``, then
    ``tasks[1]``, ... (one simulator open at a time). Episode ``i`` of a split (counted across its
    tasks) runs with env seed ``split_seed(seed, split, i)``, the scheme of the BabyAI data, so splits
    never share a layout and the dataset is a deterministic function of the arguments. Its
    instruction is drawn from the task's set by that seed. ``max_steps`` caps every episode (default:
    per task, :func:`~vla_align.sim.metaworld.default_max_steps`). Failed expert episodes are kept
    with ``success=False``.
    """
    names = resolve_tasks(tasks)
    unknown = set(episodes) - set(SPLITS)
    if unknown:
        raise UserError(f"unknown split(s) {', '.join(sorted(unknown))}; use {', '.join(SPLITS)}")
    per_task = {s: int(episodes.get(s, 0)) for s in SPLITS}
    counts = {s: n * len(names) for s, n in per_task.items()}
    for s, n in per_task.items():
        if n < 0:
            raise UserError(f"episodes[{s!r}] must be >= 0 (episodes per task), got {n}")
        if n:
            split_seed(seed, s, counts[s] - 1)  # validates seed and range before any work
    if not any(per_task.values()):
        raise UserError("asked for 0 episodes; give at least one episode per task for some split")
    caps = {t: default_max_steps(t) if max_steps is None else int(max_steps) for t in names}

    def stream() -> Iterator[Episode]:
        for s in SPLITS:
            i = 0
            for task in names:
                if not per_task[s]:
                    continue
                env = make_env(task, image_size=image_size, max_steps=caps[task])
                try:
                    for _ in range(per_task[s]):
                        yield expert_episode(env, split_seed(seed, s, i))
                        i += 1
                finally:
                    env.close()

    splits, split_seeds, start = split_layout(seed, counts)
    extra: dict[str, Any] = {
        "source": "metaworld",
        "tasks": names,
        "episodes_per_task": {s: n for s, n in per_task.items() if n},
        "image_size": image_size,
        "seed": seed,
        "split_seeds": split_seeds,
        "control_fps": CONTROL_FPS,
        "max_steps": caps,
        "success_extra_steps": SUCCESS_EXTRA_STEPS,
        "camera": CAMERA.to_dict(),
        "state_names": list(STATE_NAMES),
        "instruction_sets": {t: instructions_for(t) for t in names},
    }
    return write_dataset(
        out,
        stream(),
        action_spec=ACTION_SPEC,
        fps=CONTROL_FPS,
        splits=splits,
        robot_type="sawyer",
        extra=extra,
        overwrite=overwrite,
        total_episodes=start,
        description="metaworld demos",
    )
