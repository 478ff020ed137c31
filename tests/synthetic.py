"""Synthetic, learnable tri-modal episodes in pure numpy (tests only; instant, deterministic).

Each episode shows a coloured square at a position on a dark frame; the instruction names the
colour and the actions walk towards the square, so image, text and action all carry the label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_align.data.episode import ActionSpec, Episode
from vla_align.data.lerobot import write_dataset

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
DISCRETE = ActionSpec(kind="discrete", num_actions=4, names=["left", "right", "up", "down"])
CONTINUOUS = ActionSpec(kind="continuous", dim=2, names=["dx", "dy"])


def episode(seed: int, size: int = 28, continuous: bool = False, lengths: tuple[int, int] = (3, 10)) -> Episode:
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    colour = names[seed % len(names)]
    length = int(rng.integers(*lengths))
    frames = np.zeros((length, size, size, 3), dtype=np.uint8)
    x, y = rng.integers(0, size - 6, size=2)
    for t in range(length):
        frames[t, y : y + 6, x : x + 6] = COLOURS[colour]
        frames[t] += rng.integers(0, 20, size=(size, size, 3), dtype=np.uint8)
    label = names.index(colour)
    if continuous:
        actions = np.tile(np.array([[np.cos(label), np.sin(label)]], dtype=np.float32), (length, 1))
        actions += rng.normal(0, 0.05, size=actions.shape).astype(np.float32)
        state = rng.normal(size=(length, 3)).astype(np.float32)
    else:
        actions = np.full(length, label, dtype=np.int64)
        state = None
    return Episode(
        frames=frames,
        actions=actions,
        instruction=f"go to the {colour} square",
        task="Synthetic-v0",
        fps=10.0,
        seed=seed,
        success=True,
        state=state,
    )


def write_synthetic(
    path: Path,
    n_train: int = 24,
    n_val: int = 8,
    n_test: int = 12,
    continuous: bool = False,
    size: int = 28,
    lengths: tuple[int, int] = (3, 10),
) -> Path:
    counts = {"train": n_train, "val": n_val, "test": n_test}
    splits, start = {}, 0
    for name, n in counts.items():
        splits[name] = (start, start + n)
        start += n
    episodes = (episode(i, size, continuous, lengths) for i in range(start))
    return write_dataset(
        path,
        episodes,
        action_spec=CONTINUOUS if continuous else DISCRETE,
        fps=10.0,
        splits=splits,
        robot_type="synthetic",
        extra={"source": "synthetic", "levels": ["Synthetic-v0"], "image_size": size, "seed": 0},
        total_episodes=start,
    )
