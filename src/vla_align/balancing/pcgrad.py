"""PCGrad, "projecting conflicting gradients" (Yu et al. 2020; chapter 5.10), and PCGrad → GradNorm.

For each objective i, starting from g_i^PC = g_i, visit the other objectives j in a random order;
when ⟨g_i^PC, g_j⟩ < 0, remove the conflicting component,

    g_i^PC ← g_i^PC − ⟨g_i^PC, g_j⟩ / ‖g_j‖² · g_j        (g_j: the original, unprojected gradient)

and step along Σ_i g_i^PC. Only the shared tensors are projected (``base``). Guarantees: with two
objectives, ⟨g_1^PC, g_2^PC⟩ >= 0 and ⟨Σ g^PC, g_j⟩ >= 0 for both j; with K > 2, each g_i^PC has a
non-negative inner product with the *last* g_j of its order (later projections can reintroduce a
conflict with an earlier one). Without conflicts the result is the plain sum.

The order is drawn from a ``torch.Generator`` seeded by (seed, step), so it is reproducible and a
resumed run projects exactly as the uninterrupted one. Cost: every g_i^PC is a combination
Σ_k C_ik g_k of the originals, so the projections run on the K×K Gram matrix of the g_i and the
update is Σ_k c_k g_k, c = Σ_i C_i: the gradients are read twice (Gram, then the sum), not K² times.

``pcgrad_gradnorm`` (the chapter's rule of thumb, "PCGrad → GradNorm"): GradNorm's weights w_i
(measured on the unprojected g_i), then PCGrad on the weighted gradients w_i g_i, then the sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import PerObjectiveBalancer, VJPMode
from .config import BALANCERS, BalancerConfig, BalancerName, check_seed
from .gradnorm import GradNormBalancer, GradNormBalancerConfig


def projection_orders(k: int, seed: int, step: int) -> list[list[int]]:
    """For each of ``k`` objectives, a random order of the other k − 1, fixed by (seed, step)."""
    gen = torch.Generator().manual_seed((seed * 2**32 + step) % 2**63)
    orders = []
    for i in range(k):
        others = [j for j in range(k) if j != i]
        orders.append([others[p] for p in torch.randperm(len(others), generator=gen).tolist()])
    return orders


def pcgrad_coefficients(gram: Tensor, orders: Sequence[Sequence[int]]) -> Tensor:
    """(K, K) Gram matrix G_jk = ⟨g_j, g_k⟩ -> (K, K) C with g_i^PC = Σ_k C_ik g_k.

    Every projected gradient stays a combination of the original ones, and
    ⟨g_i^PC, g_j⟩ = Σ_k C_ik G_kj, so the whole sequence of projections runs on K×K numbers
    (float64, on the CPU): projecting onto g_j subtracts min(⟨g_i^PC, g_j⟩, 0) / G_jj from C_ij.
    """
    g = gram.detach().double().cpu()
    k = len(g)
    rows = []
    for i in range(k):
        c = torch.zeros(k, dtype=torch.float64)
        c[i] = 1.0
        for j in orders[i]:
            dot = float(c @ g[:, j])
            if dot < 0 and g[j, j] > 0:
                c[j] -= dot / float(g[j, j])
        rows.append(c)
    return torch.stack(rows) if rows else torch.zeros(0, 0, dtype=torch.float64)


def pcgrad_project(grads: Tensor, orders: Sequence[Sequence[int]]) -> Tensor:
    """(K, N) gradients -> (K, N) projected gradients g_i^PC, visiting ``orders[i]`` for row i."""
    coef = pcgrad_coefficients(grads @ grads.T, orders)
    return coef.to(dtype=grads.dtype, device=grads.device) @ grads


def pcgrad_weights(gram: Tensor, orders: Sequence[Sequence[int]], scale: Sequence[float] | None = None) -> list[float]:
    """c with Σ_i PC(s_i g_i) = Σ_k c_k g_k, from the Gram matrix of the g_i (scales s, default 1)."""
    s = torch.ones(len(gram), dtype=torch.float64) if scale is None else torch.tensor(scale, dtype=torch.float64)
    g = gram.detach().double().cpu()
    coef = pcgrad_coefficients(s[:, None] * g * s[None, :], orders).sum(dim=0)  # over the s_i g_i
    return (coef * s).tolist()


def pcgrad_sum(grads: Tensor, orders: Sequence[Sequence[int]], scale: Sequence[float] | None = None) -> Tensor:
    """Σ_i PC(s_i g_i) for (K, N) ``grads``: one Gram matrix, then one weighted sum of the rows."""
    coef = torch.tensor(pcgrad_weights(grads @ grads.T, orders, scale), dtype=grads.dtype, device=grads.device)
    return coef @ grads


class PCGradBalancer(PerObjectiveBalancer):
    """PCGrad over the shared tensors; every multiplier is 1 (floors, at most 1, never bind)."""

    def __init__(
        self, names: Sequence[str], floors: Mapping[str, float] | None = None, seed: int = 0, vjp: VJPMode = "auto"
    ) -> None:
        super().__init__(names, floors, vjp)
        self.seed = seed

    def coefficients(
        self, names: list[str], gram: Tensor, losses: Mapping[str, Tensor], step: int
    ) -> tuple[list[float], dict[str, float]]:
        return pcgrad_weights(gram, projection_orders(len(names), self.seed, step)), dict.fromkeys(names, 1.0)


class PCGradGradNormBalancer(GradNormBalancer):
    """Σ_i PC(w_i g_i): GradNorm weights, then PCGrad projection of the weighted gradients."""

    def __init__(
        self,
        names: Sequence[str],
        floors: Mapping[str, float] | None = None,
        alpha: float = 0.5,
        lr: float = 0.025,
        seed: int = 0,
        vjp: VJPMode = "auto",
    ) -> None:
        super().__init__(names, floors, alpha=alpha, lr=lr, vjp=vjp)
        self.seed = seed

    def mix(self, gram: Tensor, weights: list[float], step: int) -> list[float]:
        return pcgrad_weights(gram, projection_orders(len(weights), self.seed, step), scale=weights)


@BALANCERS.register("pcgrad")
@dataclass
class PCGradBalancerConfig(BalancerConfig):
    name: BalancerName = "pcgrad"
    seed: int = 0  # projection order: a generator seeded by (seed, step)

    module = PCGradBalancer

    def __post_init__(self) -> None:
        super().__post_init__()
        check_seed(self.seed)


@BALANCERS.register("pcgrad_gradnorm")
@dataclass
class PCGradGradNormBalancerConfig(GradNormBalancerConfig):
    name: BalancerName = "pcgrad_gradnorm"
    seed: int = 0  # projection order: a generator seeded by (seed, step)

    module = PCGradGradNormBalancer

    def __post_init__(self) -> None:
        super().__post_init__()
        check_seed(self.seed)
