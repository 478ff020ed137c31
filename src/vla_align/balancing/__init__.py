"""Multi-objective balancing (chapter 5.10): fixed sum, uncertainty weighting, GradNorm, PCGrad,
PCGrad → GradNorm, and gradient-conflict diagnostics. See ``base`` for the interface."""

from .base import (
    BALANCERS,
    VJP_STATUS,
    Balancer,
    PerObjectiveBalancer,
    per_objective_grads,
    reached_params,
    shared_gram,
    shared_mask,
)
from .config import BalancerConfig, BalancerName
from .diagnostics import bin_edges, conflict_histogram, diagnose, gradient_cosines
from .fixed import FixedBalancer
from .gradnorm import GradNormBalancer
from .pcgrad import (
    PCGradBalancer,
    PCGradGradNormBalancer,
    pcgrad_coefficients,
    pcgrad_project,
    pcgrad_sum,
    pcgrad_weights,
    projection_orders,
)
from .uncertainty import UncertaintyBalancer

__all__ = [
    "BALANCERS",
    "VJP_STATUS",
    "Balancer",
    "BalancerConfig",
    "BalancerName",
    "FixedBalancer",
    "GradNormBalancer",
    "PCGradBalancer",
    "PCGradGradNormBalancer",
    "PerObjectiveBalancer",
    "UncertaintyBalancer",
    "bin_edges",
    "conflict_histogram",
    "diagnose",
    "gradient_cosines",
    "pcgrad_coefficients",
    "pcgrad_project",
    "pcgrad_sum",
    "pcgrad_weights",
    "per_objective_grads",
    "projection_orders",
    "reached_params",
    "shared_gram",
    "shared_mask",
]
