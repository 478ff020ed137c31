"""Multi-objective balancing (chapter 5.10): fixed sum, uncertainty weighting, GradNorm, PCGrad,
PCGrad → GradNorm, and gradient-conflict diagnostics. See ``base`` for the interface and ``config``
for ``BALANCERS`` (name -> config class); importing this package registers every balancer."""

from .base import (
    VJP_STATUS,
    Balancer,
    PerObjectiveBalancer,
    per_objective_grads,
    reached_params,
    shared_gram,
    shared_mask,
)
from .config import BALANCERS, BalancerConfig, BalancerName
from .diagnostics import bin_edges, conflict_histogram, diagnose, gradient_cosines
from .fixed import FixedBalancer, FixedBalancerConfig
from .gradnorm import GradNormBalancer, GradNormBalancerConfig
from .pcgrad import (
    PCGradBalancer,
    PCGradBalancerConfig,
    PCGradGradNormBalancer,
    PCGradGradNormBalancerConfig,
    pcgrad_coefficients,
    pcgrad_project,
    pcgrad_sum,
    pcgrad_weights,
    projection_orders,
)
from .uncertainty import UncertaintyBalancer, UncertaintyBalancerConfig

__all__ = [
    "BALANCERS",
    "VJP_STATUS",
    "Balancer",
    "BalancerConfig",
    "BalancerName",
    "FixedBalancer",
    "FixedBalancerConfig",
    "GradNormBalancer",
    "GradNormBalancerConfig",
    "PCGradBalancer",
    "PCGradBalancerConfig",
    "PCGradGradNormBalancer",
    "PCGradGradNormBalancerConfig",
    "PerObjectiveBalancer",
    "UncertaintyBalancer",
    "UncertaintyBalancerConfig",
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
