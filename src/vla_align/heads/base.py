"""The common interface of the continuous policy heads (seed 004), their config and their registry.

A head maps a conditioning feature ``cond`` (B, D) (the fused observation + instruction state) to a
chunk of T future actions (B, T, A), in *normalised* action units (see ``data/normalizer.py``):

    loss(cond, target, mask)   -> scalar   training loss against the expert chunk, masked mean over the
                                           valid steps (mask (B, T) bool; chunks are padded at episode ends)
    sample(cond, generator)    -> (B, T, A) an action chunk, without gradient

Padded target steps never reach the loss: they are replaced by 0 before anything is computed, so
even NaN padding is harmless. ``HEADS`` maps each short name to its config class
(``RegressionHeadConfig``, ``BinnedHeadConfig``, ``FlowHeadConfig``, each beside its head), a
:class:`HeadConfig` with the shared fields plus the head's own; ``build(cond_dim)`` makes the head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..config import VariantConfig, check_int, check_name, resolve
from ..errors import ConfigError
from ..registry import Registry

HeadName = Literal["regression", "binned", "flow"]  # the names in HEADS (checked by a test)
WHERE = "model.policy.head"  # the config path printed in validation errors

__all__ = ["HEADS", "WHERE", "ActionHead", "HeadConfig", "HeadName", "build_head", "masked_mean", "mlp"]

HEADS: Registry[type[HeadConfig]] = Registry("action head")


@dataclass
class HeadConfig(VariantConfig):
    """The fields every head shares; ``name`` picks the head (and its config class) in ``HEADS``."""

    registry: ClassVar[Registry[Any]] = HEADS
    module: ClassVar[type[ActionHead]]  # the head this config builds (set by each variant)

    name: HeadName = "regression"
    chunk_len: int = 8  # T: actions predicted per call
    action_dim: int = 4  # A: size of one (continuous) action
    hidden: int = 256  # width of the head's MLP
    depth: int = 2  # hidden layers of the head's MLP

    def __post_init__(self) -> None:
        check_name(self, WHERE)
        check_int(f"{WHERE}.chunk_len", self.chunk_len, 1, 256, why="the chapter uses T <= 8")
        check_int(f"{WHERE}.action_dim", self.action_dim, 1, 256, why="the dataset's action size")
        check_int(f"{WHERE}.hidden", self.hidden, 8, why="width of the head's MLP")
        check_int(f"{WHERE}.depth", self.depth, 1, 8, why="hidden layers of the head's MLP")

    def build(self, cond_dim: int) -> ActionHead:
        """The head ``name`` on a (B, cond_dim) conditioning feature."""
        cfg = resolve(self)
        return cfg.module(cfg, cond_dim)


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


def build_head(cfg: HeadConfig, cond_dim: int) -> ActionHead:
    """The registered head ``cfg.name`` on a (B, cond_dim) conditioning feature."""
    return cfg.build(cond_dim)
