"""A table of some of another's episodes, each possibly cut and with its camera shifted (see :mod:`.view`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .lerobot import FrameTable


def take_episodes(
    table: FrameTable,
    episodes: np.ndarray,
    starts: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
    frame_shift: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> FrameTable:
    """A table of the episodes at positions ``episodes`` of ``table``; each may be cut to ``lengths``
    rows from step ``starts`` (default: whole), with its frames read ``frame_shift`` rows later than its
    actions and state (the camera-offset correction; default 0). ``weights`` (one per kept episode)
    become the sampling weight of every row of that episode."""
    episodes = np.asarray(episodes, dtype=np.int64)
    n = len(episodes)
    starts = np.zeros(n, np.int64) if starts is None else np.asarray(starts, np.int64)
    lengths = table.episode_length[episodes].astype(np.int64) if lengths is None else np.asarray(lengths, np.int64)
    frame_shift = np.zeros(n, np.int64) if frame_shift is None else np.asarray(frame_shift, np.int64)
    base = table.episode_start[episodes] + starts  # first action row of each kept episode
    rows = np.concatenate([b + np.arange(m) for b, m in zip(base, lengths, strict=True)]) if n else np.zeros(0, int)
    shift = np.repeat(frame_shift, lengths)
    new_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if n else np.zeros(0, np.int64)
    row_weight = table.row_weight[rows] if table.row_weight is not None else None
    if weights is not None:
        row_weight = np.repeat(np.asarray(weights, np.float64), lengths) * (1.0 if row_weight is None else row_weight)
    return replace(
        table,
        frames=table.frames[rows + shift],
        actions=table.actions[rows],
        state=None if table.state is None else table.state[rows],
        episode_start=new_start,
        episode_length=lengths,
        episode_ids=table.episode_ids[episodes],
        instructions=[table.instructions[e] for e in episodes],
        task_index=table.task_index[episodes],
        seeds=table.seeds[episodes],
        success=table.success[episodes],
        env_tasks=[table.env_tasks[e] for e in episodes],
        row_weight=row_weight,
    )
