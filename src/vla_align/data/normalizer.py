"""Per-dimension action (or state) normalisation fitted on the training split (chapter 5.3's unit normalisation).

Every mode is an affine map per dimension, y = (x − offset) / scale, inverted by x = y · scale + offset:

=============  ==========================  ===========================  ==============================
mode           offset                      scale                        training data lands on
=============  ==========================  ===========================  ==============================
``mean_std``   mean                        std                          zero mean, unit variance
``min_max``    (max + min) / 2             (max − min) / 2              [−1, 1] exactly
``percentile`` (q99 + q01) / 2             (q99 − q01) / 2              1st → −1, 99th percentile → +1
=============  ==========================  ===========================  ==============================

A dimension whose scale is <= ``eps`` (default 1e-6; a constant dimension, e.g. a gripper that never
moves in the data) gets scale 1 instead: it is only centred, never divided by a near-zero number, so
normalising a constant dimension gives 0 and unnormalising gives the constant back (both up to the
float32 rounding of the stored statistics), and noise on it at run time is not blown up.

All statistics (mean, std, min, max, q01, q99; each (A,)) are registered buffers, so they travel in
``state_dict`` / model.safetensors and a checkpoint alone can act; offset and scale are recomputed from
them on each call. ``mode``, ``eps``, ``names`` and ``units`` are plain attributes (put them in the
config JSON; :meth:`ActionNormalizer.meta` returns them).

Statistics come from :meth:`ActionNormalizer.fit` (an (N, A) array of training actions; std is the
population std, percentiles are ``np.percentile``'s linear interpolation) or from
:meth:`ActionNormalizer.from_stats` (a LeRobot ``meta/stats.json`` feature: ``mean``/``std``/``min``/``max``
lists, and ``q01``/``q99`` when the writer stored them; min/max stand in for missing percentiles).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError, DatasetError
from .row_checks import MAX_ABS_VALUE

NormMode = Literal["mean_std", "min_max", "percentile"]
STAT_KEYS: tuple[str, ...] = ("mean", "std", "min", "max", "q01", "q99")

__all__ = ["STAT_KEYS", "ActionNormalizer", "NormMode"]


class ActionNormalizer(nn.Module):
    """y = (x − offset) / scale per dimension of the last axis; see the module docstring for the modes."""

    mean: Tensor
    std: Tensor
    min: Tensor
    max: Tensor
    q01: Tensor
    q99: Tensor

    def __init__(
        self,
        dim: int,
        mode: NormMode = "mean_std",
        names: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
        eps: float = 1e-6,
    ) -> None:
        """An identity normaliser for ``dim`` dimensions (mean 0, std 1, bounds ±1), to fill by fitting
        or by ``load_state_dict``."""
        super().__init__()
        if dim < 1:
            raise ConfigError(f"normalizer dim must be >= 1 (the action size), got {dim}")
        if mode not in get_args(NormMode):
            raise ConfigError(f"normalizer mode must be one of {', '.join(get_args(NormMode))}, got {mode!r}")
        if not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"normalizer eps must be > 0 (default 1e-6), got {eps}")
        self.dim, self.mode, self.eps = dim, mode, float(eps)
        self.names = self._labels(names, "names")
        self.units = self._labels(units, "units")
        for key, value in zip(STAT_KEYS, (0.0, 1.0, -1.0, 1.0, -1.0, 1.0), strict=True):
            self.register_buffer(key, torch.full((dim,), value))

    def _labels(self, labels: Sequence[str] | None, what: str) -> list[str]:
        if not labels:
            return []
        out = [str(x) for x in labels]
        if len(out) != self.dim:
            raise ConfigError(f"normalizer {what} has {len(out)} entries for {self.dim} dimensions; give one each")
        return out

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        actions: np.ndarray | Tensor,  # (N, A) or (..., A) training-split actions
        mode: NormMode = "mean_std",
        names: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
        eps: float = 1e-6,
        what: str = "actions",
    ) -> ActionNormalizer:
        """Mean, population std, min, max and the 1st / 99th percentiles per dimension, computed in float64
        (stored in float32). ``what`` names the data in error messages (e.g. ``"observation.state"``)."""
        x = actions.detach().cpu().double().numpy() if isinstance(actions, Tensor) else np.asarray(actions, np.float64)
        if x.ndim < 1 or x.size == 0:
            raise DatasetError(f"normalizer fit: actions must be a non-empty (N, A) array, got shape {x.shape}")
        x = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x[:, None]  # (N, A)
        if not np.isfinite(x).all():
            r, d = (int(i[0]) for i in np.nonzero(~np.isfinite(x)))
            raise DatasetError(
                f"normalizer fit: {what} row {r} dimension {d} is {x[r, d]} (NaN or inf); clean the data first"
            )
        if np.abs(x).max() > MAX_ABS_VALUE:
            r, d = (int(i[0]) for i in np.nonzero(np.abs(x) > MAX_ABS_VALUE))
            raise DatasetError(
                f"normalizer fit: {what} row {r} dimension {d} is {x[r, d]:g}, beyond ±{MAX_ABS_VALUE:.2g} where "
                "float32 statistics (the variance) overflow; rescale or clean the data first"
            )
        stats = {
            "mean": x.mean(0),
            "std": x.std(0),
            "min": x.min(0),
            "max": x.max(0),
            "q01": np.percentile(x, 1.0, axis=0),
            "q99": np.percentile(x, 99.0, axis=0),
        }
        norm = cls(x.shape[1], mode=mode, names=names, units=units, eps=eps)
        norm.set_stats(stats)
        return norm

    @classmethod
    def from_stats(
        cls,
        stats: Mapping[str, Any],
        key: str = "action",
        mode: NormMode = "mean_std",
        names: Sequence[str] | None = None,
        units: Sequence[str] | None = None,
        eps: float = 1e-6,
    ) -> ActionNormalizer:
        """From LeRobot ``meta/stats.json``: the whole file ({feature: {mean, std, min, max, count, ...}})
        with ``key`` naming the feature, or one feature's dict directly.

        ``q01`` / ``q99`` are read when present; otherwise min / max stand in for them.
        """
        feature = stats if "mean" in stats else stats.get(key)
        if not isinstance(feature, Mapping):
            known = ", ".join(sorted(str(k) for k in stats))
            raise DatasetError(f"stats: no feature {key!r} (known: {known}); pass key= the action feature's name")
        missing = [k for k in ("mean", "std", "min", "max") if k not in feature]
        if missing:
            raise DatasetError(f"stats[{key!r}] lacks {', '.join(missing)}; LeRobot stats carry mean/std/min/max")
        arrays: dict[str, np.ndarray] = {}
        for k in STAT_KEYS:
            src = k if k in feature else {"q01": "min", "q99": "max"}.get(k, k)
            try:
                arrays[k] = np.asarray(feature[src], dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise DatasetError(f"stats[{key!r}][{src!r}] is {feature[src]!r}; expected a list of numbers") from None
        dims = {len(v) for v in arrays.values()}
        if len(dims) != 1:
            raise DatasetError(f"stats[{key!r}]: mean/std/min/max/q01/q99 have different lengths {sorted(dims)}")
        norm = cls(dims.pop(), mode=mode, names=names, units=units, eps=eps)
        norm.set_stats(arrays)
        return norm

    def set_stats(self, stats: Mapping[str, np.ndarray | Tensor | Sequence[float]]) -> None:
        """Overwrite the buffers named in ``stats`` (any of STAT_KEYS), each a length-A vector."""
        for k, v in stats.items():
            if k not in STAT_KEYS:
                raise ConfigError(f"normalizer stats: unknown key {k!r}; known: {', '.join(STAT_KEYS)}")
            t = torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(-1)
            if len(t) != self.dim:
                raise DatasetError(f"normalizer stats[{k!r}] has {len(t)} values for {self.dim} dimensions")
            if not bool(torch.isfinite(t).all()):
                raise DatasetError(f"normalizer stats[{k!r}] contains NaN or inf")
            if not bool(torch.isfinite(t.to(getattr(self, k).dtype)).all()):
                raise DatasetError(
                    f"normalizer stats[{k!r}] = {t.tolist()} overflows {getattr(self, k).dtype}; rescale the data"
                )
            if k == "std" and bool((t < 0).any()):
                raise DatasetError("normalizer stats['std'] must be >= 0")
            getattr(self, k).copy_(t)

    # --- the map ------------------------------------------------------------------------------

    def offset_scale(self) -> tuple[Tensor, Tensor]:
        """(A,) offset and (A,) scale of the current mode, with scales <= eps replaced by 1."""
        if self.mode == "mean_std":
            offset, scale = self.mean, self.std
        elif self.mode == "min_max":
            offset, scale = (self.max + self.min) / 2, (self.max - self.min) / 2
        else:
            offset, scale = (self.q99 + self.q01) / 2, (self.q99 - self.q01) / 2
        return offset, torch.where(scale > self.eps, scale, torch.ones_like(scale))

    def _check(self, x: Tensor, name: str) -> None:
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"{name} must be (..., {self.dim}) (one value per action dimension), got {tuple(x.shape)}")

    def normalize(self, x: Tensor) -> Tensor:
        """(..., A) raw -> (..., A) normalised, in x's dtype."""
        self._check(x, "x")
        offset, scale = self.offset_scale()
        return (x - offset.to(x.dtype)) / scale.to(x.dtype)

    def unnormalize(self, y: Tensor) -> Tensor:
        """(..., A) normalised -> (..., A) raw, in y's dtype."""
        self._check(y, "y")
        offset, scale = self.offset_scale()
        return y * scale.to(y.dtype) + offset.to(y.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.normalize(x)

    def meta(self) -> dict[str, Any]:
        """The non-buffer settings, for config.json: rebuild with ``ActionNormalizer(**meta)`` then load buffers."""
        return {
            "dim": self.dim,
            "mode": self.mode,
            "names": list(self.names),
            "units": list(self.units),
            "eps": self.eps,
        }

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mode={self.mode!r}, eps={self.eps:g}"
