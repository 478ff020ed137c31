"""The common interface of the continuous policy heads (seed 004), their config and their registry.

A head maps a conditioning feature ``cond`` (B, D) (the fused observation + instruction state) to a
chunk of T future actions (B, T, A), in *normalised* action units (see ``data/normalizer.py``):

    loss(cond, target, mask)   -> scalar   training loss against the expert chunk, masked mean over the
                                           valid steps (mask (B, T) bool; chunks are padded at episode ends)
    sample(cond, generator)    -> (B, T, A) an action chunk, without gradient

Padded target steps never reach the loss: they are replaced by 0 before anything is computed, so
even NaN padding is harmless. Heads are registered in ``HEADS`` by short name and built from a
:class:`HeadConfig` with :func:`build_head` (or ``HeadConfig.build``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry

HeadName = Literal["regression", "binned", "flow"]
RegLoss = Literal["l1", "mse"]
WHERE = "model.policy.head"  # the config path printed in validation errors

__all__ = ["HEADS", "WHERE", "ActionHead", "HeadConfig", "HeadName", "build_head", "masked_mean", "mlp"]


@dataclass
class HeadConfig:
    name: HeadName = "regression"
    chunk_len: int = 8  # T: actions predicted per call
    action_dim: int = 4  # A: size of one (continuous) action
    hidden: int = 256  # width of the head's MLP
    depth: int = 2  # hidden layers of the head's MLP
    # regression
    reg_loss: RegLoss = "l1"
    # binned (RT-2 / OpenVLA tokens)
    bins: int = 256  # uniform bins per dimension between the bounds (1st / 99th percentiles of training actions)
    temperature: float = 0.0  # sampling: 0 = argmax bin; > 0 samples softmax(logits / temperature)
    # flow matching (SmolVLA / π0)
    steps: int = 10  # Euler steps from noise (t = 1) to actions (t = 0)
    time_alpha: float = 1.5  # training times: t = time_min + (1 − time_min) · s, s ~ Beta(time_alpha, 1)
    time_min: float = 0.001
    time_dim: int = 64  # sinusoidal time embedding size (even)

    def __post_init__(self) -> None:
        if self.name not in HEADS:
            raise ConfigError(f"{WHERE}.name {self.name!r} is unknown; use one of {', '.join(HEADS.names())}")
        if not 1 <= self.chunk_len <= 256:
            raise ConfigError(f"{WHERE}.chunk_len must be in 1..256 (the chapter uses T <= 8), got {self.chunk_len}")
        if not 1 <= self.action_dim <= 256:
            raise ConfigError(
                f"{WHERE}.action_dim must be in 1..256 (the dataset's action size), got {self.action_dim}"
            )
        if self.hidden < 8:
            raise ConfigError(f"{WHERE}.hidden must be >= 8, got {self.hidden}")
        if not 1 <= self.depth <= 8:
            raise ConfigError(f"{WHERE}.depth must be in 1..8 hidden layers, got {self.depth}")
        if self.reg_loss not in ("l1", "mse"):
            raise ConfigError(f"{WHERE}.reg_loss must be 'l1' or 'mse', got {self.reg_loss!r}")
        if not 2 <= self.bins <= 4096:
            raise ConfigError(f"{WHERE}.bins must be in 2..4096 (RT-2 / OpenVLA use 256), got {self.bins}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"{WHERE}.temperature must be >= 0 (0 = argmax), got {self.temperature}")
        if not 1 <= self.steps <= 1000:
            raise ConfigError(f"{WHERE}.steps must be in 1..1000 Euler steps (SmolVLA uses 10), got {self.steps}")
        if not (math.isfinite(self.time_alpha) and self.time_alpha > 0):
            raise ConfigError(f"{WHERE}.time_alpha must be > 0 (SmolVLA: 1.5), got {self.time_alpha}")
        if not 0 <= self.time_min < 1:
            raise ConfigError(f"{WHERE}.time_min must be in [0, 1) (SmolVLA: 0.001), got {self.time_min}")
        if self.time_dim < 2 or self.time_dim % 2:
            raise ConfigError(f"{WHERE}.time_dim must be an even number >= 2, got {self.time_dim}")

    def build(self, cond_dim: int) -> ActionHead:
        return build_head(self, cond_dim)


def mlp(in_dim: int, hidden: int, out_dim: int, depth: int, norm_input: bool = True) -> nn.Sequential:
    """[LayerNorm on the input,] then ``depth`` Linear + GELU layers of width ``hidden``, then a Linear out."""
    layers: list[nn.Module] = [nn.LayerNorm(in_dim)] if norm_input else []
    for i in range(depth):
        layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.GELU()]
    layers.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*layers)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, T) or (B, T, ...) values over the steps where the (B, T) mask is True (0 if none)."""
    m = mask.reshape(*mask.shape, *([1] * (values.ndim - mask.ndim))).expand_as(values)
    total = torch.where(m, values, torch.zeros_like(values)).sum()
    return total / m.sum().clamp(min=1)


class ActionHead(nn.Module):
    """Base class: shape checks and the interface; subclasses implement ``loss`` and ``sample``."""

    def __init__(self, cfg: HeadConfig, cond_dim: int) -> None:
        super().__init__()
        if cond_dim < 1:
            raise ConfigError(f"{WHERE}: the conditioning feature size must be >= 1, got {cond_dim}")
        self.cfg, self.cond_dim = cfg, cond_dim
        self.chunk_len, self.action_dim = cfg.chunk_len, cfg.action_dim

    def loss(self, cond: Tensor, target: Tensor, mask: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Scalar training loss. cond (B, D); target (B, T, A) normalised; mask (B, T) bool valid steps.

        ``generator`` drives any randomness of the loss (flow matching's noise and times)."""
        raise NotImplementedError

    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, D) -> (B, T, A) normalised action chunk, without gradient."""
        raise NotImplementedError

    def check_cond(self, cond: Tensor) -> None:
        if cond.ndim != 2 or cond.shape[1] != self.cond_dim:
            raise ValueError(f"cond must be (B, {self.cond_dim}), got {tuple(cond.shape)}")

    def check_inputs(self, cond: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Validate shapes; return the target with padded steps zeroed (B, T, A)."""
        self.check_cond(cond)
        want = (len(cond), self.chunk_len, self.action_dim)
        if tuple(target.shape) != want:
            raise ValueError(f"target must be (B, T, A) = {want}, got {tuple(target.shape)}")
        if tuple(mask.shape) != want[:2] or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool (B, T) = {want[:2]} tensor, got {mask.dtype} {tuple(mask.shape)}")
        return torch.where(mask[..., None], target, torch.zeros_like(target))  # (B, T, A)


HEADS: Registry[type[ActionHead]] = Registry("action head")


def build_head(cfg: HeadConfig, cond_dim: int) -> ActionHead:
    """The registered head ``cfg.name`` on a (B, cond_dim) conditioning feature."""
    return HEADS.get(cfg.name)(cfg, cond_dim)
