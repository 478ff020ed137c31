"""Alignment health checks on paired embeddings (chapter 5.8): the alignment confusion matrix (AMat),
per-class top-K hit rates, and the InfoNCE lower bound on mutual information.

AMat: queries q (N, D) retrieve from a gallery g (M, D) by the score s = q · gᵀ (cosine similarity for
unit-norm embeddings); every query and gallery item carries a class (instruction class, task, ...).
Row c of the (C, C) matrix is, over the queries of class c, the mean fraction of their top-K
retrieved items that belong to each class:

    AMat[c, c'] = 1/|Q_c| Σ_{i ∈ Q_c} |{j ∈ topK(i) : class(j) = c'}| / K,

so each row sums to 1 and a perfectly aligned space is the identity; off-diagonal mass shows which
classes the space confuses. Ties in the scores are broken by ``torch.topk`` (arbitrary but fixed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..losses.contrastive import info_nce

__all__ = ["alignment_confusion", "mi_lower_bound", "per_class_hit_rate"]

Label = int | str
Labels = Tensor | Sequence[int] | Sequence[str]

_CHUNK = 2048  # queries scored at a time: bounds the (chunk, M) score matrix


def _as_list(labels: Labels, name: str) -> list[Label]:
    if isinstance(labels, Tensor):
        if labels.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(labels.shape)}")
        return list(labels.tolist())
    return list(labels)


def _top_classes(
    q: Tensor, g: Tensor, q_cls: Labels, g_cls: Labels, k: int, classes: Sequence[Label] | None
) -> tuple[Tensor, Tensor, list[Label]]:
    """Class indices of the queries (N,) and of each query's top-k gallery items (N, k), and the classes."""
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"q and g must be (N, D) and (M, D), got {tuple(q.shape)} and {tuple(g.shape)}")
    ql, gl = _as_list(q_cls, "q_cls"), _as_list(g_cls, "g_cls")
    if len(ql) != len(q) or len(gl) != len(g):
        raise ValueError("one class label per query and per gallery item is needed")
    if len(g) == 0 or len(q) == 0:
        raise ValueError("q and g must not be empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    names: list[Label] = (
        list(classes) if classes is not None else sorted(set(ql) | set(gl), key=lambda c: (str(type(c)), c))
    )
    index = {c: i for i, c in enumerate(names)}
    unknown = {c for c in ql + gl if c not in index}
    if unknown:
        raise ValueError(f"labels missing from classes: {sorted(map(str, unknown))[:5]}")
    q_idx = torch.tensor([index[c] for c in ql], dtype=torch.long)  # (N,)
    g_idx = torch.tensor([index[c] for c in gl], dtype=torch.long)  # (M,)
    k = min(k, len(g))
    gd = g.detach().to("cpu", torch.float32)
    top = []
    for start in range(0, len(q), _CHUNK):
        scores = q[start : start + _CHUNK].detach().to("cpu", torch.float32) @ gd.T  # (n, M)
        top.append(g_idx[scores.topk(k, dim=1).indices])  # (n, k)
    return q_idx, torch.cat(top), names


def alignment_confusion(
    q: Tensor,  # (N, D) query embeddings
    g: Tensor,  # (M, D) gallery embeddings
    q_cls: Labels,  # (N,) class of each query
    g_cls: Labels,  # (M,) class of each gallery item
    k: int = 10,
    classes: Sequence[Label] | None = None,
) -> tuple[Tensor, list[Label]]:
    """AMat (C, C) float64 (rows: query class, columns: retrieved class; rows sum to 1, NaN rows for
    classes without queries) and the class order. ``classes`` None: the sorted union of the labels;
    K is capped at M."""
    q_idx, top, names = _top_classes(q, g, q_cls, g_cls, k, classes)
    c = len(names)
    frac = torch.nn.functional.one_hot(top, c).to(torch.float64).mean(1)  # (N, C) share of the top-K per class
    total = torch.zeros(c, c, dtype=torch.float64).index_add_(0, q_idx, frac)  # (C, C)
    count = torch.bincount(q_idx, minlength=c).to(torch.float64)  # (C,)
    return total / count[:, None], names  # 0/0 = NaN for classes without queries


def per_class_hit_rate(
    q: Tensor,  # (N, D)
    g: Tensor,  # (M, D)
    q_cls: Labels,  # (N,)
    g_cls: Labels,  # (M,)
    k: int = 10,
    classes: Sequence[Label] | None = None,
) -> tuple[Tensor, list[Label]]:
    """(C,) float64: fraction of the queries of each class with at least one same-class item in their
    top K (NaN for classes without queries), and the class order."""
    q_idx, top, names = _top_classes(q, g, q_cls, g_cls, k, classes)
    c = len(names)
    hit = (top == q_idx[:, None]).any(1).to(torch.float64)  # (N,)
    total = torch.zeros(c, dtype=torch.float64).index_add_(0, q_idx, hit)  # (C,)
    count = torch.bincount(q_idx, minlength=c).to(torch.float64)  # (C,)
    return total / count, names


@torch.no_grad()
def mi_lower_bound(z_a: Tensor, z_b: Tensor, logit_scale: Tensor | float) -> float:
    """InfoNCE lower bound on I(A; B) in nats from N paired samples (one per episode, row i of z_a
    pairs with row i of z_b): log N − L, L the symmetric single-positive InfoNCE loss at ``logit_scale``.

    L is a mean of cross-entropies, so L ≥ 0 and the bound is ≤ log N by construction: it saturates
    at log N and cannot certify more than log N nats, however well aligned the space is (use a larger
    N to measure more). Rows must be distinct samples: duplicates would count as negatives.
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must be paired (N, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
    n = len(z_a)
    if n < 2:
        raise ValueError("need at least 2 pairs")
    scale = torch.as_tensor(logit_scale, dtype=torch.float64).detach().cpu()
    loss = info_nce(z_a.detach().to("cpu", torch.float64), z_b.detach().to("cpu", torch.float64), scale)
    return math.log(n) - max(float(loss), 0.0)
