"""BabyAI expert demonstrations written as a LeRobotDataset v3.0 (``vla-align data babyai``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..sim.babyai import BABYAI_ACTIONS, bot_episode, env_id, make_env
from .episode import ActionSpec, Episode
from .lerobot import write_dataset

SPLITS = ("train", "val", "test")
SEED_STRIDE = 10_000_000  # env seeds of dataset seed s live in [s * SEED_STRIDE, (s + 1) * SEED_STRIDE)
SPLIT_OFFSETS = {"train": 0, "val": 8_000_000, "test": 9_000_000}
SPLIT_SIZES = {"train": 8_000_000, "val": 1_000_000, "test": 1_000_000}
ACTION_SPEC = ActionSpec(kind="discrete", num_actions=len(BABYAI_ACTIONS), names=list(BABYAI_ACTIONS))


def split_seed(seed: int, split: str, i: int) -> int:
    """The env seed of episode ``i`` of ``split``; splits (and dataset seeds) never share env seeds."""
    if split not in SPLIT_OFFSETS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    if not 0 <= i < SPLIT_SIZES[split]:
        raise UserError(f"split {split!r} holds at most {SPLIT_SIZES[split]:,} episodes per seed; asked for #{i}")
    return seed * SEED_STRIDE + SPLIT_OFFSETS[split] + i


def split_layout(seed: int, counts: dict[str, int]) -> tuple[dict[str, tuple[int, int]], dict[str, list[int]], int]:
    """Episode ranges per split (train, then val, then test), the first / last env seed of each
    non-empty split, and the total number of episodes."""
    splits: dict[str, tuple[int, int]] = {}
    split_seeds: dict[str, list[int]] = {}
    start = 0
    for s in SPLITS:
        splits[s] = (start, start + counts[s])
        start += counts[s]
        if counts[s]:
            split_seeds[s] = [split_seed(seed, s, 0), split_seed(seed, s, counts[s] - 1)]
    return splits, split_seeds, start


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
    unknown = set(episodes) - set(SPLITS)
    if unknown:
        raise UserError(f"unknown split(s) {', '.join(sorted(unknown))}; use {', '.join(SPLITS)}")
    counts = {s: int(episodes.get(s, 0)) for s in SPLITS}
    for s, n in counts.items():
        if n < 0:
            raise UserError(f"episodes[{s!r}] must be >= 0, got {n}")
        if n:
            split_seed(seed, s, n - 1)  # validates seed and range before any work
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
