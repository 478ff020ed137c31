"""GradNorm (Chen et al. 2018; chapter 5.10): learn task weights w_i so that the weighted
gradient norms follow the relative training rates.

    G_i = ‖w_i g_i‖                     g_i = ∇L_i over the shared parameters (see ``base``)
    r_i = (L_i(t)/L_i(0)) / mean_j (L_j(t)/L_j(0))       relative inverse training rate
    L_gn = Σ_i | G_i − Ḡ r_i^α |,       Ḡ = mean_j G_j   (Ḡ and the targets held constant)

At each step the network receives Σ_i w_i g_i with the current w; then w takes one step of its own
Adam on L_gn, is clamped positive and renormalised to Σ_i w_i = K over the terms present at this
step (K of them). Terms with no gradient on the shared tensors sit the update out (their weights
are held). Floors: a weight that would fall below its floor f_i is pinned there and the others
are rescaled to share K − Σ f.
L_i(0) is the loss at the first step term i is present (a term that starts late starts at w_i = 1).

The norms are taken over all shared tensors rather than the paper's last shared layer: a tri-modal
model has no single layer every objective passes through, and once the per-objective gradients
exist (they are needed for Σ_i w_i g_i anyway) their norms are the diagonal of the Gram matrix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import Balancer, LearnedStateMixin, PerObjectiveBalancer, VJPMode
from .config import BALANCERS, BalancerConfig, BalancerName, check_alpha, check_lr

MIN_WEIGHT = 1e-4  # weights are clamped to this before renormalising, so they stay positive


class GradNormBalancer(LearnedStateMixin, PerObjectiveBalancer):
    """Learned weights w_i (initial 1); ``alpha`` is the restoring-force exponent, ``lr`` w's Adam rate."""

    def __init__(
        self,
        names: Sequence[str],
        floors: Mapping[str, float] | None = None,
        alpha: float = 0.5,
        lr: float = 0.025,
        vjp: VJPMode = "auto",
    ) -> None:
        super().__init__(names, floors, vjp)
        self.alpha = alpha
        self.lr = lr
        k = len(self.names)
        self.weight = nn.Parameter(torch.ones(k))
        self.initial_loss: Tensor
        self.register_buffer("initial_loss", torch.full((k,), math.nan))  # L_i(0); NaN = not seen yet
        self._logs: dict[str, float] = {}

    @torch.no_grad()
    def normalise(self, names: Sequence[str], hold: Sequence[str] = ()) -> dict[str, float]:
        """Clamp the weights of ``names`` positive and rescale them to sum len(names), keeping those
        in ``hold`` as they are; a weight below its floor is pinned there and the rest rescaled."""
        idx = [self.names.index(n) for n in names]
        floors = [self.floors[n] for n in names]
        w = [max(float(self.weight[i]), MIN_WEIGHT) for i in idx]
        pinned = [n in hold for n in names]
        while True:
            free = [a for a in range(len(w)) if not pinned[a]]
            budget = len(w) - sum(w[a] for a in range(len(w)) if pinned[a])
            total = sum(w[a] for a in free)
            for a in free:
                w[a] = w[a] * budget / total if budget > 0 else floors[a]
            low = [a for a in free if w[a] < floors[a]]
            if not low:
                break
            for a in low:
                pinned[a], w[a] = True, floors[a]
        for i, value in zip(idx, w, strict=True):
            self.weight[i] = value
        return {n: float(self.weight[i]) for n, i in zip(names, idx, strict=True)}

    def mix(self, gram: Tensor, weights: list[float], step: int) -> list[float]:
        """The coefficients of the shared gradient for weights w: Σ_i w_i g_i."""
        return weights

    def coefficients(
        self, names: list[str], gram: Tensor, losses: Mapping[str, Tensor], step: int
    ) -> tuple[list[float], dict[str, float]]:
        idx = [self.names.index(n) for n in names]
        values = [float(losses[n].detach()) for n in names]
        for i, v in zip(idx, values, strict=True):
            if math.isnan(float(self.initial_loss[i])):
                self.initial_loss[i] = v
        mult = self.normalise(names)
        coef = self.mix(gram, [mult[n] for n in names], step)
        self.update(names, gram.diagonal().clamp_min(0).sqrt().tolist(), values)
        return coef, mult

    def update(self, names: list[str], norms: list[float], values: list[float]) -> None:
        """One Adam step of w on L_gn, then renormalisation over ``names``.

        Only terms with a non-zero gradient on the shared tensors take part (a policy loss whose
        inputs are detached reaches none: its G_i would be 0 whatever w_i, and it would drag Ḡ
        down); with fewer than two such terms w is left as it is.
        """
        norm_list = norms
        self._logs = {f"balance/grad_norm/{n}": norm_list[a] for a, n in enumerate(names)}
        part = [a for a in range(len(names)) if norm_list[a] > 0]
        ratio = {a: values[a] / max(float(self.initial_loss[self.names.index(names[a])]), 1e-12) for a in part}
        mean = sum(ratio.values()) / max(len(ratio), 1)  # L_i(t)/L_i(0) above, r_i below
        rel_list = [ratio[a] / mean if mean > 0 else 1.0 for a in part]
        for a, r in zip(part, rel_list, strict=True):
            self._logs[f"balance/loss_ratio/{names[a]}"] = r
        if len(part) < 2:
            return
        device = self.weight.device
        idx = torch.tensor([self.names.index(names[a]) for a in part], device=device)
        n = torch.tensor([norm_list[a] for a in part], dtype=self.weight.dtype, device=device)
        rel = torch.tensor(rel_list, dtype=self.weight.dtype, device=device)
        g = self.weight[idx] * n  # G_i = ‖w_i g_i‖
        target = g.detach().mean() * rel**self.alpha  # Ḡ r_i^α, constant
        objective = (g - target).abs().sum()
        if not torch.isfinite(objective):
            return
        (grad,) = torch.autograd.grad(objective, [self.weight])
        active = torch.zeros(len(self.names), dtype=torch.bool, device=device)
        active[idx] = True
        self.masked_step(self.weight, grad, active)
        self.normalise(names, hold=[names[a] for a in range(len(names)) if a not in part])

    def log_values(self) -> dict[str, float]:
        w = self.weight.detach().tolist()
        out = {f"balance/weight/{n}": w[i] for i, n in enumerate(self.names)}
        out.update(self._logs)
        return out


@BALANCERS.register("gradnorm")
@dataclass
class GradNormBalancerConfig(BalancerConfig):
    name: BalancerName = "gradnorm"
    alpha: float = 0.5  # restoring-force exponent (the chapter uses 0.5; 0 equalises gradient norms)
    lr: float = 0.025  # Adam learning rate of the weights w_i

    module: ClassVar[type[Balancer]] = GradNormBalancer

    def __post_init__(self) -> None:
        super().__post_init__()
        check_alpha(self.alpha)
        check_lr(self.lr)
