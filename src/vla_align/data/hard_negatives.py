"""Semantic hard negatives mixed into each training batch (chapter 5.7).

A fraction F of a batch's rows are not drawn at random but as the hard neighbours of the other rows of
the same batch (the anchors): samples whose instruction is close to the anchor's yet different, so that
InfoNCE must tell "go to the red ball" from "go to the blue ball" inside one softmax. Kinds:

* ``attribute``: the instructions differ in exactly one word, not the first (a colour or object swap,
  same verb): "go to the red ball" vs "go to the blue ball" / "go to the red key";
* ``verb``: the same first word (the verb), a different instruction;
* ``scene``: the same scene, another instruction: an episode with the same environment task and
  episode seed as the anchor's (only where the data records seeds and several instructions per scene).

Words are compared lower-cased with punctuation and the articles a / an / the removed, so instructions
equal up to an article ("go to a red ball" / "go to the red ball") are never neighbours. The relation
is mined once, from the instructions, task indices, env tasks and seeds of the training split; a hard
row is drawn by picking an anchor uniformly, then a kind uniformly among those the anchor has
neighbours of, then a neighbour (instruction group, or for ``scene`` episode) uniformly, then one of its
rows uniformly (in proportion to ``row_weight`` when the data view set one). A hard row never has its
anchor's instruction, so the multi-positive mask, built from the rows' instruction groups, holds as is.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from .lerobot import FrameTable

KINDS = ("attribute", "verb", "scene")
ARTICLES = frozenset({"a", "an", "the"})


@dataclass
class HardNegativeConfig:
    fraction: float = 0.0  # share of each batch's rows drawn as hard neighbours of the other rows (0 = off)
    kinds: tuple[str, ...] = KINDS  # attribute (one word swapped), verb (same first word), scene (same env seed)

    def __post_init__(self) -> None:
        f = self.fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0.0 <= f < 1.0:
            raise ConfigError(
                f"data.hard_negatives.fraction must be a number in [0, 1) (a share of the batch; the rest are "
                f"the anchors), got {f!r} (flag --data.hard-negatives.fraction)"
            )
        self.kinds = tuple(self.kinds)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ConfigError(
                f"data.hard_negatives.kinds {list(self.kinds)}: name each kind once, from {', '.join(KINDS)} "
                "(flag --data.hard-negatives.kinds)"
            )

    @property
    def enabled(self) -> bool:
        return self.fraction > 0

    def rows(self, batch_size: int) -> int:
        """How many rows of a batch are hard negatives (at least one anchor is left)."""
        return min(round(self.fraction * batch_size), batch_size - 1)


def content_words(instruction: str) -> tuple[str, ...]:
    """The instruction's words, lower-cased, without punctuation and articles."""
    return tuple(w for w in re.findall(r"[\w'-]+", instruction.lower()) if w not in ARTICLES)


def attribute_neighbours(words: dict[int, tuple[str, ...]]) -> dict[int, set[int]]:
    """Groups whose content words differ in exactly one position after the first (hashing each group under
    every one-word wildcard of its words, so this is linear in the number of groups)."""
    buckets: dict[tuple[int, tuple[str, ...]], list[int]] = defaultdict(list)
    for g, w in words.items():
        for p in range(1, len(w)):
            buckets[(p, (*w[:p], "*", *w[p + 1 :]))].append(g)
    out: dict[int, set[int]] = defaultdict(set)
    for members in buckets.values():
        for g in members:
            out[g].update(h for h in members if words[h] != words[g])
    return out


def verb_neighbours(words: dict[int, tuple[str, ...]]) -> dict[int, set[int]]:
    """Groups with the same first word and different content words."""
    by_verb: dict[str, list[int]] = defaultdict(list)
    for g, w in words.items():
        if w:
            by_verb[w[0]].append(g)
    out: dict[int, set[int]] = defaultdict(set)
    for members in by_verb.values():
        for g in members:
            out[g].update(h for h in members if words[h] != words[g])
    return out


class HardNegatives:
    """The neighbour relation of a training split, and the draw of hard rows for a batch's anchors.

    ``pools`` are row sets (an instruction group's rows, or one episode's rows for ``scene``);
    ``neighbours[k][e]`` holds the ids of the pools of the k-th configured kind that episode e's rows may
    draw from; ``pairs`` counts the (anchor, neighbour) pairs of each kind.
    """

    def __init__(self, table: FrameTable, kinds: tuple[str, ...], row_weight: np.ndarray | None = None) -> None:
        self.kinds = tuple(kinds)
        self.weight = None if row_weight is None else np.asarray(row_weight, np.float64)
        starts, lengths = table.episode_start.tolist(), table.episode_length.tolist()
        self.episode_rows = [np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)]
        self.row_episode = np.repeat(np.arange(len(starts)), lengths)  # (F,)
        self.pools: list[np.ndarray] = []  # rows of each pool
        self.cumulative: list[np.ndarray | None] = []  # their running weight (None = uniform)
        self.group_of = np.asarray(table.task_index, np.int64)  # (E,)
        members: dict[int, list[int]] = defaultdict(list)
        for e, g in enumerate(self.group_of.tolist()):
            members[g].append(e)
        self.words = {g: content_words(table.instructions[es[0]]) for g, es in members.items()}
        self.group_pool = {
            g: self._pool(np.concatenate([self.episode_rows[e] for e in es])) for g, es in members.items()
        }
        self.pairs: dict[str, int] = {}
        self.neighbours = [self._mine(kind, table) for kind in self.kinds]
        self.has_any = np.zeros(len(starts), dtype=bool)  # (E,) episodes with a neighbour of some kind
        for per_episode in self.neighbours:
            self.has_any |= np.array([len(p) > 0 for p in per_episode], dtype=bool)

    def _pool(self, rows: np.ndarray) -> int | None:
        """Register a pool of rows; None when it has none the sampler may draw (all of weight 0)."""
        cum = None if self.weight is None else np.cumsum(self.weight[rows])
        if len(rows) == 0 or (cum is not None and cum[-1] <= 0):
            return None
        self.pools.append(rows)
        self.cumulative.append(cum)
        return len(self.pools) - 1

    def _mine(self, kind: str, table: FrameTable) -> list[np.ndarray]:
        """Per episode, the pool ids of its neighbours of ``kind``."""
        empty = np.zeros(0, np.int64)
        if kind in ("attribute", "verb"):
            relation = attribute_neighbours(self.words) if kind == "attribute" else verb_neighbours(self.words)
            by_group = {
                g: np.array(sorted(p for h in hs if (p := self.group_pool[h]) is not None), np.int64)
                for g, hs in relation.items()
            }
            self.pairs[kind] = sum(len(v) for v in by_group.values())
            return [by_group.get(g, empty) for g in self.group_of.tolist()]
        scenes: dict[tuple[str, int], list[int]] = defaultdict(list)  # scene: the same (env task, seed)
        for e, seed in enumerate(np.asarray(table.seeds).tolist()):
            if seed >= 0:
                scenes[(table.env_tasks[e], int(seed))].append(e)
        per_episode = [empty] * len(self.group_of)
        episode_pool: dict[int, int | None] = {}
        for es in scenes.values():
            for e in es:
                mine = self.words[int(self.group_of[e])]
                others = [o for o in es if self.words[int(self.group_of[o])] != mine]
                for o in others:
                    if o not in episode_pool:
                        episode_pool[o] = self._pool(self.episode_rows[o])
                per_episode[e] = np.array([p for o in others if (p := episode_pool[o]) is not None], np.int64)
        self.pairs[kind] = sum(len(p) for p in per_episode)
        return per_episode

    def __bool__(self) -> bool:
        return bool(self.has_any.any())

    def describe(self) -> str:
        """The neighbour pairs found per kind, e.g. ``attribute 120, verb 306``."""
        return ", ".join(f"{k} {self.pairs[k]}" for k in self.kinds)

    def draw(self, rng: np.random.Generator, anchors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` hard rows for the batch rows ``anchors``: (rows, the position in ``anchors`` of each one's
        anchor, the ``KINDS`` index of its kind); empty when no anchor has a neighbour."""
        able = np.flatnonzero(self.has_any[self.row_episode[anchors]])  # positions of anchors with neighbours
        u = rng.random((n, 4))  # anchor, kind, neighbour, row: four uniforms per hard row
        if len(able) == 0:
            none = np.zeros(0, np.int64)
            return none, none, none
        rows, where, kinds = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        for i in range(n):
            pos = int(able[int(u[i, 0] * len(able))])
            episode = int(self.row_episode[anchors[pos]])
            options = [k for k in range(len(self.kinds)) if len(self.neighbours[k][episode])]
            k = options[int(u[i, 1] * len(options))]
            pools = self.neighbours[k][episode]
            pool = int(pools[int(u[i, 2] * len(pools))])
            cum, members = self.cumulative[pool], self.pools[pool]
            if cum is None:
                rows[i] = members[int(u[i, 3] * len(members))]
            else:
                rows[i] = members[min(int(np.searchsorted(cum, u[i, 3] * cum[-1], side="right")), len(members) - 1)]
            where[i], kinds[i] = pos, KINDS.index(self.kinds[k])
        return rows, where, kinds


def mine(table: FrameTable, cfg: HardNegativeConfig, row_weight: np.ndarray | None = None) -> HardNegatives | None:
    """The split's neighbour relation, or None (with one warning line) when it has no neighbour pair."""
    hard = HardNegatives(table, cfg.kinds, row_weight)
    if not hard:
        warnings.warn(
            f"data.hard_negatives: {table.root} has no neighbour pair of kinds {', '.join(cfg.kinds)} "
            "(no two instructions one word apart, with the same verb, or sharing a scene); sampling plainly",
            stacklevel=2,
        )
        return None
    return hard
