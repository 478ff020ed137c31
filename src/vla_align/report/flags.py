"""Honesty checks for the report: which health indicators apply to a run, and which contrastive pairs
are not learning.

* Applicability: γ_VA (0.1–1 Hz coherence of the image with continuous motion) does not apply to discrete
  actions nor to turn-based data (below :data:`TURN_BASED_FPS`, where the band reaches past the Nyquist
  frequency); the video–action offset does not apply to turn-based data (no sub-step timing).
* Chance pairs: InfoNCE with a batch of B has loss log B at chance (uniform logits, also with grouped
  positives), so a pair whose training loss, averaged over the last :data:`TAIL_FRACTION` of the logged
  steps, stays at or above :data:`CHANCE_FRACTION` · log B is not learning; so is one whose MI bound
  (log N − L) is ≤ 0 over that tail. One whose MI bound is ≤ 0 on the held-out split alone learns the
  training batches but does not generalise (a milder flag).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..modalities import PAIRS

TURN_BASED_FPS = 5.0  # below this control rate the data is turn-based (the offset needs sub-step timing)
CHANCE_FRACTION = 0.95  # loss >= 0.95 * log B over the tail: at chance
TAIL_FRACTION = 0.10  # the last 10 % of the logged training steps


@dataclass(frozen=True)
class Applicability:
    """What decides whether γ_VA and the offset apply: the action kind and the control rate (Hz)."""

    discrete: bool
    fps: float | None

    @property
    def turn_based(self) -> bool:
        return self.fps is not None and self.fps < TURN_BASED_FPS

    def coherence_reason(self, t: Mapping[str, str]) -> str:
        """Why γ_VA does not apply ("" when it does)."""
        reasons = []
        if self.discrete:
            reasons.append(t["na_discrete"])
        if self.turn_based and self.fps is not None:
            reasons.append(t["na_turn_based_coh"].format(fps=self.fps, nyquist=self.fps / 2))
        return t["reason_sep"].join(reasons)

    def offset_reason(self, t: Mapping[str, str]) -> str:
        """Why the video–action offset does not apply ("" when it does)."""
        if self.turn_based and self.fps is not None:
            return t["na_turn_based_offset"].format(fps=self.fps)
        return ""


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _dataset_fps(path: str) -> float | None:
    """``fps`` from the dataset's meta/info.json when it is still on disk."""
    info = Path(path) / "meta" / "info.json" if path else None
    if info is None or not info.is_file():
        return None
    try:
        return _positive(json.loads(info.read_text()).get("fps"))
    except (OSError, ValueError, AttributeError):
        return None


def applicability(config: Mapping[str, Any], health_fps: float | None = None) -> Applicability:
    """From config.json's dataset section (action_spec kind; control_fps / fps, else the dataset's
    meta/info.json) and the fps the health indicators were computed at, when they were."""
    dataset = config.get("dataset") or {}
    info = dataset.get("info") or {}
    spec = info.get("action_spec") or {}
    fps = _positive(health_fps) or _positive(info.get("control_fps")) or _positive(info.get("fps"))
    if fps is None:
        fps = _dataset_fps(str(dataset.get("path") or ""))
    return Applicability(discrete=spec.get("kind") == "discrete", fps=fps)


@dataclass(frozen=True)
class PairFlag:
    """A contrastive pair that is not learning, and the numbers that say so."""

    pair: str
    loss: float | None  # mean training loss over the tail
    log_b: float | None  # log of the training batch size: the loss at chance
    mi_train: float | None  # mean MI bound over the tail
    mi_heldout: float | None  # MI bound on the held-out split
    reasons: tuple[str, ...]  # "chance", "mi_train", "mi_heldout"

    @property
    def learning(self) -> bool:
        """Whether it learns on the training batches (flagged for the held-out split alone: it does not
        generalise)."""
        return not {"chance", "mi_train"} & set(self.reasons)


def tail_mean(history: Sequence[Mapping[str, Any]], key: str, fraction: float = TAIL_FRACTION) -> float | None:
    """Mean of ``key`` over the records in the last ``fraction`` of its logged steps (at least the last)."""
    points = [
        (float(r["step"]), float(v))
        for r in history
        if isinstance(v := r.get(key), int | float) and math.isfinite(v) and isinstance(r.get("step"), int | float)
    ]
    if not points:
        return None
    first, last = min(p[0] for p in points), max(p[0] for p in points)
    cutoff = last - fraction * (last - first)
    tail = [v for s, v in points if s >= cutoff]
    return sum(tail) / len(tail)


def pair_flags(
    history: Sequence[Mapping[str, Any]], batch_size: Any, heldout_mi: Mapping[str, float] | None = None
) -> list[PairFlag]:
    """The pairs whose tail loss is ≥ :data:`CHANCE_FRACTION` · log B or whose MI bound is ≤ 0 (tail of
    training or held-out split); pairs that learn are left out."""
    size = _positive(batch_size)
    log_b = math.log(size) if size is not None and size > 1 else None
    flags = []
    for pair in PAIRS:
        loss = tail_mean(history, f"loss/{pair}")
        mi_train = tail_mean(history, f"health/mi_bound/{pair}")
        mi_heldout = (heldout_mi or {}).get(pair)
        reasons = []
        if loss is not None and log_b is not None and loss >= CHANCE_FRACTION * log_b:
            reasons.append("chance")
        if mi_train is not None and mi_train <= 0:
            reasons.append("mi_train")
        if mi_heldout is not None and math.isfinite(mi_heldout) and mi_heldout <= 0:
            reasons.append("mi_heldout")
        if reasons:
            flags.append(PairFlag(pair, loss, log_b, mi_train, mi_heldout, tuple(reasons)))
    return flags
