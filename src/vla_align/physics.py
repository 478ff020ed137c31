"""Physical feasibility of action trajectories (chapter 5.3's reachability constraint).

Finite-difference kinematics of an action chunk x (..., T, A) sampled every dt seconds:
    v_t = (x_{t+1} − x_t) / dt,  a_t = (v_{t+1} − v_t) / dt,  j_t = (a_{t+1} − a_t) / dt
(for ``signal="velocity"`` x is already v, and only a and j are differentiated). A k-th difference is valid
only if all k + 1 of its input steps are. Per-dimension limits are percentiles of |derivative| over training
data (:func:`fit_limits`); samples are penalised for exceeding them (:func:`feasibility_penalty`) and scored
by a soft feasibility checker (:func:`reachability_teacher_logits`) that a student head can distil.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .config import check_float
from .errors import ConfigError, DatasetError

Signal = Literal["position", "velocity"]
DERIVATIVES: tuple[str, ...] = ("velocity", "acceleration", "jerk")


def kinematics(
    x: Tensor,  # (..., T, A)
    dt: float,
    mask: Tensor | None = None,  # (..., T) bool valid steps; None = all valid
    signal: Signal = "position",
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Velocity, acceleration and jerk by backward differences over the time axis (dim −2).

    Returns (values, masks) keyed by "velocity", "acceleration", "jerk". For a position signal the values
    are (..., T − 1 / T − 2 / T − 3, A); for a velocity signal, (..., T / T − 1 / T − 2, A). masks[k] is
    (..., T_k) bool: True where every input step of that difference is valid.
    """
    if dt <= 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    if signal not in ("position", "velocity"):
        raise ValueError(f"signal must be 'position' or 'velocity', got {signal!r}")
    m = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device) if mask is None else mask.bool()
    values: dict[str, Tensor] = {}
    masks: dict[str, Tensor] = {}
    cur, cur_m = x, m
    for i, name in enumerate(DERIVATIVES):
        if i > 0 or signal == "position":
            cur = (cur[..., 1:, :] - cur[..., :-1, :]) / dt  # (..., T' − 1, A)
            cur_m = cur_m[..., 1:] & cur_m[..., :-1]
        values[name], masks[name] = cur, cur_m
    return values, masks


@dataclass
class PhysicalLimits:
    """Per-dimension limits on |velocity|, |acceleration|, |jerk| (None = unconstrained)."""

    velocity: list[float] | None
    acceleration: list[float] | None
    jerk: list[float] | None
    dt: float
    signal: Signal = "position"  # what the trajectories these limits apply to hold
    percentile: float | None = None  # provenance when fitted

    def __post_init__(self) -> None:
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ConfigError(f"physical limits: dt must be > 0 seconds, got {self.dt}")
        if self.signal not in ("position", "velocity"):
            raise ConfigError(f"physical limits: signal must be 'position' or 'velocity', got {self.signal!r}")
        dims = set()
        for name in DERIVATIVES:
            lim = getattr(self, name)
            if lim is None:
                continue
            try:
                values = [float(v) for v in lim]
            except (TypeError, ValueError):
                values = []
            if not values or not all(math.isfinite(v) and v > 0 for v in values):
                raise ConfigError(f"physical limits: {name} must be a non-empty list of numbers > 0, got {lim!r}")
            setattr(self, name, values)
            dims.add(len(values))
        if len(dims) > 1:
            raise ConfigError(f"physical limits: velocity/acceleration/jerk have different lengths {sorted(dims)}")

    def items(self) -> list[tuple[str, list[float]]]:
        """The constrained derivatives as (name, per-dimension limits)."""
        return [(name, lim) for name in DERIVATIVES if (lim := getattr(self, name)) is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "velocity": self.velocity,
            "acceleration": self.acceleration,
            "jerk": self.jerk,
            "dt": self.dt,
            "signal": self.signal,
            "percentile": self.percentile,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "physical limits") -> PhysicalLimits:
        known = {"velocity", "acceleration", "jerk", "dt", "signal", "percentile"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        if "dt" not in data:
            raise ConfigError(f"{where}: missing 'dt' (seconds between steps)")
        try:
            return cls(
                velocity=data.get("velocity"),
                acceleration=data.get("acceleration"),
                jerk=data.get("jerk"),
                dt=float(data["dt"]),
                signal=data.get("signal", "position"),
                percentile=data.get("percentile"),
            )
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: 'dt' must be a number of seconds, got {data['dt']!r}") from None
        except ConfigError as exc:  # re-prefix with where the limits came from
            raise ConfigError(f"{where}: {str(exc).split(': ', 1)[-1]}") from None


def fit_limits(
    trajectories: Sequence[np.ndarray] | Tensor,  # list of (T_i, A) arrays, or padded (B, T, A)
    dt: float,
    percentile: float = 99.0,
    signal: Signal = "position",
    mask: Tensor | None = None,  # (B, T) bool, with a padded tensor
    min_limit: float = 1e-6,
) -> PhysicalLimits:
    """Per-dimension limit = the ``percentile`` of |derivative| over all valid steps (np.percentile, linear).

    Limits are floored at ``min_limit`` so that a dimension that never moves in training gets a tiny, finite
    limit (any motion of it counts as a violation) rather than zero.
    """
    if not 0 < percentile <= 100:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
    pooled: dict[str, list[np.ndarray]] = {name: [] for name in DERIVATIVES}
    if isinstance(trajectories, Tensor):
        batches: list[tuple[Tensor, Tensor | None]] = [(trajectories.detach().double(), mask)]
    else:
        batches = [(torch.as_tensor(np.asarray(t, dtype=np.float64)), None) for t in trajectories]
    for x, m in batches:
        values, masks = kinematics(x, dt, m, signal)
        for name in DERIVATIVES:
            pooled[name].append(values[name][masks[name]].abs().cpu().numpy())  # (N, A)
    limits: dict[str, list[float]] = {}
    for name in DERIVATIVES:
        data = np.concatenate(pooled[name], axis=0) if pooled[name] else np.zeros((0, 0))
        if len(data) == 0:
            raise DatasetError(
                f"cannot fit a {name} limit: no run of {DERIVATIVES.index(name) + 2} valid steps in the data"
            )
        limits[name] = np.maximum(np.percentile(data, percentile, axis=0), min_limit).tolist()
    return PhysicalLimits(**limits, dt=dt, signal=signal, percentile=percentile)


def fit_action_limits(
    trajectories: Sequence[np.ndarray], dt: float, percentile: float = 99.0, signal: Signal = "velocity"
) -> PhysicalLimits:
    """:func:`fit_limits` for evaluation limits on demonstrated actions, with one correction: a dimension
    whose ``percentile`` is (almost) zero for a derivative, because it changes on fewer than 1 % of the
    steps (a gripper command held open or closed and switched now and then), gets the largest change the
    expert ever made instead. Otherwise any change of it, even the expert's own switches, is a violation.
    """
    usual = fit_limits(trajectories, dt, percentile, signal)
    largest = fit_limits(trajectories, dt, 100.0, signal)
    merged = {
        name: [hi if lo < 1e-3 * hi else lo for lo, hi in zip(lim, getattr(largest, name), strict=True)]
        for name, lim in usual.items()
    }
    return PhysicalLimits(
        velocity=merged.get("velocity"),
        acceleration=merged.get("acceleration"),
        jerk=merged.get("jerk"),
        dt=dt,
        signal=signal,
        percentile=percentile,
    )


def _ratios(
    x: Tensor, limits: PhysicalLimits, mask: Tensor | None, signal: Signal | None
) -> list[tuple[str, Tensor, Tensor]]:
    """(name, |d| / limit (..., T_k, A), valid (..., T_k)) for each constrained derivative."""
    values, masks = kinematics(x, limits.dt, mask, signal or limits.signal)
    out = []
    for name, lim in limits.items():
        if len(lim) != x.shape[-1]:
            raise ValueError(f"{name} limits have {len(lim)} dims, the trajectory has {x.shape[-1]}")
        scale = torch.tensor(lim, dtype=x.dtype, device=x.device)  # (A,)
        out.append((name, values[name].abs() / scale, masks[name]))
    return out


def violations(x: Tensor, limits: PhysicalLimits, mask: Tensor | None = None) -> dict[str, Tensor]:
    """Per-derivative timelines (..., T) bool: True at step t if the difference ending at t exceeds its limit
    in any dimension (and is valid). The first k steps of a k-th difference are False; all derivatives share
    the time axis of x, ready for plotting.
    """
    out: dict[str, Tensor] = {}
    for name, ratio, valid in _ratios(x, limits, mask, None):
        over = (ratio > 1).any(-1) & valid  # (..., T_k)
        pad = x.shape[-2] - over.shape[-1]
        out[name] = torch.cat([torch.zeros((*over.shape[:-1], pad), dtype=torch.bool, device=x.device), over], -1)
    return out


def violation_rate(x: Tensor, limits: PhysicalLimits, mask: Tensor | None = None) -> dict[str, float]:
    """Fraction of valid difference steps where any dimension exceeds its limit, per derivative (NaN if none)."""
    out: dict[str, float] = {}
    for name, ratio, valid in _ratios(x, limits, mask, None):
        n = int(valid.sum())
        out[name] = float(((ratio > 1).any(-1) & valid).sum()) / n if n else float("nan")
    return out


def rms_jerk(x: Tensor, dt: float, mask: Tensor | None = None, signal: Signal = "position") -> float:
    """RMS jerk, sqrt(mean_t ‖j_t‖²) over valid steps (‖·‖ over action dims); the comfort measure."""
    values, masks = kinematics(x.detach(), dt, mask, signal)
    jerk, valid = values["jerk"], masks["jerk"]
    n = int(valid.sum())
    return math.sqrt(float(jerk.square().sum(-1)[valid].sum()) / n) if n else float("nan")


def feasibility_penalty(
    x: Tensor,  # (B, T, A)
    limits: PhysicalLimits,
    mask: Tensor | None = None,  # (B, T) bool
    signal: Signal | None = None,  # None = limits.signal
) -> Tensor:
    """Σ_{v,a,j} mean over valid steps of Σ_dims relu(|d| / limit − 1)²: exactly 0 inside the limits, smooth
    (C¹) at the boundary, quadratic in the relative excess outside. Scalar, differentiable in x.
    """
    total = x.sum() * 0.0  # keeps the graph when nothing is constrained or valid
    for _, ratio, valid in _ratios(x, limits, mask, signal):
        per_step = torch.relu(ratio - 1.0).square().sum(-1)  # (..., T_k)
        w = valid.to(x.dtype)
        total = total + (per_step * w).sum() / w.sum().clamp_min(1.0)
    return total


def reachability_teacher_logits(
    x: Tensor,  # (B, T, A)
    limits: PhysicalLimits,
    mask: Tensor | None = None,  # (B, T) bool
    signal: Signal | None = None,
    sharpness: float = 4.0,
) -> Tensor:
    """Soft "reachable" logit per sample (B,): sharpness · (1 − max_{derivative, valid step, dim} |d| / limit).

    Positive inside every limit, 0 on the boundary, negative when over; a sample with no valid difference
    scores +sharpness.
    """
    worst = torch.zeros(x.shape[:-2], dtype=x.dtype, device=x.device)  # (B,)
    for _, ratio, valid in _ratios(x, limits, mask, signal):
        r = ratio.amax(-1).masked_fill(~valid, 0.0)  # (B, T_k)
        worst = torch.maximum(worst, r.amax(-1) if r.shape[-1] else torch.zeros_like(worst))
    return sharpness * (1.0 - worst)


@dataclass
class PhysicsConfig:
    feasibility_weight: float = 0.0  # weight of feasibility_penalty on generated action chunks; 0 = off
    distill_weight: float = 0.0  # weight of the reachability distillation loss; 0 = off
    percentile: float = 99.0  # limits = this percentile of |derivative| over training trajectories
    distill_temperature: float = 2.0  # T in the softened teacher sigmoid(logit / T)
    limits: dict[str, Any] | None = field(default=None)  # PhysicalLimits.to_dict(); None = fit on training data

    def __post_init__(self) -> None:
        for name in ("feasibility_weight", "distill_weight"):
            check_float(f"loss.physics.{name}", getattr(self, name), 0.0, why="a loss weight, 0 = off")
        check_float(
            "loss.physics.percentile", self.percentile, 0.0, 100.0, lo_open=True, why="99 keeps rare spikes out"
        )
        check_float(
            "loss.physics.distill_temperature", self.distill_temperature, 0.0, lo_open=True, why="1 = no softening"
        )
        if self.limits is not None:
            if not isinstance(self.limits, dict):
                raise ConfigError(
                    "loss.physics.limits must be a mapping like PhysicalLimits.to_dict() (set it in a config file), "
                    f"or null to fit limits on the training data; got {self.limits!r}"
                )
            PhysicalLimits.from_dict(self.limits, where="loss.physics.limits")

    def physical_limits(self) -> PhysicalLimits | None:
        """The configured limits, or None when they are to be fitted on the training data."""
        return None if self.limits is None else PhysicalLimits.from_dict(self.limits, where="loss.physics.limits")
