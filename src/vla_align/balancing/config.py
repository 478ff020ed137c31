"""``loss.balancer``: which multi-objective balancer a run uses (chapter 5.10), and its settings.

Rule of thumb from the chapter: ``pcgrad`` first so the objectives stop stepping on each other,
then ``pcgrad_gradnorm`` (α = 0.5) for fine tuning; give prior/distillation terms a ``floors``
entry so an adaptive balancer cannot silence them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from . import fixed, gradnorm, pcgrad, uncertainty  # noqa: F401  (register the balancers)
from .base import BALANCERS, Balancer

# physical-prior and distillation terms: the chapter gives them a minimum weight ("保底权重")
PRIOR_TERMS = ("feasibility", "distill", "spectral", "spectral_recon")
BalancerName = Literal["fixed", "uncertainty", "gradnorm", "pcgrad", "pcgrad_gradnorm"]


def _parse_floors(value: object) -> dict[str, float]:
    """A mapping, or the command-line form "name=0.1,other=0.2"."""
    if isinstance(value, str):
        out: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, number = item.partition("=")
            try:
                out[name.strip()] = float(number)
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise ConfigError(f"loss.balancer.floors: cannot read {item!r}; write name=value[,name=value...]")
        return out
    if not isinstance(value, dict):
        raise ConfigError(f"loss.balancer.floors must map loss names to floors, got {value!r}")
    return dict(value)


@dataclass
class BalancerConfig:
    name: BalancerName = "fixed"
    alpha: float = 0.5  # GradNorm restoring-force exponent (the chapter uses 0.5; 0 equalises gradient norms)
    lr: float = 0.025  # Adam learning rate of the learned weights (GradNorm w_i, uncertainty s_i)
    floors: dict[str, float] = field(default_factory=dict)  # minimum multiplier per loss name, each in [0, 1]
    conflict_every: int = 1000  # log gradient-conflict diagnostics every this many steps (0 = never)
    seed: int = 0  # PCGrad projection order: a generator seeded by (seed, step)
    prior_floor: float = 0.1  # default floor of the prior terms (PRIOR_TERMS) unless ``floors`` names them

    def __post_init__(self) -> None:
        if self.name not in BALANCERS:
            raise ConfigError(f"loss.balancer.name {self.name!r} is unknown; use one of {', '.join(BALANCERS.names())}")
        if not (math.isfinite(self.alpha) and 0.0 <= self.alpha <= 5.0):
            raise ConfigError(
                f"loss.balancer.alpha must be in [0, 5] (0 equalises gradient norms; the chapter uses 0.5), "
                f"got {self.alpha}"
            )
        if not 0.0 < self.lr <= 1.0:
            raise ConfigError(f"loss.balancer.lr must be in (0, 1] (default 0.025), got {self.lr}")
        self.floors = _parse_floors(self.floors)
        for key, value in self.floors.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"loss.balancer.floors keys must be loss names, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"loss.balancer.floors.{key} must be a number in [0, 1] (a minimum multiplier; "
                    f"weights average 1), got {value!r}"
                )
            self.floors[key] = float(value)
        if self.conflict_every < 0:
            raise ConfigError(f"loss.balancer.conflict_every must be >= 0 (0 turns it off), got {self.conflict_every}")
        if not 0.0 <= self.prior_floor <= 1.0:
            raise ConfigError(
                f"loss.balancer.prior_floor must be in [0, 1] (0 = no default floor), got {self.prior_floor}"
            )
        if self.seed < 0:
            raise ConfigError(f"loss.balancer.seed must be >= 0, got {self.seed}")

    def build(self, names: Sequence[str]) -> Balancer:
        """The balancer for a run whose loss terms are ``names`` (every term it can produce)."""
        cls = BALANCERS.get(self.name)
        kwargs = {f: getattr(self, f) for f in cls.config_fields}
        floors = {n: self.prior_floor for n in names if n in PRIOR_TERMS and self.prior_floor > 0}
        floors.update(self.floors)
        return cls(names, floors=floors, **kwargs)

    def diagnose_at(self, step: int) -> bool:
        """True on the steps the training loop should call ``balancer.diagnose`` (step counted from 0)."""
        return self.conflict_every > 0 and step % self.conflict_every == 0
