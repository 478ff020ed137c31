"""Simulators behind one seam (:mod:`vla_align.sim.base`): the registry, and the built-in BabyAI
and Meta-World packages, which register themselves on import."""

from . import babyai, metaworld
from .base import (
    SIMULATORS,
    DataConfig,
    EpisodeResult,
    EvalContext,
    SimConfig,
    Simulator,
    evaluate_closed_loop,
    evaluate_policy,
    get_simulator,
    register_simulator,
    simulator_for,
)

__all__ = [
    "SIMULATORS",
    "DataConfig",
    "EpisodeResult",
    "EvalContext",
    "SimConfig",
    "Simulator",
    "babyai",
    "evaluate_closed_loop",
    "evaluate_policy",
    "get_simulator",
    "metaworld",
    "register_simulator",
    "simulator_for",
]
