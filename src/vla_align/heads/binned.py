"""``binned``: discrete action tokens, the RT-2 / OpenVLA scheme.

Each dimension a of each step is one of ``bins`` uniform bins between ``low[a]`` and ``high[a]``
(width w_a = (high_a − low_a) / bins); values outside are clamped into the edge bins. A token is
decoded to its bin centre low_a + (k + ½) w_a, so within the bounds the round trip is off by at most
w_a / 2. Bounds are buffers (they go into the checkpoint) set from the 1st / 99th percentiles of the
(normalised) training actions with :meth:`BinnedHead.fit_bounds`, or directly with
:meth:`BinnedHead.set_bounds`; they default to [−1, 1], which is exactly right when the actions were
normalised with ``ActionNormalizer(mode="percentile")``.

The MLP outputs (B, T, A, bins) logits; loss = cross-entropy per (t, a), averaged over valid steps.
``sample`` takes the argmax bin (``temperature`` 0) or samples softmax(logits / temperature).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import check_float, check_int
from ..errors import ConfigError
from .base import HEADS, WHERE, ActionHead, HeadConfig, HeadName, masked_mean, mlp


class BinnedHead(ActionHead):
    cfg: BinnedHeadConfig
    low: Tensor
    high: Tensor

    def __init__(self, cfg: BinnedHeadConfig, cond_dim: int) -> None:
        super().__init__(cfg, cond_dim)
        self.bins = cfg.bins
        self.net = mlp(cond_dim, cfg.hidden, cfg.chunk_len * cfg.action_dim * cfg.bins, cfg.depth)
        self.register_buffer("low", torch.full((cfg.action_dim,), -1.0))
        self.register_buffer("high", torch.full((cfg.action_dim,), 1.0))

    # --- bounds and the token map ---------------------------------------------------------------

    def set_bounds(self, low: Tensor | np.ndarray | list[float], high: Tensor | np.ndarray | list[float]) -> None:
        """Per-dimension (A,) bounds in normalised units; each high must exceed its low."""
        lo = torch.as_tensor(np.asarray(low, dtype=np.float64)).reshape(-1)
        hi = torch.as_tensor(np.asarray(high, dtype=np.float64)).reshape(-1)
        if len(lo) != self.action_dim or len(hi) != self.action_dim:
            raise ConfigError(
                f"{WHERE}: binned bounds need {self.action_dim} values each, got low {len(lo)} and high {len(hi)}"
            )
        if not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all() and (hi > lo).all()):
            raise ConfigError(
                f"{WHERE}: binned bounds must be finite with high > low, got low={lo.tolist()} high={hi.tolist()}"
            )
        self.low.copy_(lo)
        self.high.copy_(hi)

    def fit_bounds(
        self, actions: Tensor | np.ndarray, lower: float = 1.0, upper: float = 99.0, min_width: float = 1e-6
    ) -> None:
        """Bounds = the ``lower`` / ``upper`` percentiles per dimension of (..., A) normalised training actions
        (np.percentile, linear); a dimension narrower than ``min_width`` is widened to it (centred)."""
        x = actions.detach().cpu().double().numpy() if isinstance(actions, Tensor) else np.asarray(actions, np.float64)
        x = x.reshape(-1, self.action_dim)  # (N, A)
        lo, hi = np.percentile(x, lower, axis=0), np.percentile(x, upper, axis=0)
        centre, half = (lo + hi) / 2, np.maximum(hi - lo, min_width) / 2
        self.set_bounds(centre - half, centre + half)

    def bin_width(self) -> Tensor:
        return (self.high - self.low) / self.bins  # (A,)

    def to_bins(self, x: Tensor) -> Tensor:
        """(..., A) values -> (..., A) int64 bin ids in [0, bins), out-of-range values in the edge bins."""
        k = torch.floor((x - self.low.to(x.dtype)) / self.bin_width().to(x.dtype))
        return k.clamp(0, self.bins - 1).long()

    def from_bins(self, k: Tensor) -> Tensor:
        """(..., A) bin ids -> (..., A) bin centres (float32)."""
        return self.low + (k.to(self.low.dtype) + 0.5) * self.bin_width()

    # --- the head -------------------------------------------------------------------------------

    def forward(self, cond: Tensor) -> Tensor:
        self.check_cond(cond)
        out: Tensor = self.net(cond).view(len(cond), self.chunk_len, self.action_dim, self.bins)  # (B, T, A, K)
        return out

    def loss(self, cond: Tensor, target: Tensor, mask: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        target = self.check_inputs(cond, target, mask)  # (B, T, A)
        logits = self(cond)  # (B, T, A, K)
        ce = F.cross_entropy(logits.reshape(-1, self.bins), self.to_bins(target).reshape(-1), reduction="none")
        return masked_mean(ce.view_as(target), mask)

    @torch.no_grad()
    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        logits = self(cond)  # (B, T, A, K)
        if self.cfg.temperature == 0:
            k = logits.argmax(-1)  # (B, T, A)
        else:
            probs = torch.softmax(logits.float() / self.cfg.temperature, dim=-1).reshape(-1, self.bins)
            k = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])  # (B, T, A)
        return self.from_bins(k).to(cond.dtype)  # (B, T, A) bin centres, in cond's dtype (not autocast's)


@HEADS.register("binned")
@dataclass
class BinnedHeadConfig(HeadConfig):
    name: HeadName = "binned"
    bins: int = 256  # uniform bins per dimension between the bounds (1st / 99th percentiles of training actions)
    temperature: float = 0.0  # sampling: 0 = argmax bin; > 0 samples softmax(logits / temperature)

    module = BinnedHead

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(f"{WHERE}.bins", self.bins, 2, 4096, why="RT-2 / OpenVLA use 256")
        check_float(f"{WHERE}.temperature", self.temperature, 0.0, why="sampling temperature, 0 = argmax")
