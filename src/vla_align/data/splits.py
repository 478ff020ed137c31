"""Env-seed layout of generated datasets: which env seed plays episode ``i`` of a split.

Every simulator's generator uses the same scheme, so splits (and dataset seeds) never share an env
seed and a dataset is a deterministic function of its description: the held-out episodes of a run
can be rebuilt from the ``vla_align`` section of ``meta/info.json`` alone.
"""

from __future__ import annotations

from ..errors import UserError

SPLITS = ("train", "val", "test")
SEED_STRIDE = 10_000_000  # env seeds of dataset seed s live in [s * SEED_STRIDE, (s + 1) * SEED_STRIDE)
SPLIT_OFFSETS = {"train": 0, "val": 8_000_000, "test": 9_000_000}
SPLIT_SIZES = {"train": 8_000_000, "val": 1_000_000, "test": 1_000_000}


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


def check_split_counts(episodes: dict[str, int], seed: int, per: int = 1) -> dict[str, int]:
    """``episodes`` as counts for every split (missing = 0), validated: known split names, counts >= 0,
    and ``count * per`` episodes fit the split's seed range (``per``: tasks sharing the split)."""
    unknown = set(episodes) - set(SPLITS)
    if unknown:
        raise UserError(f"unknown split(s) {', '.join(sorted(unknown))}; use {', '.join(SPLITS)}")
    counts = {s: int(episodes.get(s, 0)) for s in SPLITS}
    for s, n in counts.items():
        if n < 0:
            raise UserError(f"episodes[{s!r}] must be >= 0, got {n}")
        if n:
            split_seed(seed, s, n * per - 1)  # validates seed and range before any work
    return counts
