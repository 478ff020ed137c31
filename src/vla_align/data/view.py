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

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError
from . import sidecar
from .lerobot import FrameTable, read_dataset
from .subset import take_episodes

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
