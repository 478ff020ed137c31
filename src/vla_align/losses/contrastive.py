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


def info_nce_memory(
    z_a: Tensor,  # (B, D) unit norm
    z_b: Tensor,  # (B, D) unit norm
    logit_scale: Tensor,  # () = 1/τ, already clamped
    positives: Tensor | None,  # (B, B) bool in-batch positives, diagonal True; None = identity
    queue_a: Tensor,  # (Qa, D) past z_a, detached: extra columns of the rows z_b
    queue_b: Tensor,  # (Qb, D) past z_b, detached: extra columns of the rows z_a
    queue_pos_a: Tensor,  # (B, Qa) bool: row z_b,i and queue_a entry k are a positive pair
    queue_pos_b: Tensor,  # (B, Qb) bool: row z_a,i and queue_b entry k are a positive pair
) -> Tensor:
    """Symmetric InfoNCE with a memory bank's entries as extra columns (``memory_bank.py``): the rows z_a
    against [z_b ; queue_b], the rows z_b against [z_a ; queue_a], each row's target uniform over its
    positives among those columns. With empty queues it equals :func:`info_nce`."""
    batch = logit_scale * z_a @ z_b.T  # (B, B)
    to_b = torch.cat([batch, logit_scale * z_a @ queue_b.to(z_a.dtype).T], dim=1)  # (B, B + Qb)
    to_a = torch.cat([batch.T, logit_scale * z_b @ queue_a.to(z_b.dtype).T], dim=1)  # (B, B + Qa)
    eye = torch.eye(len(z_a), dtype=torch.bool, device=z_a.device)
    pos = eye if positives is None else positives
    row = _multi_positive(to_b, torch.cat([pos, queue_pos_b], dim=1))  # (B,)
    col = _multi_positive(to_a, torch.cat([pos.T, queue_pos_a], dim=1))  # (B,)
    return 0.5 * (row.mean() + col.mean())


def _multi_positive(logits: Tensor, positives: Tensor) -> Tensor:
    """(N, C) logits, (N, C) bool targets -> (N,) cross-entropy against the uniform law over the positives."""
    target = positives.to(logits.dtype)
    return -(target / target.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1)


def group_positives(groups: Tensor, others: Tensor | None = None) -> Tensor:
    """(B,) group ids -> (B, B) bool mask, True where two samples share a group; with ``others`` (Q,),
    the (B, Q) mask of the rows against those ids (a memory bank's entries)."""
    return groups[:, None] == (groups if others is None else others.to(groups.device))[None, :]


def mutual_information_bound(loss: Tensor | float, batch_size: int) -> float:
    """The InfoNCE lower bound on mutual information, I >= log N - L (chapter 5.6), in nats."""
    value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
    return math.log(batch_size) - value
