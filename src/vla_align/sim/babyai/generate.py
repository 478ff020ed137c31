"""BabyAI expert demonstrations written as a LeRobotDataset v3.0 (``vla-align data babyai``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...data.episode import ActionSpec, Episode
from ...data.lerobot import write_dataset
from ...data.splits import SPLITS, check_split_counts, split_layout, split_seed
from ...errors import UserError
from .env import BABYAI_ACTIONS, bot_episode, env_id, make_env

ACTION_SPEC = ActionSpec(kind="discrete", num_actions=len(BABYAI_ACTIONS), names=list(BABYAI_ACTIONS))


def generate_babyai(
    out: str | Path,
    levels: list[str],
    episodes: dict[str, int],
    seed: int,
    image_size: int = 56,
    overwrite: bool = False,
) -> Path:
    """Write ``episodes[split]`` bot demonstrations per split (train, then val, then test) to ``out``.

    Episode ``i`` of a split plays ``levels[i % len(levels)]`` with env seed ``split_seed(seed, split, i)``,
    so the dataset is a deterministic function of the arguments. Failed bot episodes are kept with
    ``success=False``.
    """
    if not levels:
        raise UserError("name at least one BabyAI level, e.g. GoToLocal")
    counts = check_split_counts(episodes, seed)
    ids = [env_id(level) for level in levels]
    envs = {level: make_env(level, image_size) for level in dict.fromkeys(ids)}  # one env per level, reused

    def stream() -> Iterator[Episode]:
        for s in SPLITS:
            for i in range(counts[s]):
                yield bot_episode(envs[ids[i % len(ids)]], split_seed(seed, s, i), image_size)

    splits, split_seeds, start = split_layout(seed, counts)
    extra: dict[str, Any] = {
        "source": "babyai",
        "levels": ids,
        "image_size": image_size,
        "seed": seed,
        "split_seeds": split_seeds,
    }
    try:
        return write_dataset(
            out,
            stream(),
            action_spec=ACTION_SPEC,
            fps=1.0,
            splits=splits,
            robot_type="babyai",
            extra=extra,
            overwrite=overwrite,
            total_episodes=start,
            description="babyai demos",
        )
    finally:
        for env in envs.values():
            env.close()
