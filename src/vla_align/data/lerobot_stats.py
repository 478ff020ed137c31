"""Feature statistics in LeRobot's layout, for meta/episodes (per episode) and meta/stats.json (whole data).

Every feature gets ``min max mean std count q01 q10 q50 q90 q99`` (LeRobot's order and quantiles). Numeric
features give one value per dimension, shape (D,) (a scalar feature (1,)); a camera gives one value per
channel in [0, 1], shape (3, 1, 1). ``count`` is ``[frames]``; ``std`` is the population standard deviation.

Unlike LeRobot, which estimates quantiles from a 5000-bin histogram and averages per-episode quantiles
weighted by frame count to get the dataset's, every value here is exact: quantiles are those of
``numpy.quantile`` (linear interpolation) over all frames of the episode or of the dataset. Images are
counted in per-channel 256-bin histograms, which hold uint8 values exactly, so they are never sampled.
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)  # q01 q10 q50 q90 q99
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)


def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Exact statistics of ``x`` (N,) or (N, D), N >= 1: each (D,) float64, ``count`` (1,) int64."""
    x = x.reshape(len(x), -1).astype(np.float64)  # (N, D)
    q = np.quantile(x, QUANTILES, axis=0)  # (5, D)
    out = {
        "min": x.min(0),
        "max": x.max(0),
        "mean": x.mean(0),
        "std": x.std(0),
        "count": np.array([len(x)], dtype=np.int64),
    }
    out.update(zip(QUANTILE_KEYS, q, strict=True))
    return out


class ChannelHistogram:
    """Per-channel value counts of uint8 RGB frames; exact statistics in [0, 1], shaped (3, 1, 1)."""

    def __init__(self) -> None:
        self.hist = np.zeros((3, 256), dtype=np.int64)  # (C, 256)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        """Count ``frames`` (N, H, W, 3) uint8."""
        for c in range(3):
            self.hist[c] += np.bincount(frames[..., c].ravel(), minlength=256)
        self.frames += len(frames)

    def merge(self, other: ChannelHistogram) -> None:
        self.hist += other.hist
        self.frames += other.frames

    def stats(self) -> dict[str, np.ndarray]:
        v = np.arange(256) / 255.0  # (256,) the value of each bin
        n = self.hist.sum(1)  # (C,)
        mean = (self.hist * v).sum(1) / n
        std = np.sqrt(np.maximum((self.hist * v**2).sum(1) / n - mean**2, 0.0))
        lo = np.array([v[np.nonzero(h)[0][0]] for h in self.hist])
        hi = np.array([v[np.nonzero(h)[0][-1]] for h in self.hist])
        values = {"min": lo, "max": hi, "mean": mean, "std": std}
        values.update(zip(QUANTILE_KEYS, _hist_quantiles(self.hist, v), strict=True))
        out = {k: values[k].reshape(3, 1, 1) for k in STAT_KEYS if k != "count"}
        return {**out, "count": np.array([self.frames], dtype=np.int64)}


def _hist_quantiles(hist: np.ndarray, v: np.ndarray) -> list[np.ndarray]:
    """``numpy.quantile`` (linear) of the values ``v`` counted ``hist`` (C, B) times: one (C,) per quantile."""
    out = []
    cum = np.cumsum(hist, axis=1)  # (C, B)
    n = cum[:, -1]  # (C,)
    for q in QUANTILES:
        pos = q * (n - 1)  # (C,) fractional rank of the quantile among the sorted values
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        at_lo = np.array([v[np.searchsorted(c, k, side="right")] for c, k in zip(cum, lo, strict=True)])
        at_hi = np.array([v[np.searchsorted(c, k, side="right")] for c, k in zip(cum, hi, strict=True)])
        out.append(at_lo + (pos - lo) * (at_hi - at_lo))
    return out


def to_lists(stats: dict[str, np.ndarray]) -> dict[str, list[object]]:
    """JSON / parquet-ready nested lists, in :data:`STAT_KEYS` order."""
    return {k: stats[k].tolist() for k in STAT_KEYS}
