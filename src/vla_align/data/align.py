"""``vla-align data align DIR``: each episode's camera ↔ controller offset, measured and corrected (chapter 5.7).

Cameras lag (or lead) the controller: frame t of a recording may show the scene of step t - L. The
chapter aligns video and action by maximising their cross-correlation and down-weights or drops samples
whose offset stays above 150 ms. Here, without any trained model, per episode, the lag L within
±``max_lag_ms`` that maximises the sum of two normalised cross-correlations:

* **motion energy × speed** — ‖frame_{t+1} − frame_t‖ at full resolution against the controller's speed
  (a norm of the reference channels' steps, weighted to match the energy over the whole dataset). The robot starts
  from rest and stops, so this curve has a sharp peak, but it can lock onto a wrong one;
* **a ridge map** from the frames (box-downsampled to ``grid`` × ``grid``, PCA to ``pca_dim``) to the
  reference signal, fitted on the whole dataset with the current lags, predicts the reference from the
  pictures alone; its correlation curve is broad but rarely far off (weight ``map_weight``). The map is
  cross-fitted (episodes are scored by a map fitted on the other half) and re-fitted on the new lags
  ``iterations`` times, starting from lag 0.

The reference is the controller's side of the recording: the proprioceptive state when the dataset has
one (``--reference auto``): the camera films the robot's position, at the controller's clock, so a clean
recording aligns at 0; else the actions (then the offset also contains the robot's response time).
A parabola through the peak and its neighbours gives the sub-step offset in milliseconds; the
correction shifts the frames by the whole-step lag, the rest is the residual.

The convention: ``lag_steps`` L > 0 means the camera is late (frame t shows step t - L). The corrected
view pairs step t's action and state with frame t + L and drops the |L| steps that lose their partner.

Each episode gets a ``status``: ``ok``; ``weak`` (peak score under ``min_score``: no reliable offset,
left as it is); ``no-signal`` (constant actions or a still camera: nothing to correlate); ``too-short``
(shorter than the search window needs). Only ``ok`` episodes are shifted.

The file (``<DIR>.align.json``, see :mod:`vla_align.data.sidecar`) is read by training through
``--data.align auto`` (see :mod:`vla_align.data.view`); the dataset itself is never modified.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError, UserError
from . import sidecar
from .lerobot import FrameTable, read_dataset
from .subset import take_episodes

RIDGE = 1e-2  # ridge strength × the number of samples (the PCA features are standardised)


@dataclass
class AlignConfig:
    max_lag_ms: float = 500.0  # lags searched: ±this many milliseconds
    grid: int = 24  # the map's features: frames box-downsampled to grid x grid
    pca_dim: int = 128  # the map's features kept
    iterations: int = 3  # passes: fit the map on the current lags, search the lags again
    map_weight: float = 2.0  # weight of the map's correlation against the motion-energy one
    min_score: float = 0.3  # peak score (sum of both correlations) under this: "weak", no offset applied
    min_overlap: float = 0.5  # a lag must keep this share of the episode overlapping
    max_ms: float = 150.0  # offsets (residuals) above this are down-weighted in training (chapter 5.7)
    reference: str = "auto"  # what the pictures are aligned to: the state (auto when there is one) or the actions

    def check(self) -> None:
        if not (math.isfinite(self.max_lag_ms) and self.max_lag_ms > 0):
            raise UserError(f"--max-lag-ms {self.max_lag_ms}: give a positive number of milliseconds")
        if not 2 <= self.grid <= 64:
            raise UserError(f"--grid {self.grid}: between 2 and 64 pixels per side")
        if not 1 <= self.pca_dim <= 1024 or self.iterations < 1:
            raise UserError("--pca-dim must be 1..1024 and --iterations >= 1")
        if self.reference not in ("auto", "state", "action"):
            raise UserError(f"--reference {self.reference!r}: use auto, state or action")
        if not 0.0 < self.min_overlap < 1.0:
            raise UserError(f"--min-overlap {self.min_overlap}: a share between 0 and 1")
        if self.map_weight < 0:
            raise UserError(f"--map-weight {self.map_weight}: must be >= 0")


# --- signals -----------------------------------------------------------------------------------------


@dataclass
class Signals:
    energy: np.ndarray  # (F,) ‖frame_{t+1} - frame_t‖ (0 at each episode's last row)
    speed: np.ndarray  # (F,) the reference's speed, in the energy's units
    features: np.ndarray  # (F, P) the map's input
    target: np.ndarray  # (F, C) the map's output: the standardised reference
    reference: str  # "state" or "action"
    commands: np.ndarray  # (F, C') the actions (constant ones mean no signal)


def _pooled_frames(table: FrameTable, grid: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(F, 3 · grid²) box-downsampled frames and (F,) the full-resolution frame-difference energy."""
    small = np.empty((table.num_frames, 3 * grid * grid), np.float32)
    energy = np.zeros(table.num_frames)
    for i in range(0, table.num_frames, chunk):
        x = torch.from_numpy(np.ascontiguousarray(table.frames[i : i + chunk + 1])).float() / 255.0
        small[i : i + chunk] = F.adaptive_avg_pool2d(x[:chunk].permute(0, 3, 1, 2), grid).reshape(-1, small.shape[1])
        flat = x.reshape(len(x), -1)
        energy[i : i + len(x) - 1] = torch.linalg.vector_norm(flat[1:] - flat[:-1], dim=1).numpy()
    energy[table.episode_start + table.episode_length - 1] = 0.0
    return small, energy


def action_channels(table: FrameTable) -> np.ndarray:
    """(F, C) standardised continuous actions, or one-hot discrete ones."""
    a = table.actions
    if a.ndim == 1:
        one_hot: np.ndarray = np.eye(max(table.action_spec.num_actions, int(a.max()) + 1), dtype=np.float32)[a]
        return one_hot
    a = a.astype(np.float64)
    scaled: np.ndarray = ((a - a.mean(0)) / (a.std(0) + 1e-8)).astype(np.float32)
    return scaled


def _reference(table: FrameTable, reference: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The map's target (F, C) (standardised), the per-step change of the reference (F, C) and its name."""
    varying = table.state is not None and bool((table.state.std(0) > 1e-6).any())
    if reference == "state" and not varying:
        raise DatasetError(f"{table.root}: --reference state, but the dataset has no varying observation.state")
    last = table.episode_start + table.episode_length - 1
    if reference == "action" or not varying:
        a = action_channels(table)
        return a, np.abs(a), "action"  # a delta-position command is itself the motion of the step
    assert table.state is not None
    s = table.state.astype(np.float64)[:, table.state.std(0) > 1e-6]
    step = np.zeros_like(s)
    step[:-1] = s[1:] - s[:-1]  # t -> t + 1: the interval of the frame difference
    step[last] = 0.0
    target: np.ndarray = ((s - s.mean(0)) / s.std(0)).astype(np.float32)
    return target, np.abs(step), "state"


def _speed(energy: np.ndarray, change: np.ndarray) -> np.ndarray:
    """The reference's speed as the camera sees it: sqrt(Σ_c w_c Δ_c²), with the non-negative weights w
    that best predict the squared motion energy over the whole dataset (least squares, negative weights
    dropped): which channels move what the camera films, and how much."""
    x = (change / (change.std(0) + 1e-12)) ** 2
    w, *_ = np.linalg.lstsq(x, energy**2, rcond=None)
    w = np.clip(w, 0.0, None)
    if not (w > 0).any():
        w = np.ones(x.shape[1])
    speed: np.ndarray = np.sqrt(x @ w)
    return speed


def signals(table: FrameTable, cfg: AlignConfig, rng: np.random.Generator) -> Signals:
    small, energy = _pooled_frames(table, cfg.grid)
    target, change, reference = _reference(table, cfg.reference)
    if reference == "action":  # the actions are motion: the map reads motion (frame differences) too
        diff = np.zeros_like(small)
        diff[:-1] = small[1:] - small[:-1]
        diff[table.episode_start + table.episode_length - 1] = 0.0
        small = np.concatenate([diff, np.abs(diff)], axis=1)
    return Signals(
        energy, _speed(energy, change), _pca(small, cfg.pca_dim, rng), target, reference, action_channels(table)
    )


def lag_scores(pred: np.ndarray, target: np.ndarray, max_lag: int, min_len: int) -> np.ndarray:
    """Normalised cross-correlation s[k] (k = -max_lag..max_lag) between ``pred`` (n, C) at row t and
    ``target`` (n, C) at row t - k, over the rows where both exist; channels pooled (centred sums of
    products over the norms). NaN where fewer than ``min_len`` rows overlap or a side is constant."""
    n = len(pred)
    out = np.full(2 * max_lag + 1, np.nan)
    for j, k in enumerate(range(-max_lag, max_lag + 1)):
        lo, hi = max(0, k), min(n, n + k)
        if hi - lo < min_len:
            continue
        p = pred[lo:hi] - pred[lo:hi].mean(0)
        q = target[lo - k : hi - k] - target[lo - k : hi - k].mean(0)
        den = math.sqrt(float((p * p).sum()) * float((q * q).sum()))
        if den > 1e-12:
            out[j] = float((p * q).sum()) / den
    return out


def peak(scores: np.ndarray, max_lag: int) -> tuple[int, float, float]:
    """(whole-step lag, sub-step lag from a parabola through the peak, peak score)."""
    j = int(np.nanargmax(scores))
    best = float(scores[j])
    frac = 0.0
    if 0 < j < len(scores) - 1 and np.isfinite(scores[j - 1]) and np.isfinite(scores[j + 1]):
        a, b, c = float(scores[j - 1]), best, float(scores[j + 1])
        curve = a - 2 * b + c
        if curve < 0:
            frac = float(np.clip(0.5 * (a - c) / curve, -0.5, 0.5))
    return j - max_lag, j - max_lag + frac, best


# --- the estimate ------------------------------------------------------------------------------------


@dataclass
class EpisodeOffset:
    episode_index: int
    length: int
    status: str  # ok | weak | no-signal | too-short
    lag_steps: int = 0  # whole-step lag at the score's peak (camera late when > 0)
    offset_ms: float | None = None  # sub-step estimate
    score: float | None = None  # peak score: energy correlation + map_weight × map correlation

    def shift(self) -> int:
        return self.lag_steps if self.status == "ok" else 0

    def residual_ms(self, fps: float) -> float | None:
        if self.offset_ms is None or self.status != "ok":
            return None
        return abs(self.offset_ms - self.shift() * 1000.0 / fps)


class _Episodes:
    """Row ranges of the episodes and their search windows."""

    def __init__(self, table: FrameTable, max_lag: int, min_overlap: float) -> None:
        self.start = table.episode_start
        self.length = table.episode_length
        self.min_len = np.maximum(4, np.ceil(min_overlap * self.length)).astype(int)
        # an episode's window: lags that keep min_len overlapping rows, at most max_lag
        self.window = np.minimum(max_lag, self.length - self.min_len)

    def rows(self, e: int) -> slice:
        return slice(int(self.start[e]), int(self.start[e] + self.length[e]))


def _aligned_pairs(eps: _Episodes, lags: dict[int, int], episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (frame row, reference row) pairing recorded frame t with step t - lag, within each episode."""
    f_rows, a_rows = [], []
    for e in episodes:
        s, n, k = int(eps.start[e]), int(eps.length[e]), lags[int(e)]
        t = np.arange(max(0, k), min(n, n + k))
        f_rows.append(s + t)
        a_rows.append(s + t - k)
    return np.concatenate(f_rows), np.concatenate(a_rows)


def _fit_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ridge regression with bias from x (N, P) to y (N, C) -> (P + 1, C)."""
    xb = np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1).astype(np.float64)
    gram = xb.T @ xb + RIDGE * len(xb) * np.eye(xb.shape[1])
    gram[-1, -1] -= RIDGE * len(xb)  # no penalty on the bias
    w: np.ndarray = np.linalg.solve(gram, xb.T @ y.astype(np.float64))
    return w


def _pca(x: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    """x (F, D) standardised and projected on its ``dim`` leading principal directions (fitted on up
    to 20,000 rows)."""
    sample = x[rng.choice(len(x), size=min(len(x), 20_000), replace=False)].astype(np.float64)
    mean, std = sample.mean(0), sample.std(0) + 1e-6
    _, _, vt = np.linalg.svd((sample - mean) / std, full_matrices=False)
    basis = vt[: min(dim, vt.shape[0])].T  # (D, P)
    out = np.empty((len(x), basis.shape[1]), np.float32)
    for i in range(0, len(x), 8192):  # in blocks: no float64 copy of the whole (F, D) array
        out[i : i + 8192] = ((x[i : i + 8192] - mean) / std) @ basis
    return out


def _cross_fitted(sig: Signals, eps: _Episodes, lags: dict[int, int], live: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """(F, C) the map's prediction of the reference, each episode's from the map fitted on the other half."""
    pred = np.zeros_like(sig.target)
    xb = np.concatenate([sig.features, np.ones((len(sig.features), 1), np.float32)], axis=1)
    for half in (0, 1):
        f_rows, a_rows = _aligned_pairs(eps, lags, live[fold != half])
        w = _fit_map(sig.features[f_rows], sig.target[a_rows])
        for e in live[fold == half]:
            r = eps.rows(int(e))
            pred[r] = xb[r] @ w
    return pred


def _statuses(table: FrameTable, sig: Signals, eps: _Episodes) -> list[EpisodeOffset]:
    out = []
    for e in range(table.num_episodes):
        r = eps.rows(e)
        status = "ok"
        if eps.window[e] < 1:
            status = "too-short"
        elif sig.commands[r].std(0).max() < 1e-6 or sig.speed[r].max() < 1e-9 or sig.energy[r].max() < 1e-6:
            status = "no-signal"
        out.append(EpisodeOffset(int(table.episode_ids[e]), int(table.episode_length[e]), status))
    return out


def estimate_offsets(
    table: FrameTable, cfg: AlignConfig, seed: int = 0, log: Callable[[str], None] | None = None
) -> tuple[list[EpisodeOffset], str]:
    """Every episode's camera ↔ controller offset (see the module docstring), and the reference signal
    used (``state`` or ``action``)."""
    cfg.check()
    max_lag = math.floor(cfg.max_lag_ms * table.fps / 1000.0)
    if max_lag < 1:
        raise DatasetError(
            f"{table.root}: at {table.fps:g} Hz a ±{cfg.max_lag_ms:g} ms search window is under one control step; "
            "time alignment needs sub-second control (turn-based data has no camera-action timing)"
        )
    rng = np.random.default_rng(seed)
    sig = signals(table, cfg, rng)
    eps = _Episodes(table, max_lag, cfg.min_overlap)
    out = _statuses(table, sig, eps)
    live = np.array([e for e, o in enumerate(out) if o.status == "ok"], dtype=np.int64)
    if not len(live):
        counts = {s: sum(o.status == s for o in out) for s in ("too-short", "no-signal")}
        raise DatasetError(
            f"{table.root}: no episode can be aligned ({counts['too-short']} too short for a ±{max_lag}-step "
            f"window with {cfg.min_overlap:.0%} overlap, {counts['no-signal']} with constant actions or a still "
            "camera); lower --max-lag-ms or --min-overlap, or check the actions"
        )
    fold = rng.permutation(len(live)) % 2
    lags = dict.fromkeys(live.tolist(), 0)
    found: dict[int, tuple[int, float, float]] = {}
    for it in range(cfg.iterations):
        t0 = time.perf_counter()
        pred = _cross_fitted(sig, eps, lags, live, fold)
        for e in live.tolist():
            r, w, m = eps.rows(e), int(eps.window[e]), int(eps.min_len[e])
            motion = lag_scores(sig.energy[r, None], sig.speed[r, None], w, m)
            mapped = lag_scores(pred[r], sig.target[r], w, m)
            both = np.where(np.isfinite(motion), motion, -1.0) + cfg.map_weight * np.where(
                np.isfinite(mapped), mapped, -1.0
            )
            found[e] = peak(both, w)
            lags[e] = found[e][0]
        if log is not None:
            log(f"align: pass {it + 1}/{cfg.iterations} in {time.perf_counter() - t0:.1f} s")
    for e in live.tolist():
        k, sub, score = found[e]
        o = out[e]
        o.lag_steps, o.offset_ms, o.score = k, sub * 1000.0 / table.fps, score
        if score < cfg.min_score:
            o.status = "weak"
    return out, sig.reference


# --- the file and the corrected view -----------------------------------------------------------------


def summarise(offsets: list[EpisodeOffset], fps: float, max_ms: float) -> dict[str, Any]:
    ok = [o for o in offsets if o.status == "ok" and o.offset_ms is not None]
    mags = np.array([abs(o.offset_ms) for o in ok if o.offset_ms is not None])
    residual = np.array([o.residual_ms(fps) for o in ok])
    summary: dict[str, Any] = {
        "episodes": len(offsets),
        **{s: sum(o.status == s for o in offsets) for s in ("ok", "weak", "no-signal", "too-short")},
        "fps": fps,
    }
    if len(mags):
        summary |= {
            "offset_ms_p50": float(np.percentile(mags, 50)),
            "offset_ms_p90": float(np.percentile(mags, 90)),
            f"share_over_{max_ms:g}ms": float((mags > max_ms).mean()),
            "residual_ms_p50": float(np.percentile(residual.astype(float), 50)),
        }
    return summary


def align_document(
    root: Path, table: FrameTable, offsets: list[EpisodeOffset], cfg: AlignConfig, reference: str
) -> dict[str, Any]:
    records = []
    for o in offsets:
        rec = asdict(o)
        rec["shift"] = o.shift()
        rec["residual_ms"] = o.residual_ms(table.fps)
        records.append(rec)
    flagged = [
        {"episode_index": o.episode_index, "reason": f"offset {o.offset_ms:+.0f} ms exceeds {cfg.max_ms:g} ms"}
        for o in offsets
        if o.status == "ok" and o.offset_ms is not None and abs(o.offset_ms) > cfg.max_ms
    ]
    params = {
        **asdict(cfg),
        "reference": reference,
        "method": f"motion energy x {reference} speed + a cross-fitted ridge map from the frames to the {reference}",
    }
    return sidecar.document(
        root, "align", table.num_episodes, params, summarise(offsets, table.fps, cfg.max_ms), records, flagged
    )


def apply_alignment(
    table: FrameTable, doc: dict[str, Any], mode: str, max_ms: float, weight: float, weigh: bool
) -> FrameTable:
    """The corrected view of ``table`` (``mode`` ``shift``) or the same rows (``weight``), with the
    episodes whose residual (shift) or measured (weight) offset exceeds ``max_ms`` sampled with
    ``weight`` when ``weigh`` (the training split). Episodes the file does not know are kept unchanged."""
    by_id = {int(r["episode_index"]): r for r in doc["episodes"]}
    fps = float(doc["summary"].get("fps") or table.fps)
    n = table.num_episodes
    starts, lengths = np.zeros(n, np.int64), table.episode_length.astype(np.int64).copy()
    shifts, weights = np.zeros(n, np.int64), np.ones(n)
    for e, eid in enumerate(table.episode_ids.tolist()):
        rec = by_id.get(int(eid))
        if rec is None or rec.get("status") != "ok" or rec.get("offset_ms") is None:
            continue
        k = int(rec.get("shift") or 0) if mode == "shift" else 0
        if abs(k) > lengths[e] - 2:  # a shift that would leave under two steps is not applied
            k = 0
        off = abs(float(rec["offset_ms"]) - k * 1000.0 / fps)
        starts[e], lengths[e], shifts[e] = max(0, -k), lengths[e] - abs(k), k
        if weigh and off > max_ms:
            weights[e] = weight
    if weigh and not (weights > 0).any():
        raise DatasetError(
            f"{table.root}: every training episode's offset exceeds data.align_max_ms {max_ms:g} ms and "
            "data.align_weight is 0: nothing is left to train on; raise either"
        )
    keep = np.nonzero(weights > 0)[0]
    return take_episodes(
        table,
        keep,
        starts[keep],
        lengths[keep],
        shifts[keep],
        weights[keep] if weigh and (weights[keep] != 1).any() else None,
    )


# --- the command -------------------------------------------------------------------------------------


def add_command(sims: Any, parser_class: Any) -> None:
    q = sims.add_parser(
        "align",
        help="measure each episode's camera-action offset (cross-correlation), write DIR.align.json",
        description="Measure each episode's camera-action offset and write it beside the dataset "
        "(DIR.align.json); train with --data.align auto to use the corrected view. The dataset is not modified.",
    )
    q.add_argument("dir", metavar="DIR", help="the dataset")
    d = AlignConfig()
    q.add_argument("--max-lag-ms", type=float, default=d.max_lag_ms, help=f"lags searched: ± ms ({d.max_lag_ms:g})")
    q.add_argument("--max-ms", type=float, default=d.max_ms, help=f"offsets above this are flagged ({d.max_ms:g})")
    q.add_argument("--min-score", type=float, default=d.min_score, help=f"weaker peaks: no offset ({d.min_score})")
    q.add_argument("--min-overlap", type=float, default=d.min_overlap, help=f"overlap a lag keeps ({d.min_overlap})")
    q.add_argument("--iterations", type=int, default=d.iterations, help=f"refinement passes ({d.iterations})")
    q.add_argument("--map-weight", type=float, default=d.map_weight, help=f"weight of the map ({d.map_weight:g})")
    q.add_argument("--grid", type=int, default=d.grid, help=f"motion features: grid x grid ({d.grid})")
    q.add_argument("--pca-dim", type=int, default=d.pca_dim, help=f"motion features kept ({d.pca_dim})")
    q.add_argument(
        "--reference",
        default=d.reference,
        choices=("auto", "state", "action"),
        help="align the pictures to the state's velocity (auto: when the dataset has a state) or to the actions",
    )
    q.add_argument("--split", default=None, help="align one split only (default: every episode)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", metavar="FILE", help="where to write (default: DIR.align.json beside DIR)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing align file")
    q.set_defaults(func=cmd_align)


def cmd_align(args: argparse.Namespace) -> None:
    from rich.table import Table

    from ..progress import console

    root = Path(args.dir)
    cfg = AlignConfig(
        max_lag_ms=args.max_lag_ms,
        grid=args.grid,
        pca_dim=args.pca_dim,
        iterations=args.iterations,
        map_weight=args.map_weight,
        min_score=args.min_score,
        min_overlap=args.min_overlap,
        max_ms=args.max_ms,
        reference=args.reference,
    )
    cfg.check()
    out = Path(args.out) if args.out else sidecar.default_path(root, "align")
    sidecar.check_writable(out, "align", args.overwrite, root)
    t0, c0 = time.perf_counter(), time.process_time()
    console.print(f"reading {root} ...", highlight=False)
    table = read_dataset(root, split=args.split)
    offsets, reference = estimate_offsets(table, cfg, args.seed, log=lambda m: console.print(m, highlight=False))
    doc = align_document(root, table, offsets, cfg, reference)
    sidecar.write(out, doc)
    s = doc["summary"]
    view = Table(title=f"camera-action offsets written to {out}")
    for c in ("episodes", "aligned", "weak", "no signal", "too short", "|offset| P50", "P90", f"> {cfg.max_ms:g} ms"):
        view.add_column(c, justify="right")

    def ms(key: str) -> str:
        return f"{s[key]:.0f} ms" if key in s else "-"

    over = s.get(f"share_over_{cfg.max_ms:g}ms")
    view.add_row(
        str(s["episodes"]),
        str(s["ok"]),
        str(s["weak"]),
        str(s["no-signal"]),
        str(s["too-short"]),
        ms("offset_ms_p50"),
        ms("offset_ms_p90"),
        "-" if over is None else f"{over:.0%}",
    )
    console.print(view)
    console.print(
        f"{time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} CPU-s. Train on the corrected view "
        f"with --data.align {'auto' if not args.out else out} (--data.align-mode weight: only down-weight)",
        highlight=False,
    )
