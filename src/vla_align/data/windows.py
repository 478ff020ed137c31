"""Training and evaluation samples from a FrameTable: (frame_t, instruction, actions[t : t+T]).

Chunks that run past the episode end are padded (id 0 / zero vector) and masked.
"""

from __future__ import annotations

import numpy as np
import torch

from ..modalities import Batch
from .hard_negatives import HardNegativeConfig, HardNegatives, mine
from .lerobot import FrameTable


class ChunkSampler:
    """Every frame of every episode is a sample; batches are drawn uniformly with replacement, with
    ``hard_negatives`` a share of each batch drawn as semantic neighbours of its other rows."""

    def __init__(
        self, table: FrameTable, chunk_len: int, history: int = 1, hard_negatives: HardNegativeConfig | None = None
    ) -> None:
        self.table = table
        self.chunk_len = chunk_len
        self.history = history  # previous actions per sample (discrete actions)
        lengths = table.episode_length
        self.row_episode = np.repeat(np.arange(table.num_episodes), lengths)  # (F,) position in table
        offsets = np.arange(table.num_frames) - np.repeat(table.episode_start, lengths)  # (F,) t within episode
        ends = np.repeat(table.episode_start + lengths, lengths)  # (F,) one past the episode's last row
        steps = np.arange(table.num_frames)[:, None] + np.arange(chunk_len)[None, :]  # (F, T)
        self.chunk_mask = steps < ends[:, None]  # (F, T)
        self.chunk_rows = np.where(self.chunk_mask, steps, 0)  # (F, T)
        self.frame_in_episode = offsets
        weight = table.row_weight
        uniform = weight is None or bool(np.all(weight == weight[0]))
        # (F,) running sum of the rows' sampling weights; None = uniform sampling
        self.cumulative: np.ndarray | None = None if uniform else np.cumsum(np.asarray(weight, np.float64))
        self.hard_cfg = hard_negatives if hard_negatives is not None and hard_negatives.enabled else None
        # the split's neighbour relation (data.hard_negatives); None = plain sampling
        self.hard: HardNegatives | None = None
        if self.hard_cfg is not None:
            self.hard = mine(table, self.hard_cfg, None if uniform else weight)

    def __len__(self) -> int:
        return self.table.num_frames

    def batch(self, rows: np.ndarray) -> Batch:
        t = self.table
        ep = self.row_episode[rows]  # (B,)
        mask = self.chunk_mask[rows]  # (B, T)
        action = t.actions[self.chunk_rows[rows]]  # (B, T) or (B, T, A)
        action = np.where(mask if action.ndim == 2 else mask[..., None], action, 0)
        back = np.arange(1, self.history + 1)  # (h,) steps back, most recent first
        if t.actions.ndim == 1:  # discrete: previous action ids, -1 before the episode's first frame
            before = self.frame_in_episode[rows][:, None] >= back[None, :]  # (B, h)
            prev = np.where(before, t.actions[np.maximum(rows[:, None] - back[None, :], 0)], -1).astype(np.int64)
        else:
            prev = np.full((len(rows), self.history), -1, dtype=np.int64)
        return Batch(
            image=torch.from_numpy(t.frames[rows]),
            text=[t.instructions[e] for e in ep],
            action=torch.from_numpy(np.ascontiguousarray(action)),
            action_mask=torch.from_numpy(mask),
            text_group=torch.from_numpy(t.task_index[ep].astype(np.int64)),
            episode=torch.from_numpy(t.episode_ids[ep].astype(np.int64)),
            frame=torch.from_numpy(self.frame_in_episode[rows].astype(np.int64)),
            prev_action=torch.from_numpy(prev),
            state=torch.from_numpy(t.state[rows]) if t.state is not None else torch.empty(0, 0),
        )

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        return self.batch(self.draw(rng, batch_size))

    def draw(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """``batch_size`` rows, uniformly with replacement, or in proportion to ``table.row_weight`` when the
        data view set one (the time-alignment's down-weighting). With hard negatives, the first rows are
        drawn so (the anchors), the last ``hard_negatives.rows(batch_size)`` as their neighbours."""
        if self.hard is None or self.hard_cfg is None:  # the plain path: the rows it always drew
            return self.draw_plain(rng, batch_size)
        return self.draw_with_hard(rng, batch_size)[0]

    def draw_with_hard(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, anchor of each hard row, its kind): the hard rows are the last ``len(anchor)`` of ``rows``
        and ``anchor`` holds positions among the first rows (``hard_negatives.KINDS`` indexes ``kind``)."""
        n_hard = self.hard_cfg.rows(batch_size) if self.hard_cfg is not None and self.hard is not None else 0
        anchors = self.draw_plain(rng, batch_size - n_hard)
        if n_hard == 0 or self.hard is None:
            none = np.zeros(0, np.int64)
            return anchors, none, none
        hard, where, kind = self.hard.draw(rng, anchors, n_hard)
        if len(hard) < n_hard:  # no anchor of this batch has a neighbour: the rest drawn plainly
            hard = np.concatenate([hard, self.draw_plain(rng, n_hard - len(hard))])
        return np.concatenate([anchors, hard]), where, kind

    def draw_plain(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """``batch_size`` rows, uniformly or by ``table.row_weight``, with replacement."""
        cumulative = self.cumulative
        if cumulative is None:
            return rng.integers(0, len(self), size=batch_size)
        rows: np.ndarray = np.searchsorted(cumulative, rng.random(batch_size) * cumulative[-1], side="right")
        return rows

    def one_per_episode(self, seed: int, how: str = "random") -> np.ndarray:
        """One row per episode: a seeded uniformly random frame (``random``) or the first one."""
        t = self.table
        if how == "first":
            return t.episode_start.copy()
        rng = np.random.default_rng(seed)
        result: np.ndarray = t.episode_start + (rng.random(t.num_episodes) * t.episode_length).astype(np.int64)
        return result
