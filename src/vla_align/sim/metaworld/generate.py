"""Meta-World v3 expert demonstrations written as a LeRobotDataset v3.0 (``vla-align data metaworld``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ...data.episode import Episode
from ...data.lerobot import write_dataset
from ...data.splits import SPLITS, check_split_counts, split_layout, split_seed
from ...errors import UserError
from .env import (
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
from .instructions import instructions_for


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

    ``tasks``: v3 task names and/or ``mt10`` / ``mt50`` (see :func:`~vla_align.sim.metaworld.env.resolve_tasks`).
    Splits come in the order train, val, test; inside a split, all episodes of ``tasks[0]``, then
    ``tasks[1]``, ... (one simulator open at a time). Episode ``i`` of a split (counted across its
    tasks) runs with env seed ``split_seed(seed, split, i)``, the scheme of the BabyAI data, so splits
    never share a layout and the dataset is a deterministic function of the arguments. Its
    instruction is drawn from the task's set by that seed. ``max_steps`` caps every episode (default:
    per task, :func:`~vla_align.sim.metaworld.env.default_max_steps`). Failed expert episodes are kept
    with ``success=False``.
    """
    names = resolve_tasks(tasks)
    per_task = check_split_counts(episodes, seed, per=len(names))
    counts = {s: n * len(names) for s, n in per_task.items()}
    if not any(per_task.values()):
        raise UserError("asked for 0 episodes; give at least one episode per task for some split")
    caps = {t: default_max_steps(t) if max_steps is None else int(max_steps) for t in names}

    splits, split_seeds, start = split_layout(seed, counts)
    extra = _description(names, per_task, image_size, seed, split_seeds, caps)
    return write_dataset(
        out,
        _stream(names, per_task, seed, image_size, caps),
        action_spec=ACTION_SPEC,
        fps=CONTROL_FPS,
        splits=splits,
        robot_type="sawyer",
        extra=extra,
        overwrite=overwrite,
        total_episodes=start,
        description="metaworld demos",
    )


def _stream(
    names: list[str], per_task: dict[str, int], seed: int, image_size: int, caps: dict[str, int]
) -> Iterator[Episode]:
    """The demonstrations in dataset order: split by split, task by task (one simulator open at a time)."""
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


def _description(
    names: list[str],
    per_task: dict[str, int],
    image_size: int,
    seed: int,
    split_seeds: dict[str, list[int]],
    caps: dict[str, int],
) -> dict[str, Any]:
    """The ``vla_align`` section of info.json: enough to rebuild every held-out episode without the data."""
    return {
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
