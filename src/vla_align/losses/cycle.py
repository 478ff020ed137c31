"""Language as the bridge between vision and action (chapter 5.4) and tri-modal consistency (5.6).

The chapter writes the cycle loss as a difference of two distances,

    L_cycle = 1/N Σ_i [ d(z_V,i, g_LA(z_L,i, z_A,i)) − d(z_A,i, g_VL(z_V,i, z_L,i)) ],

which is unbounded below: minimising it rewards making the second prediction *worse*. We keep its
two heads and its intent — vision and action must be predictable from each other through language
— and sum the terms instead, plus the closed cycle V → A → V:

    ẑ_A = g_VL(z_V, z_L)          (vision + language predict the action)
    ẑ_V = g_LA(z_L, z_A)          (language + action predict the vision)
    ž_V = g_LA(z_L, ẑ_A)          (round trip: vision → action → vision, through language)
    L_cycle = ½ [ d(ẑ_A, z_A) + d(ẑ_V, z_V) ] + ½ d(ž_V, z_V)

With ``distance="cosine"`` d(x, y) = 1 − cos(x, y) ∈ [0, 2]; with ``"infonce"`` (default) d is the
symmetric in-batch InfoNCE between predictions and targets, so a prediction must single out its
own sample among the batch rather than land near the average embedding (a constant prediction
scores log N, not 0). Both are bounded below.

Tri-modal consistency pulls the three embeddings of one sample into one neighbourhood:

    L_tri = 1/N Σ_i 1/3 Σ_m ‖z_m,i − c_i‖²,   c_i = (z_V,i + z_L,i + z_A,i) / 3,

the spread of the triangle around its centroid (0 when the three coincide, at most 4/3 for unit
vectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_float, check_int, out_of_range
from .contrastive import info_nce


@dataclass
class CycleConfig:
    weight: float = 0.0  # λ_cyc; the chapter's default is 0.2 when enabled
    distance: Literal["infonce", "cosine"] = "infonce"  # d of the cycle loss: InfoNCE over the batch or 1 − cosine
    temperature: float = 0.1  # for distance="infonce"
    hidden: int = 256  # width of the g_VL / g_LA heads

    def __post_init__(self) -> None:
        check_float("loss.cycle.weight", self.weight, 0.0, why="λ_cyc, 0 = off; the chapter's default is 0.2")
        check_float("loss.cycle.temperature", self.temperature, 0.0, 1.0, lo_open=True)
        check_int("loss.cycle.hidden", self.hidden, 8, why="width of the g_VL / g_LA heads")
        if self.distance not in ("infonce", "cosine"):
            raise out_of_range("loss.cycle.distance", self.distance, "'infonce' or 'cosine'")


class BridgeHead(nn.Module):
    """g(z_a, z_b) -> a unit vector in Z: a two-layer MLP on the concatenation."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:  # (B, D), (B, D) -> (B, D)
        return F.normalize(self.net(torch.cat([a, b], dim=-1)), dim=-1)


class CycleLoss(nn.Module):
    def __init__(self, cfg: CycleConfig, dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.g_vl = BridgeHead(dim, cfg.hidden)  # (z_V, z_L) -> ẑ_A
        self.g_la = BridgeHead(dim, cfg.hidden)  # (z_L, z_A) -> ẑ_V

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.cfg.distance == "cosine":
            return (1 - (pred * target).sum(-1)).mean()
        return info_nce(pred, target, torch.tensor(1.0 / self.cfg.temperature, device=pred.device))

    def forward(self, z_v: Tensor, z_l: Tensor, z_a: Tensor) -> Tensor:  # (B, D) each, unit norm
        a_hat = self.g_vl(z_v, z_l)  # (B, D)
        v_hat = self.g_la(z_l, z_a)  # (B, D)
        v_round = self.g_la(z_l, a_hat)  # (B, D)
        return 0.5 * (self.distance(a_hat, z_a) + self.distance(v_hat, z_v)) + 0.5 * self.distance(v_round, z_v)


def trimodal_consistency(z_v: Tensor, z_l: Tensor, z_a: Tensor) -> Tensor:
    """Mean squared distance of the three embeddings of each sample to their centroid."""
    z = torch.stack([z_v, z_l, z_a], dim=1)  # (B, 3, D)
    centre = z.mean(dim=1, keepdim=True)  # (B, 1, D)
    return ((z - centre) ** 2).sum(-1).mean()
