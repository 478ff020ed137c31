"""The fast baseline: one backward pass of the plain sum, g = Σ_i ∇L_i (multiplier 1 each).

The losses arrive already multiplied by their config priors λ_i, so this is the usual
L = Σ_i λ_i L_i. Floors are at most 1 (BalancerConfig), so they never bind here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import Tensor

from .base import Balancer, trainable, weighted_backward
from .config import BALANCERS, BalancerConfig, BalancerName


class FixedBalancer(Balancer):
    """g = Σ_i ∇L_i with one backward pass; returns 1.0 for every term."""

    def backward(self, losses: Mapping[str, Tensor], params: Iterable[Tensor], step: int) -> dict[str, float]:
        names = self.active(losses)
        mult = dict.fromkeys(names, 1.0)
        weighted_backward({n: losses[n] for n in names}, mult, trainable(params))
        return mult


@BALANCERS.register("fixed")
@dataclass
class FixedBalancerConfig(BalancerConfig):
    name: BalancerName = "fixed"
    module = FixedBalancer
