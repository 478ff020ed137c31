"""`vla-align data dedup DIR`: near-identical episodes (chapter 5.7), found from frames, instruction and
actions together, written to ``<DIR>.dedup.json`` beside the dataset (see :mod:`vla_align.data.sidecar`).

Two stages, both vectorised over episodes that share an instruction (normalised: lower case, single
spaces, no trailing punctuation) and whose lengths differ by at most ``length_tol``:

1. **Screen.** Each episode becomes a descriptor: ``frames`` frames at evenly spaced times box-averaged
   to ``grid`` x ``grid`` colour thumbnails (grey levels) and its actions at ``action_points`` evenly
   spaced times (continuous: in units of each dimension's standard deviation over the dataset; discrete:
   one-hot). The screening distance is scale-free::

       screen(i, j) = sqrt(((rms_frames / s_frames)^2 + (rms_actions / s_actions)^2) / 2)

   with ``s_*`` the median RMS difference between episodes of one instruction (all pairs when no
   instruction repeats; at least ``SCALE_FLOOR`` times the check's tolerance below, so that copies pass
   the screen in a dataset whose episodes all look alike): about 1 for two different demonstrations, near
   0 for copies. Pairs under ``SCREEN`` go to the check; each episode's nearest screened neighbour is
   recorded (``nearest`` in the file).
2. **Check.** A candidate pair is a copy when both hold: the frames, compared as coarse ``CHECK_GRID`` x
   ``CHECK_GRID`` thumbnails of the image interior and allowing a shift of up to ``MAX_SHIFT`` pixels,
   differ nowhere by more than ``frame_tol`` grey levels (the largest cell difference: re-rendering noise
   is averaged away inside a cell, an object elsewhere is not); and the actions differ by at most
   ``action_tol`` (continuous: RMS in standard deviations; discrete: the fraction of differing steps).
   The pair's distance is ``max(frame / frame_tol, action / action_tol)``: at most 1 for a copy.

   Why 12 grey levels (``benchmarks/dedup_faults.py`` on 2,600 BabyAI GoToLocal episodes, 56 px, with 5 %
   exact and 5 % re-rendered copies, sigma 3, 1 px shift): copies measured at most 2.4; the closest
   different demonstrations of one instruction, often with identical action sequences, at least 31.

Copies are joined (union-find) into clusters. Each cluster keeps one episode, the one in the most
held-out split (test, then test_ood, then val, then train), then the lowest index; the others are
``flagged`` as its duplicates, so ``--data.exclude`` and ``data split --exclude`` can leave them out.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from . import sidecar
from .info_checks import parse_splits, select_cameras
from .lerobot import FrameTable, read_dataset, read_info
from .split_file import check_split_file, load_split_file, resolve_split_file

KIND = "dedup"
HELD_OUT_ORDER = ("test", "test_ood", "val", "train")  # which copy a cluster keeps: the most held-out first
SAMPLE_PAIRS = 50_000  # at most this many same-instruction pairs set the screening scales
ROW_CHUNK = 512  # rows of a block's screening distance matrix computed at once
SCREEN = 0.35  # screening distance under which a pair is checked (copies measured at <= 0.15)
SCALE_FLOOR = 4.0  # screening scales are at least this many times the check's tolerances
CHECK_GRID = 8  # thumbnail side of the check
MAX_SHIFT = 2  # pixels of camera shift the check allows
READ_SIZE = 64  # frames larger than this are box-resampled to it while reading (memory)


@dataclass(frozen=True)
class DedupParams:
    """How episodes are described and compared (see the module docstring)."""

    frame_tol: float = 12.0  # grey levels: largest thumbnail-cell difference of a copy
    action_tol: float = 0.1  # continuous: RMS in std units; discrete: fraction of differing steps
    length_tol: float = 0.1  # compare episodes whose lengths differ by at most this fraction (and 1 frame)
    frames: int = 8  # frames per episode in the descriptor
    grid: int = 12  # screening thumbnail side
    action_points: int = 32  # actions per episode in the descriptor
    seed: int = 0  # which pairs set the scales when there are more than SAMPLE_PAIRS

    def __post_init__(self) -> None:
        if not 0.0 <= self.frame_tol <= 255.0:
            raise UserError(f"--frame-tol {self.frame_tol}: grey levels in [0, 255], e.g. 12")
        if not 0.0 <= self.action_tol < 1.0:
            raise UserError(f"--action-tol {self.action_tol}: in [0, 1), e.g. 0.1")
        if not 0.0 <= self.length_tol < 1.0:
            raise UserError(f"--length-tol {self.length_tol}: a fraction of the episode length in [0, 1), e.g. 0.1")
        for name, value in (("frames", self.frames), ("grid", self.grid), ("action_points", self.action_points)):
            if value < 1:
                raise UserError(f"{name} {value}: must be at least 1")


@dataclass
class Descriptors:
    """Per episode (E of them): what the comparison sees."""

    texts: list[str]  # (E,) normalised instructions
    lengths: np.ndarray  # (E,) int64
    frames: np.ndarray  # (E, Df) float32, grey levels
    actions: np.ndarray  # (E, Da) float32, std units (continuous) or one-hot / sqrt(2) (discrete)
    action_dims: int  # values per time point of ``actions`` that an RMS averages over (1 when discrete)
    images: np.ndarray  # (F, H, W, C) uint8: every frame read (not copied), for the check
    shown: np.ndarray  # (E, Kf) int64 rows of ``images`` sampled per episode


@dataclass
class DedupResult:
    """What :func:`find_duplicates` found, per episode position of the table."""

    episode_ids: np.ndarray  # (E,) int64
    keeper: np.ndarray  # (E,) int64 position of the episode each one is a copy of (itself when kept)
    nearest: np.ndarray  # (E,) float64 screening distance to the nearest compared episode (inf: none)
    nearest_pos: np.ndarray  # (E,) int64 its position (-1: none)
    to_keeper: np.ndarray  # (E,) float64 check distance to the kept copy (0 for kept episodes)
    scales: tuple[float, float]  # (s_frames, s_actions)
    pairs_compared: int
    pairs_checked: int
    pairs_joined: int


def normalise_instruction(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower().rstrip(".!?;, ")


def _box_matrix(n: int, g: int, lo: float = 0.0, hi: float | None = None) -> np.ndarray:
    """(g, n) weights that average pixels [lo, hi) of ``n`` (default all) into ``g`` equal cells, fractional
    overlaps weighted."""
    edges = np.linspace(lo, float(n) if hi is None else hi, g + 1)
    a, b = edges[:-1, None], edges[1:, None]  # (g, 1)
    px = np.arange(n, dtype=np.float64)[None, :]  # (1, n)
    w = np.clip(np.minimum(px + 1, b) - np.maximum(px, a), 0.0, None)  # (g, n)
    out: np.ndarray = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def sample_positions(lengths: np.ndarray, k: int) -> np.ndarray:
    """(E, k) int64 frame offsets at evenly spaced times of each episode (first and last included)."""
    t = np.linspace(0.0, 1.0, k)[None, :]  # (1, k)
    out: np.ndarray = np.rint(t * (np.asarray(lengths)[:, None] - 1)).astype(np.int64)
    return out


def thumbnails(frames: np.ndarray, grid: int, rows: np.ndarray | None = None, chunk: int = 1024) -> np.ndarray:
    """(F, H, W, C) uint8 -> (N, grid, grid, C) float32 box averages of ``frames[rows]`` (default: all),
    gathered a chunk at a time."""
    h, w, c = frames.shape[1:]
    rows = np.arange(len(frames)) if rows is None else rows
    mh, mw = _box_matrix(h, grid), _box_matrix(w, grid)
    out = np.empty((len(rows), grid, grid, c), np.float32)
    for s in range(0, len(rows), chunk):
        x = frames[rows[s : s + chunk]].astype(np.float32)  # (n, H, W, C)
        y = x.transpose(0, 1, 3, 2) @ mw.T  # (n, H, C, g)
        z = mh @ y.reshape(len(x), h, c * grid)  # (n, g, C*g)
        out[s : s + chunk] = z.reshape(len(x), grid, c, grid).transpose(0, 1, 3, 2)
    return out


def shifted_thumbnails(frames: np.ndarray, grid: int = CHECK_GRID, shift: int = MAX_SHIFT) -> np.ndarray:
    """(N, H, W, C) uint8 -> (S, S, N, grid, grid, C) float32, S = 2 * shift + 1: box averages of the
    interior (a ``shift`` + 1 pixel border left out) moved by (dy, dx) in [-shift, shift]; [shift, shift]
    is the unshifted one."""
    h, w = frames.shape[1:3]
    m = min(shift + 1, (min(h, w) - 1) // 2)
    steps = range(-min(shift, m), min(shift, m) + 1)
    mh = np.stack([_box_matrix(h, grid, m + d, h - m + d) for d in steps])  # (S, g, H)
    mw = np.stack([_box_matrix(w, grid, m + d, w - m + d) for d in steps])  # (S, g, W)
    x = frames.astype(np.float32)  # (N, H, W, C)
    out: np.ndarray = np.einsum("yrh,nhwc,xsw->yxnrsc", mh, x, mw, optimize=True)
    return out


def describe(table: FrameTable, params: DedupParams) -> Descriptors:
    """The descriptor of every episode of ``table`` (see the module docstring)."""
    starts, lengths = table.episode_start, table.episode_length.astype(np.int64)  # (E,), (E,)
    e = table.num_episodes
    rows = starts[:, None] + sample_positions(lengths, params.frames)  # (E, Kf)
    frames = thumbnails(table.frames, params.grid, rows.ravel()).reshape(e, -1)  # (E, Df)
    arows = starts[:, None] + sample_positions(lengths, params.action_points)  # (E, Ka)
    if table.action_spec.kind == "discrete":
        ids = table.actions[arows.ravel()].astype(np.int64)  # (E*Ka,)
        count = max(int(table.action_spec.num_actions), int(ids.max(initial=0)) + 1)
        onehot = np.zeros((len(ids), count), np.float32)
        onehot[np.arange(len(ids)), ids] = 1.0 / np.sqrt(2.0)  # a differing step adds 1 to the squared distance
        actions, dims = onehot.reshape(e, -1), 1
    else:
        acts = np.asarray(table.actions, np.float64).reshape(len(table.actions), -1)  # (F, A)
        std = acts.std(axis=0)
        std[std < 1e-8] = np.inf  # a constant dimension tells episodes apart by nothing
        actions = (acts[arows.ravel()] / std).astype(np.float32).reshape(e, -1)  # (E, Ka*A)
        dims = acts.shape[1]
    texts = [normalise_instruction(t) for t in table.instructions]
    return Descriptors(texts, lengths, frames, actions, dims, table.frames, rows)


def rms_distances(desc: Descriptors, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact (rms_frames, rms_actions) of the pairs (i[p], j[p]) from the descriptors: grey levels and
    std units (discrete: the square root of the fraction of differing steps)."""
    f, a = np.empty(len(i)), np.empty(len(i))
    df, da = desc.frames.shape[1], desc.actions.shape[1] / desc.action_dims
    for s in range(0, len(i), 4096):
        x, y = i[s : s + 4096], j[s : s + 4096]
        f[s : s + 4096] = np.sqrt(np.square(desc.frames[x] - desc.frames[y], dtype=np.float64).sum(1) / df)
        a[s : s + 4096] = np.sqrt(np.square(desc.actions[x] - desc.actions[y], dtype=np.float64).sum(1) / da)
    return f, a


def check_distances(
    desc: Descriptors, i: np.ndarray, j: np.ndarray, shift: int = MAX_SHIFT
) -> tuple[np.ndarray, np.ndarray]:
    """The check's (frame, action) differences of the pairs (i[p], j[p]): the largest thumbnail-cell
    difference in grey levels at the best shift of j, and the action RMS in std units (discrete: the
    fraction of differing steps)."""
    frame, action = np.zeros(len(i)), np.zeros(len(i))
    if len(i) == 0:
        return frame, action
    used = np.unique(np.concatenate([i, j]))
    where = np.searchsorted(used, np.stack([i, j]))  # (2, P) rows of ``thumbs``
    k = desc.shown.shape[1]
    thumbs = [
        shifted_thumbnails(desc.images[desc.shown[used[s : s + 64]].ravel()], CHECK_GRID, shift)
        for s in range(0, len(used), 64)
    ]
    t = np.concatenate(thumbs, axis=2)  # (S, S, U*K, g, g, C)
    t = t.reshape(*t.shape[:2], len(used), k, -1)  # (S, S, U, K, g*g*C)
    c = t.shape[0] // 2
    for s in range(0, len(i), 256):
        a, b = where[0, s : s + 256], where[1, s : s + 256]
        diff = np.abs(t[c, c, a][None, None] - t[:, :, b])  # (S, S, P, K, D)
        frame[s : s + 256] = diff.max(axis=(3, 4)).min(axis=(0, 1))
    act_i, act_j = desc.actions[i], desc.actions[j]
    sq = np.square(act_i - act_j, dtype=np.float64).sum(1)  # (P,)
    points = desc.actions.shape[1] / desc.action_dims
    action = sq / points if desc.action_dims == 1 else np.sqrt(sq / points)
    return frame, action


def _blocks(texts: list[str]) -> list[np.ndarray]:
    groups: dict[str, list[int]] = {}
    for p, t in enumerate(texts):
        groups.setdefault(t, []).append(p)
    return [np.asarray(g, np.int64) for g in groups.values()]


def _median_scale(d: np.ndarray) -> float:
    """The median of ``d``; when most pairs are exact copies, the median of the non-zero ones (1 if none)."""
    if len(d) == 0:
        return 1.0
    m = float(np.median(d))
    if m > 0:
        return m
    nonzero = d[d > 0]
    return float(np.median(nonzero)) if len(nonzero) else 1.0


def distance_scales(desc: Descriptors, seed: int = 0) -> tuple[float, float]:
    """(s_frames, s_actions): median RMS differences over same-instruction pairs (at most SAMPLE_PAIRS,
    drawn at random; all episode pairs when no instruction repeats)."""
    rng = np.random.default_rng(seed)
    blocks = [b for b in _blocks(desc.texts) if len(b) > 1]
    if not blocks:
        blocks = [np.arange(len(desc.texts))]
    sizes = np.array([len(b) * (len(b) - 1) // 2 for b in blocks], np.int64)
    total = int(sizes.sum())
    if total == 0:
        return 1.0, 1.0
    if total <= SAMPLE_PAIRS:
        pairs = [np.triu_indices(len(b), 1) for b in blocks]
        i = np.concatenate([b[p[0]] for b, p in zip(blocks, pairs, strict=True)])
        j = np.concatenate([b[p[1]] for b, p in zip(blocks, pairs, strict=True)])
    else:  # pairs drawn in proportion to each block's number of pairs
        which = rng.choice(len(blocks), size=SAMPLE_PAIRS, p=sizes / total)
        lens = np.array([len(b) for b in blocks])[which]
        a = rng.integers(0, lens)
        b = (a + rng.integers(1, lens)) % lens  # another member of the same block
        starts = np.concatenate([[0], np.cumsum([len(x) for x in blocks])[:-1]])
        flat = np.concatenate(blocks)
        i, j = flat[starts[which] + a], flat[starts[which] + b]
    f, a_ = rms_distances(desc, i, j)
    return _median_scale(f), _median_scale(a_)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[x] != root:
            self.parent[x], x = root, int(self.parent[x])
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _split_rank(split: str) -> int:
    return HELD_OUT_ORDER.index(split) if split in HELD_OUT_ORDER else len(HELD_OUT_ORDER)


def _screen(desc: Descriptors, scales: tuple[float, float], params: DedupParams) -> tuple[Any, ...]:
    """Screening within instruction blocks: (nearest, nearest_pos, candidate i, candidate j, pairs compared)."""
    e = len(desc.texts)
    # Scaled so that ||z_i - z_j||^2 = 2 screen(i, j)^2: a block's distances come from one matrix product.
    z = np.concatenate(
        [
            desc.frames / np.float32(scales[0] * np.sqrt(desc.frames.shape[1])),
            desc.actions / np.float32(scales[1] * np.sqrt(desc.actions.shape[1] / desc.action_dims)),
        ],
        axis=1,
    ).astype(np.float64)  # (E, D)
    sq = np.square(z).sum(1)  # (E,)
    nearest, nearest_pos = np.full(e, np.inf), np.full(e, -1, np.int64)
    cand_i: list[np.ndarray] = []
    cand_j: list[np.ndarray] = []
    compared = 0
    for block in _blocks(desc.texts):
        if len(block) < 2:
            continue
        lens = desc.lengths[block].astype(np.float64)  # (n,)
        for s in range(0, len(block), ROW_CHUNK):
            rows, rl = block[s : s + ROW_CHUNK], lens[s : s + ROW_CHUNK, None]
            d2 = sq[rows, None] + sq[None, block] - 2.0 * (z[rows] @ z[block].T)  # (r, n)
            ok = np.abs(rl - lens[None, :]) <= np.maximum(1.0, params.length_tol * np.maximum(rl, lens[None, :]))
            ok[np.arange(len(rows)), s + np.arange(len(rows))] = False  # not itself
            compared += int(ok.sum())
            d = np.sqrt(np.where(ok, np.maximum(d2, 0.0), np.inf) / 2.0)  # (r, n) screening distances
            best = d.argmin(1)
            nearest[rows] = d[np.arange(len(rows)), best]
            nearest_pos[rows] = np.where(np.isfinite(nearest[rows]), block[best], -1)
            r, c = np.nonzero(d <= SCREEN)
            keep = rows[r] < block[c]
            cand_i.append(rows[r][keep])
            cand_j.append(block[c][keep])
    i = np.concatenate(cand_i) if cand_i else np.zeros(0, np.int64)
    j = np.concatenate(cand_j) if cand_j else np.zeros(0, np.int64)
    return nearest, nearest_pos, i, j, compared // 2


def check_distance(frame: np.ndarray, action: np.ndarray, params: DedupParams) -> np.ndarray:
    """max(frame / frame_tol, action / action_tol): at most 1 for a copy (a zero tolerance: exact)."""

    def ratio(x: np.ndarray, tol: float) -> np.ndarray:
        if tol > 0:
            return x / tol
        out: np.ndarray = np.where(x > 0, np.inf, 0.0)
        return out

    out: np.ndarray = np.maximum(ratio(frame, params.frame_tol), ratio(action, params.action_tol))
    return out


def find_duplicates(desc: Descriptors, episode_ids: np.ndarray, splits: list[str], params: DedupParams) -> DedupResult:
    """Clusters of copies among the described episodes; ``splits`` names each episode's split ("" = none)."""
    e = len(desc.texts)
    s_frames, s_actions = distance_scales(desc, params.seed)
    # Floors tied to the check's tolerances: when a dataset's episodes differ little (small medians), a copy
    # within the tolerances must still pass the screen.
    scales = (max(s_frames, SCALE_FLOOR * params.frame_tol), max(s_actions, SCALE_FLOOR * params.action_tol))
    nearest, nearest_pos, i, j, compared = _screen(desc, scales, params)
    dist = check_distance(*check_distances(desc, i, j), params)  # (P,)
    joined = dist <= 1.0
    uf = _UnionFind(e)
    for a, b in zip(i[joined].tolist(), j[joined].tolist(), strict=True):
        uf.union(a, b)
    keeper = _keepers(uf, episode_ids, splits)
    to_keeper = np.zeros(e)
    copies = np.nonzero(keeper != np.arange(e))[0]
    if len(copies):
        to_keeper[copies] = check_distance(*check_distances(desc, copies, keeper[copies]), params)
    return DedupResult(
        np.asarray(episode_ids, np.int64),
        keeper,
        nearest,
        nearest_pos,
        to_keeper,
        scales,
        compared,
        len(i),
        int(joined.sum()),
    )


def _keepers(uf: _UnionFind, episode_ids: np.ndarray, splits: list[str]) -> np.ndarray:
    """(E,) the position each episode's cluster keeps: the most held-out split, then the lowest index."""
    e = len(episode_ids)
    roots = np.array([uf.find(p) for p in range(e)], np.int64)
    keeper = np.arange(e)
    members: dict[int, list[int]] = {}
    for p in np.nonzero(np.bincount(roots, minlength=e)[roots] > 1)[0].tolist():
        members.setdefault(int(roots[p]), []).append(p)
    for group in members.values():
        best = min(group, key=lambda p: (_split_rank(splits[p]), int(episode_ids[p])))
        keeper[group] = best
    return keeper


def episode_splits(root: Path, ids: np.ndarray, splits: str = "") -> list[str]:
    """Each episode's split ("" when in none): from the split file ``splits`` resolves to (a path; "" =
    ``<DIR>.splits.json`` when it exists), else meta/info.json's ``splits``."""
    path = resolve_split_file(root, splits)
    if path is not None:
        table = {k: v.tolist() for k, v in check_split_file(load_split_file(path), path, root, ids).items()}
    else:
        ranges = parse_splits(read_info(root), root / "meta" / "info.json")
        table = {name: list(range(a, b)) for name, (a, b) in ranges.items()}
    where = {int(i): name for name, members in table.items() for i in members}
    return [where.get(int(i), "") for i in ids.tolist()]


def dedup_document(root: Path, result: DedupResult, splits: list[str], params: DedupParams) -> dict[str, Any]:
    """The ``<DIR>.dedup.json`` document of ``result``."""
    ids, keeper = result.episode_ids, result.keeper
    e = len(ids)
    sizes = np.bincount(keeper, minlength=e)
    copies = np.nonzero(keeper != np.arange(e))[0]
    span: dict[int, set[str]] = {}
    for p in range(e):
        span.setdefault(int(keeper[p]), set()).add(splits[p])
    multi = [k for k in span if sizes[k] > 1]
    leaks = [p for p in copies.tolist() if splits[p] == "train" and splits[keeper[p]] not in ("train", "")]

    def num(x: float) -> float | None:
        return round(float(x), 4) if np.isfinite(x) else None

    episodes = [
        {
            "episode_index": int(ids[p]),
            "split": splits[p],
            "cluster": int(ids[keeper[p]]),
            "nearest": num(result.nearest[p]),
            "nearest_episode": int(ids[result.nearest_pos[p]]) if result.nearest_pos[p] >= 0 else None,
        }
        for p in range(e)
    ]
    flagged = [
        {
            "episode_index": int(ids[p]),
            "reason": f"duplicate of episode {int(ids[keeper[p]])} (distance {result.to_keeper[p]:.3f})",
            "duplicate_of": int(ids[keeper[p]]),
            "distance": num(result.to_keeper[p]),
        }
        for p in copies.tolist()
    ]
    summary = {
        "episodes": e,
        "clusters": len(multi),
        "flagged": len(copies),
        "cross_split_clusters": sum(1 for k in multi if len(span[k]) > 1),
        "train_copies_of_held_out": len(leaks),
        "pairs_compared": result.pairs_compared,
        "pairs_checked": result.pairs_checked,
        "pairs_joined": result.pairs_joined,
        "scale_frames": round(result.scales[0], 6),
        "scale_actions": round(result.scales[1], 6),
    }
    return sidecar.document(root, KIND, e, _params_doc(params), summary, episodes, flagged)


def _params_doc(params: DedupParams) -> dict[str, Any]:
    """How dedup ran, for the file's ``params``."""
    return {
        "frame_tol": params.frame_tol,
        "action_tol": params.action_tol,
        "length_tol": params.length_tol,
        "frames": params.frames,
        "grid": params.grid,
        "action_points": params.action_points,
        "check_grid": CHECK_GRID,
        "max_shift": MAX_SHIFT,
        "screen": SCREEN,
        "nearest": "screening distance sqrt(((rms_frames/scale_frames)^2 + (rms_actions/scale_actions)^2) / 2), "
        "scales = median over same-instruction pairs: about 1 between different demonstrations",
        "distance": "check distance max(frame/frame_tol, action/action_tol): at most 1 for a copy",
    }


def dedup_dataset(root: Path, params: DedupParams, splits: str = "") -> dict[str, Any]:
    """Read the dataset at ``root`` once and return its dedup document (nothing is written)."""
    info = read_info(root)
    total = info.get("total_episodes")
    if isinstance(total, int) and total < 2:
        raise UserError(f"{root}: has {total} episode(s); de-duplication compares episodes, it needs at least 2")
    cams, _ = select_cameras(info, root / "meta" / "info.json", ())
    size = READ_SIZE if max(cams[0].shape) > READ_SIZE else None  # memory: 100k frames of 64 px are 1.2 GB
    table = read_dataset(root, split=None, image_size=size)
    if table.num_episodes < 2:
        raise UserError(f"{root}: has {table.num_episodes} episode; de-duplication needs at least 2")
    where = episode_splits(root, table.episode_ids, splits)
    result = find_duplicates(describe(table, params), table.episode_ids, where, params)
    return dedup_document(root, result, where, params)


# --- command line -------------------------------------------------------------------------------


def add_command(sims: Any, parser_class: Any) -> None:
    """Register `vla-align data dedup DIR` on the ``data`` sub-parsers ``sims``."""
    del parser_class  # sub-parsers of ``sims`` already use it
    q = sims.add_parser(
        "dedup",
        help="find near-identical episodes (frames + instruction + actions) and write DIR.dedup.json beside DIR",
        description="Find exact and near copies of episodes (same instruction, near-identical frames and actions) "
        "and write DIR.dedup.json beside the dataset (never inside it): one copy per cluster is kept (the one in "
        "the most held-out split), the others are flagged for --data.exclude and `data split --exclude`.",
    )
    q.add_argument("dir", metavar="DIR", help="the LeRobot v3.0 dataset directory (read only)")
    q.add_argument(
        "--frame-tol",
        type=float,
        default=DedupParams.frame_tol,
        help="grey levels (0-255): the most two copies' coarse thumbnails may differ in any cell, after the "
        f"best shift of up to {MAX_SHIFT} px (default %(default)s)",
    )
    q.add_argument(
        "--action-tol",
        type=float,
        default=DedupParams.action_tol,
        help="the most two copies' actions may differ: RMS in standard deviations (continuous) or the fraction "
        "of differing steps (discrete) (default %(default)s)",
    )
    q.add_argument(
        "--length-tol",
        type=float,
        default=DedupParams.length_tol,
        help="compare only episodes whose lengths differ by at most this fraction (default 0.1)",
    )
    q.add_argument(
        "--splits",
        metavar="FILE",
        default="",
        help="split file that says which split each episode is in (default: DIR.splits.json when it exists, "
        "else meta/info.json's splits)",
    )
    q.add_argument("--out", metavar="FILE", help="where to write the dedup file (default: DIR.dedup.json beside DIR)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing dedup file")
    q.set_defaults(func=cmd_data_dedup)


def cmd_data_dedup(args: argparse.Namespace) -> None:
    """Write the dedup file of ``args.dir`` beside it and print what it found."""

    root = Path(args.dir)
    read_info(root)  # a LeRobot v3.0 dataset, checked, before anything else
    params = DedupParams(frame_tol=args.frame_tol, action_tol=args.action_tol, length_tol=args.length_tol)
    out = Path(args.out) if args.out else sidecar.default_path(root, KIND)
    sidecar.check_writable(out, KIND, args.overwrite, root)
    doc = dedup_dataset(root, params, args.splits)
    sidecar.write(out, doc)
    _print_summary(doc, out)
    summary = doc["summary"]
    if summary["episodes"] > 1 and summary["flagged"] == summary["episodes"] - 1:
        keep = doc["episodes"][0]["cluster"]
        print(
            f"vla-align: warning: all {summary['episodes']} episodes are copies of episode {keep}; "
            "the dataset holds one demonstration",
            file=sys.stderr,
        )
    if summary["flagged"]:
        print(f"train without the flagged episodes: --data.exclude {out}")
        print(f"or split without them: vla-align data split {root} --exclude {out}")
    else:
        print("no copies found; nothing to exclude")


def _print_summary(doc: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    per: dict[str, list[int]] = {}
    flagged = {r["episode_index"] for r in doc["flagged"]}
    split_of = {r["episode_index"]: r["split"] for r in doc["episodes"]}
    for r in doc["episodes"]:
        row = per.setdefault(r["split"] or "(none)", [0, 0, 0])
        row[0] += 1
        row[1] += r["episode_index"] in flagged
        row[2] += (
            r["episode_index"] in flagged and r["split"] == "train" and split_of[r["cluster"]] not in ("train", "")
        )
    table = Table(title=f"duplicates written to {out}", caption=_caption(doc["summary"]))
    for c in ("split", "episodes", "flagged", "copies of held-out"):
        table.add_column(c, justify="left" if c == "split" else "right")
    for name, (n, f, leak) in per.items():
        table.add_row(name, str(n), str(f), str(leak) if name == "train" else "—")
    Console(width=120).print(table)


def _caption(s: dict[str, Any]) -> str:
    return (
        f"{s['clusters']} cluster(s) of copies, {s['flagged']} episode(s) flagged, "
        f"{s['cross_split_clusters']} cluster(s) across splits"
    )
