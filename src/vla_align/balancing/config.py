"""``loss.balancer``: which multi-objective balancer a run uses (chapter 5.10), and its settings.

``BALANCERS`` maps each name to its config class, a :class:`BalancerConfig` (the shared fields:
floors, conflict diagnostics) plus the balancer's own fields, which are its constructor's keyword
arguments (``alpha``, ``lr``, ``seed``); each variant lives beside its balancer.

Rule of thumb from the chapter: ``pcgrad`` first so the objectives stop stepping on each other,
then ``pcgrad_gradnorm`` (α = 0.5) for fine tuning; give prior/distillation terms a ``floors``
entry so an adaptive balancer cannot silence them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..config import VariantConfig, check_float, check_int, check_name, own_fields, resolve
from ..config import check_seed as check_config_seed
from ..errors import ConfigError
from ..registry import Registry
from .base import Balancer

# physical-prior and distillation terms: the chapter gives them a minimum weight ("保底权重")
PRIOR_TERMS = ("feasibility", "distill", "spectral", "spectral_recon")
BalancerName = Literal["fixed", "uncertainty", "gradnorm", "pcgrad", "pcgrad_gradnorm"]  # BALANCERS' names (tested)
WHERE = "loss.balancer"
BALANCERS: Registry[type[BalancerConfig]] = Registry("balancer")


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


def check_alpha(alpha: float) -> None:
    check_float(f"{WHERE}.alpha", alpha, 0.0, 5.0, why="0 equalises gradient norms; the chapter uses 0.5")


def check_lr(lr: float) -> None:
    check_float(f"{WHERE}.lr", lr, 0.0, 1.0, lo_open=True, why="default 0.025")


def check_seed(seed: int) -> None:
    check_config_seed(f"{WHERE}.seed", seed)


@dataclass
class BalancerConfig(VariantConfig):
    """The fields every balancer shares; ``name`` picks the balancer (and its config class) in ``BALANCERS``."""

    registry: ClassVar[Registry[Any]] = BALANCERS
    module: ClassVar[type[Balancer]]  # the balancer this config builds (set by each variant)

    name: BalancerName = "fixed"
    floors: dict[str, float] = field(default_factory=dict)  # minimum multiplier per loss name, each in [0, 1]
    conflict_every: int = 1000  # log gradient-conflict diagnostics every this many steps (0 = never)
    prior_floor: float = 0.1  # default floor of the prior terms (PRIOR_TERMS) unless ``floors`` names them

    def __post_init__(self) -> None:
        check_name(self, WHERE)
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
        check_int(f"{WHERE}.conflict_every", self.conflict_every, 0, why="steps between diagnostics, 0 turns it off")
        check_float(f"{WHERE}.prior_floor", self.prior_floor, 0.0, 1.0, why="0 = no default floor")

    def build(self, names: Sequence[str]) -> Balancer:
        """The balancer for a run whose loss terms are ``names`` (every term it can produce); the variant's
        own fields are the balancer's keyword arguments."""
        cfg = resolve(self)
        floors = {n: cfg.prior_floor for n in names if n in PRIOR_TERMS and cfg.prior_floor > 0}
        floors.update(cfg.floors)
        return cfg.module(names, floors=floors, **own_fields(cfg))

    def diagnose_at(self, step: int) -> bool:
        """True on the steps the training loop should call ``balancer.diagnose`` (step counted from 0)."""
        return self.conflict_every > 0 and step % self.conflict_every == 0
