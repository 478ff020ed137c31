"""Symmetric InfoNCE between two modalities (chapter 5.2 / 5.3), with multiple positives.

With one positive per row this is CLIP's loss:
    L = -1/(2N) Σ_i [ log softmax_j(s_ij)[i] + log softmax_j(s_ji)[i] ],  s_ij = <z_a,i, z_b,j> / τ.
When several samples of a batch share an instruction, the rows of the other samples with that
instruction are not negatives: each row's target is the uniform distribution over its positives
(``positives[i, j]`` True), so duplicates are neither pushed apart nor double counted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(
    z_a: Tensor,  # (B, D) unit norm
    z_b: Tensor,  # (B, D) unit norm
    logit_scale: Tensor,  # () = 1/τ, already clamped
    positives: Tensor | None = None,  # (B, B) bool, diagonal True; None = identity
) -> Tensor:
    logits = logit_scale * z_a @ z_b.T  # (B, B)
    if positives is None:
        labels = torch.arange(len(z_a), device=z_a.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    target = positives.to(logits.dtype)
    row = -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1)  # (B,)
    col = -(target.T / target.T.sum(1, keepdim=True) * F.log_softmax(logits.T, dim=1)).sum(1)  # (B,)
    return 0.5 * (row.mean() + col.mean())


def group_positives(groups: Tensor) -> Tensor:
    """(B,) group ids -> (B, B) bool mask, True where two samples share a group."""
    return groups[:, None] == groups[None, :]


def mutual_information_bound(loss: Tensor | float, batch_size: int) -> float:
    """The InfoNCE lower bound on mutual information, I >= log N - L (chapter 5.6), in nats."""
    value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
    return math.log(batch_size) - value
