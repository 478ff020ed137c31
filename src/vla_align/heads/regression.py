"""``regression``: an MLP straight to the (T·A) chunk, trained with a masked L1 or MSE (behaviour cloning)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import HEADS, ActionHead, HeadConfig, masked_mean, mlp


@HEADS.register("regression")
class RegressionHead(ActionHead):
    """pred = MLP(cond) reshaped to (B, T, A); loss = mean over valid (t, a) of |pred − target| or its square."""

    def __init__(self, cfg: HeadConfig, cond_dim: int) -> None:
        super().__init__(cfg, cond_dim)
        self.net = mlp(cond_dim, cfg.hidden, cfg.chunk_len * cfg.action_dim, cfg.depth)

    def forward(self, cond: Tensor) -> Tensor:
        self.check_cond(cond)
        return self.net(cond).view(len(cond), self.chunk_len, self.action_dim)  # (B, T, A)

    def loss(self, cond: Tensor, target: Tensor, mask: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        target = self.check_inputs(cond, target, mask)  # (B, T, A)
        diff = self(cond) - target  # (B, T, A)
        err = diff.abs() if self.cfg.reg_loss == "l1" else diff.square()
        return masked_mean(err, mask)

    @torch.no_grad()
    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self(cond)  # (B, T, A); deterministic, the generator is not used
