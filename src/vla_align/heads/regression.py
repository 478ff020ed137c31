"""``regression``: an MLP straight to the (T·A) chunk, trained with a masked L1 or MSE (behaviour cloning)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError
from .base import HEADS, WHERE, ActionHead, HeadConfig, HeadName, masked_mean, mlp

RegLoss = Literal["l1", "mse"]


class RegressionHead(ActionHead):
    """pred = MLP(cond) reshaped to (B, T, A); loss = mean over valid (t, a) of |pred − target| or its square."""

    cfg: RegressionHeadConfig

    def __init__(self, cfg: RegressionHeadConfig, cond_dim: int) -> None:
        super().__init__(cfg, cond_dim)
        self.net = mlp(cond_dim, cfg.hidden, cfg.chunk_len * cfg.action_dim, cfg.depth)

    def forward(self, cond: Tensor) -> Tensor:
        self.check_cond(cond)
        out: Tensor = self.net(cond).view(len(cond), self.chunk_len, self.action_dim)  # (B, T, A)
        return out

    def loss(self, cond: Tensor, target: Tensor, mask: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        target = self.check_inputs(cond, target, mask)  # (B, T, A)
        diff = self(cond) - target  # (B, T, A)
        err = diff.abs() if self.cfg.reg_loss == "l1" else diff.square()
        return masked_mean(err, mask)

    @torch.no_grad()
    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        out: Tensor = self(cond)  # (B, T, A); deterministic, the generator is not used
        return out


@HEADS.register("regression")
@dataclass
class RegressionHeadConfig(HeadConfig):
    name: HeadName = "regression"
    reg_loss: RegLoss = "l1"  # the training loss: "l1" (LeRobot's ACT) or "mse"

    module = RegressionHead

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reg_loss not in ("l1", "mse"):
            raise ConfigError(f"{WHERE}.reg_loss must be 'l1' or 'mse', got {self.reg_loss!r}")
