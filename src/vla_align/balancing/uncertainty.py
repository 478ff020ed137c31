"""Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla 2018; chapter 5.10):

    L = Σ_i L_i / (2σ_i²) + log σ_i = Σ_i [ exp(−s_i) L_i / 2 + s_i / 2 ],   s_i = log σ_i²

so the effective multiplier of term i is m_i = exp(−s_i)/2, and for a fixed L_i the optimum is
s_i = log L_i (σ_i² = L_i, m_i = 1/(2 L_i)). The network gets one backward pass of Σ_i m_i L_i with
m_i at its current value; s is then updated by its own Adam on the detached losses (the same
point of the joint objective, so this is joint gradient descent). A floor f_i clamps the
multiplier, m_i = max(exp(−s_i)/2, f_i), and s_i is projected back to s_i <= −log(2 f_i) after each
update, so the state and the applied multiplier agree.

Note: at the optimum m_i λ_i L_i = 1/2 for every term, so the priors λ_i cancel; floors are what
keeps a prior term from being silenced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .base import Balancer, LearnedStateMixin, trainable, weighted_backward
from .config import BALANCERS, BalancerConfig, BalancerName, check_lr


class UncertaintyBalancer(LearnedStateMixin, Balancer):
    """Learned s_i = log σ_i² per name (initial 0, m_i = 1/2); ``lr`` is its Adam's learning rate."""

    def __init__(self, names: Sequence[str], floors: Mapping[str, float] | None = None, lr: float = 0.025) -> None:
        super().__init__(names, floors)
        self.lr = lr
        self.log_var = nn.Parameter(torch.zeros(len(self.names)))  # s_i = log σ_i²
        self._project()

    def _s_max(self) -> Tensor:
        """Per name: the largest s_i whose multiplier exp(−s_i)/2 is still >= the floor (inf: no floor)."""
        return torch.tensor(
            [-math.log(2 * f) if f > 0 else math.inf for f in self.floors.values()], dtype=self.log_var.dtype
        ).to(self.log_var.device)

    @torch.no_grad()
    def _project(self) -> None:
        self.log_var.copy_(torch.minimum(self.log_var, self._s_max()))

    def multipliers(self) -> dict[str, float]:
        s = self.log_var.detach().tolist()
        return {n: max(math.exp(-s[i]) / 2, self.floors[n]) for i, n in enumerate(self.names)}

    def backward(self, losses: Mapping[str, Tensor], params: Iterable[Tensor], step: int) -> dict[str, float]:
        names = self.active(losses)
        every = self.multipliers()
        mult = {n: every[n] for n in names}
        weighted_backward({n: losses[n] for n in names}, mult, trainable(params))
        # s update: ∂/∂s_i [exp(−s_i) L_i / 2 + s_i / 2], on the detached losses of the active terms
        value = torch.zeros(len(self.names), dtype=self.log_var.dtype, device=self.log_var.device)
        active = torch.zeros(len(self.names), dtype=torch.bool, device=self.log_var.device)
        for n in names:
            i = self.names.index(n)
            value[i] = float(losses[n].detach())
            active[i] = True
        s = self.log_var
        objective = (torch.exp(-s) * value / 2 + s / 2)[active].sum()
        (grad,) = torch.autograd.grad(objective, [s])
        self.masked_step(s, grad, active)
        self._project()
        return mult

    def log_values(self) -> dict[str, float]:
        s = self.log_var.detach().tolist()
        out = {f"balance/weight/{n}": m for n, m in self.multipliers().items()}
        out.update({f"balance/sigma/{n}": math.exp(s[i] / 2) for i, n in enumerate(self.names)})
        return out


@BALANCERS.register("uncertainty")
@dataclass
class UncertaintyBalancerConfig(BalancerConfig):
    name: BalancerName = "uncertainty"
    lr: float = 0.025  # Adam learning rate of the s_i

    module = UncertaintyBalancer

    def __post_init__(self) -> None:
        super().__post_init__()
        check_lr(self.lr)
