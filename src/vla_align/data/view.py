"""The run's view of a dataset: one split read, then the data steps the run asked for applied to it.

    table = read_view(cfg.data, path, "train")   # what training, evaluation and the report read

* ``data.align`` (a ``vla-align data align`` file): every split is read with each episode's camera
  shifted by its measured offset (the corrected view; the files on disk are untouched), and in the
  training split the samples whose residual offset still exceeds ``data.align_max_ms`` are sampled
  with weight ``data.align_weight`` (0 = dropped). With ``data.align_mode weight`` nothing is shifted:
  episodes whose measured offset exceeds the threshold are only down-weighted.
* ``data.exclude`` (``vla-align data dedup`` / ``data vote`` files): their flagged episodes are left out
  of the training split; validation and test stay as they are, so runs with and without the filter are
  measured on the same held-out episodes.

With neither set, this is exactly ``read_dataset``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError
from . import sidecar
from .lerobot import FrameTable, read_dataset

if TYPE_CHECKING:
    from ..sim.base import DataConfig


def read_view(cfg: DataConfig, path: Path, split: str | None, max_episodes: int | None = None) -> FrameTable:
    """The episodes of ``split`` of the dataset at ``path`` as the run ``cfg`` sees them (see the module)."""
    table = read_dataset(path, split=split, max_episodes=max_episodes, splits=cfg.splits, **cfg.frame_options(path))
    return apply_view(cfg, table, split)


def apply_view(cfg: DataConfig, table: FrameTable, split: str | None) -> FrameTable:
    if cfg.align:
        from .align import apply_alignment

        doc = sidecar.load(align_file(cfg, table.root), "align", table.root)
        table = apply_alignment(
            table, doc, mode=cfg.align_mode, max_ms=cfg.align_max_ms, weight=cfg.align_weight, weigh=split == "train"
        )
    if cfg.exclude and split == "train":
        drop: set[int] = set()
        for name in cfg.exclude:
            path = Path(name)
            kind = sidecar.kind_of(path)
            if kind == "align":
                raise DatasetError(f"{path}: an align file; pass it as --data.align, data.exclude takes dedup / vote")
            drop |= sidecar.flagged_ids(sidecar.load(path, kind, table.root))
        keep = ~np.isin(table.episode_ids, sorted(drop))
        if not keep.any():
            raise DatasetError(
                f"data.exclude ({', '.join(cfg.exclude)}) flags every one of the {table.num_episodes} training "
                f"episodes of {table.root}; nothing is left to train on"
            )
        table = take_episodes(table, np.nonzero(keep)[0])
    return table


def align_file(cfg: DataConfig, root: Path) -> Path:
    """The alignment file ``data.align`` names (``auto``: ``<DIR>.align.json`` beside the dataset)."""
    return sidecar.default_path(root, "align") if cfg.align == "auto" else Path(cfg.align)


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
