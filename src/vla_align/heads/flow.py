"""``flow``: flow matching over the whole action chunk, non-autoregressive (the SmolVLA / π0 recipe).

Conventions (t = 1 is pure noise, t = 0 is the data):

    x_t = t · ε + (1 − t) · a          ε ~ N(0, I) (B, T, A), a the (normalised) expert chunk
    u   = dx_t/dt = ε − a               the regression target of the velocity network v(x_t, t, cond)
    loss = mean over valid (t, a) of (v − u)²

Training times: t = time_min + (1 − time_min) · s with s ~ Beta(time_alpha, 1) (SmolVLA: Beta(1.5, 1),
time_min = 0.001, i.e. t ∈ [0.001, 1)); density ∝ s^(α−1) puts more samples near the noise end t = 1.
Beta(α, 1) is sampled exactly by inverse CDF, s = U^(1/α), so a ``torch.Generator`` controls it.

Sampling integrates dx/dt = v from t = 1 (x = ε) down to t = 0 with ``steps`` uniform Euler steps,
x ← x − Δ · v(x, t), t ← t − Δ, Δ = 1 / steps (:func:`euler_integrate`). For a single data point a*
the optimal field is v*(x, t) = (x − a*) / t, whose trajectories are straight lines, so Euler lands on
a* exactly whatever the number of steps: the unit tests use this to pin the signs.

The velocity network is an MLP over [flattened x_t (T·A); sinusoidal embedding of t; cond] (cheap on
a CPU); padded steps of x_t are fed as they are and only masked in the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_float, check_int
from ..errors import ConfigError
from .base import HEADS, WHERE, ActionHead, HeadConfig, HeadName, masked_mean, mlp

__all__ = ["FlowHead", "FlowHeadConfig", "euler_integrate", "sinusoidal_embedding"]


def sinusoidal_embedding(t: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Tensor:
    """(B,) times in [0, 1] -> (B, dim) [sin(2π t / p_i), cos(2π t / p_i)], periods p_i geometric in
    [min_period, max_period] (π0's choice: fine enough to tell t = 0.001 from 0)."""
    frac = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float64)
    period = min_period * (max_period / min_period) ** frac  # (dim / 2,)
    angle = (2 * math.pi / period)[None, :] * t.double()[:, None]  # (B, dim / 2)
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(t.dtype)  # (B, dim)


def euler_integrate(velocity: Callable[[Tensor, Tensor], Tensor], noise: Tensor, steps: int) -> Tensor:
    """Integrate dx/dt = velocity(x, t) from x = noise at t = 1 to t = 0 in ``steps`` Euler steps.

    ``velocity`` gets x (B, ...) and t as a (B,) tensor of the current time; returns x at t = 0.
    """
    x, dt = noise, 1.0 / steps
    for i in range(steps):
        t = torch.full((len(x),), 1.0 - i * dt, dtype=x.dtype, device=x.device)  # (B,)
        x = x - dt * velocity(x, t)
    return x


class FlowHead(ActionHead):
    cfg: FlowHeadConfig

    def __init__(self, cfg: FlowHeadConfig, cond_dim: int) -> None:
        super().__init__(cfg, cond_dim)
        flat = cfg.chunk_len * cfg.action_dim
        self.cond_norm = nn.LayerNorm(cond_dim)
        self.net = mlp(flat + cfg.time_dim + cond_dim, cfg.hidden, flat, cfg.depth)

    def velocity(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """v(x_t, t, cond): x (B, T, A), t (B,), cond (B, D) -> (B, T, A)."""
        temb = sinusoidal_embedding(t, self.cfg.time_dim).to(x.dtype)  # (B, E)
        h = torch.cat([x.flatten(1), temb, self.cond_norm(cond)], dim=-1)  # (B, T·A + E + D)
        out: Tensor = self.net(h).view_as(x)  # (B, T, A)
        return out

    def sample_time(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> Tensor:
        """(n,) training times t = time_min + (1 − time_min) · U^(1 / time_alpha), U ~ Uniform[0, 1)."""
        u = torch.rand(n, generator=generator, device=device)
        return self.cfg.time_min + (1 - self.cfg.time_min) * u.pow(1.0 / self.cfg.time_alpha)

    @staticmethod
    def interpolate(action: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """x_t = t · noise + (1 − t) · action and the target velocity u = noise − action; t is (B,)."""
        tt = t.view(-1, *([1] * (action.ndim - 1))).to(action.dtype)  # (B, 1, 1)
        return tt * noise + (1 - tt) * action, noise - action

    def loss(self, cond: Tensor, target: Tensor, mask: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        target = self.check_inputs(cond, target, mask)  # (B, T, A)
        noise = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
        t = self.sample_time(len(target), generator, target.device)  # (B,)
        x_t, u = self.interpolate(target, noise, t)  # (B, T, A) each
        return masked_mean((self.velocity(x_t, t, cond) - u).square(), mask)

    @torch.no_grad()
    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self.check_cond(cond)
        shape = (len(cond), self.chunk_len, self.action_dim)
        noise = torch.randn(shape, generator=generator, device=cond.device, dtype=cond.dtype)  # x at t = 1
        return euler_integrate(lambda x, t: self.velocity(x, t, cond), noise, self.cfg.steps)  # (B, T, A)


@HEADS.register("flow")
@dataclass
class FlowHeadConfig(HeadConfig):
    name: HeadName = "flow"
    steps: int = 10  # Euler steps from noise (t = 1) to actions (t = 0)
    time_alpha: float = 1.5  # training times: t = time_min + (1 − time_min) · s, s ~ Beta(time_alpha, 1)
    time_min: float = 0.001  # smallest training time t (see time_alpha)
    time_dim: int = 64  # sinusoidal time embedding size (even)

    module = FlowHead

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(f"{WHERE}.steps", self.steps, 1, 1000, why="Euler steps; SmolVLA uses 10")
        check_float(f"{WHERE}.time_alpha", self.time_alpha, 0.0, lo_open=True, why="SmolVLA: 1.5")
        check_float(f"{WHERE}.time_min", self.time_min, 0.0, 1.0, hi_open=True, why="SmolVLA: 0.001")
        check_int(f"{WHERE}.time_dim", self.time_dim, 2, why="an even sinusoidal embedding size")
        if self.time_dim % 2:
            raise ConfigError(f"{WHERE}.time_dim must be an even number >= 2, got {self.time_dim}")
