"""Retrieval metrics with binary relevance and order-independent tie handling.

For a (Q, G) score matrix and a (Q, G) bool relevance matrix (several positives per query allowed):

* ``R@K``: hit rate, 1 if any relevant item is in the top K (the CLIP retrieval convention; equal to
  torchmetrics' ``retrieval_hit_rate(top_k=K)``).
* ``MRR``: 1 / rank of the first relevant item, no top-k cut.
* ``nDCG@K``: binary gains, log2 discounts, normalised by the ideal DCG.

Tied scores are handled as the *expected value over a uniformly random ordering of the tied items*,
so results do not depend on how a sort happens to break ties (for nDCG this is exactly the
tie-averaged DCG of scikit-learn's ``ndcg_score`` and torchmetrics). Closed forms, for the tie group
concerned (g items, r of them relevant, p items strictly above it):

* R@K, when no relevant item is strictly above and the group straddles position K with s = K - p
  slots left: P(hit) = 1 - C(g - r, s) / C(g, s).
* MRR, for the first tie group containing a relevant item:
  E[1/rank] = sum_{k=1}^{g-r+1} C(g - k, r - 1) / C(g, r) / (p + k).
* nDCG: every position of a tie group carries the group's mean gain r / g.

Queries without any relevant item are excluded from the means (their per-query values are NaN).
Everything is computed in float64 on the CPU and vectorised over queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["retrieval_per_query", "retrieval_scores"]


def retrieval_scores(
    scores: Tensor,  # (Q, G) similarities, higher = more relevant
    relevance: Tensor,  # (Q, G) bool
    ks: Sequence[int] = (1, 5, 10),
    ndcg_k: int = 10,
) -> dict[str, float]:
    """Mean ``R@K`` for K in ``ks``, ``MRR`` and ``nDCG@ndcg_k`` over queries with a relevant item.

    Raises ValueError when no query has any relevant item.
    """
    per_query = retrieval_per_query(scores, relevance, ks, ndcg_k)
    valid = relevance.detach().to("cpu").any(dim=1)
    if not bool(valid.any()):
        raise ValueError("no query has any relevant item; retrieval metrics are undefined")
    return {name: float(values[valid].mean()) for name, values in per_query.items()}


def retrieval_per_query(
    scores: Tensor,  # (Q, G) similarities, higher = more relevant
    relevance: Tensor,  # (Q, G) bool
    ks: Sequence[int] = (1, 5, 10),
    ndcg_k: int = 10,
) -> dict[str, Tensor]:
    """Per-query expected ``R@K``, ``MRR`` and ``nDCG@ndcg_k``, each a (Q,) float64 CPU tensor.

    Queries without any relevant item get NaN. Keys: ``R@{k}`` for k in ``ks``, ``MRR``, ``nDCG@{ndcg_k}``.
    """
    s, rel = _check_inputs(scores, relevance, ks, ndcg_k)
    num_q, num_g = s.shape
    nan = torch.full((num_q,), float("nan"), dtype=torch.float64)
    valid = rel.any(dim=1)
    out: dict[str, Tensor] = {f"R@{k}": nan.clone() for k in ks}
    out["MRR"] = nan.clone()
    out[f"nDCG@{ndcg_k}"] = nan.clone()
    if not bool(valid.any()):
        return out

    s, rel = s[valid], rel[valid]
    groups = _tie_groups(s, rel)
    values: dict[str, Tensor] = {f"R@{k}": _hit_rate(groups, min(k, num_g)) for k in ks}
    values["MRR"] = _reciprocal_rank(groups)
    values[f"nDCG@{ndcg_k}"] = _ndcg(groups, min(ndcg_k, num_g))
    for name, v in values.items():
        out[name][valid] = v
    return out


def _check_inputs(scores: Tensor, relevance: Tensor, ks: Sequence[int], ndcg_k: int) -> tuple[Tensor, Tensor]:
    if scores.ndim != 2 or scores.shape != relevance.shape:
        raise ValueError(
            f"scores and relevance must both be (Q, G), got {tuple(scores.shape)} and {tuple(relevance.shape)}"
        )
    if relevance.dtype != torch.bool:
        raise TypeError(f"relevance must be a bool tensor (binary relevance), got {relevance.dtype}")
    if scores.is_complex():
        raise TypeError(f"scores must be real, got {scores.dtype}")
    for k in (*ks, ndcg_k):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"cut-offs must be positive integers, got {k!r}")
    s = scores.detach().to("cpu", torch.float64)
    if bool(torch.isnan(s).any()):
        raise ValueError("scores contain NaN")
    return s, relevance.detach().to("cpu")


class _Groups:
    """Rows sorted by descending score, with per-position tie-group statistics (all (Q, G))."""

    def __init__(self, rel_sorted: Tensor, start: Tensor, size: Tensor, group_rel: Tensor, rel_before: Tensor):
        self.rel_sorted = rel_sorted  # bool, relevance in sorted order
        self.start = start  # int64, index of the first position of this position's tie group (= items above)
        self.size = size  # float64, size g of the tie group
        self.group_rel = group_rel  # float64, relevant items r in the tie group
        self.rel_before = rel_before  # float64, relevant items strictly above the tie group


def _tie_groups(s: Tensor, rel: Tensor) -> _Groups:
    num_q, num_g = s.shape
    sorted_s, order = torch.sort(s, dim=1, descending=True, stable=True)
    rel_sorted = torch.gather(rel, 1, order)
    pos = torch.arange(num_g).expand(num_q, num_g)
    new_group = torch.ones_like(rel_sorted)
    new_group[:, 1:] = sorted_s[:, 1:] != sorted_s[:, :-1]
    start = torch.where(new_group, pos, torch.zeros_like(pos)).cummax(dim=1).values
    gid = new_group.long().cumsum(dim=1) - 1  # group id per position, 0..n_groups-1
    rel_f = rel_sorted.double()
    size = torch.zeros(num_q, num_g, dtype=torch.float64).scatter_add_(1, gid, torch.ones_like(rel_f))
    group_rel = torch.zeros(num_q, num_g, dtype=torch.float64).scatter_add_(1, gid, rel_f)
    rel_excl = rel_f.cumsum(dim=1) - rel_f  # relevant items strictly before each position
    return _Groups(
        rel_sorted=rel_sorted,
        start=start,
        size=torch.gather(size, 1, gid),
        group_rel=torch.gather(group_rel, 1, gid),
        rel_before=torch.gather(rel_excl, 1, start),
    )


def _log_comb(n: Tensor, k: Tensor) -> Tensor:
    """log C(n, k) for 0 <= k <= n (float64)."""
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _hit_rate(gr: _Groups, k: int) -> Tensor:
    """P(some relevant item in the top k), k <= G, for every (valid) query."""
    idx = k - 1  # the last position inside the top k decides which tie group straddles the cut
    p = gr.start[:, idx].double()
    g, r = gr.size[:, idx], gr.group_rel[:, idx]
    slots = k - p  # 1..g positions of this group fall inside the top k
    # P(no relevant item of the group among the `slots` drawn) = C(g - r, slots) / C(g, slots).
    possible = (g - r) >= slots
    miss = torch.where(
        possible,
        torch.exp(_log_comb((g - r).clamp(min=slots), slots) - _log_comb(g, slots)),
        torch.zeros_like(g),
    )
    miss = torch.where(r == 0, torch.ones_like(miss), miss)
    return torch.where(gr.rel_before[:, idx] > 0, torch.ones_like(miss), 1.0 - miss)


def _reciprocal_rank(gr: _Groups) -> Tensor:
    """E[1 / rank of the first relevant item] for every (valid) query."""
    first = gr.rel_sorted.long().argmax(dim=1, keepdim=True)  # a position inside the first relevant group
    p = torch.gather(gr.start, 1, first).squeeze(1).double()
    g = torch.gather(gr.size, 1, first).squeeze(1)
    r = torch.gather(gr.group_rel, 1, first).squeeze(1)
    rr = 1.0 / (p + 1.0)  # exact when the group holds only relevant items (incl. untied)
    mixed = g > r
    if bool(mixed.any()):  # tie groups mixing relevant and irrelevant items: sum over the first hit's offset
        pm, gm, rm = p[mixed, None], g[mixed, None], r[mixed, None]
        offset = torch.arange(1, int((gm - rm).max()) + 2, dtype=torch.float64)[None, :]  # k = 1..g-r+1
        ok = offset <= gm - rm + 1
        k = torch.where(ok, offset, torch.ones_like(offset))
        log_p = _log_comb(gm - k, rm - 1) - _log_comb(gm, rm)  # P(first relevant of the group is k-th)
        terms = torch.where(ok, torch.exp(log_p) / (pm + k), torch.zeros_like(log_p))
        rr[mixed] = terms.sum(dim=1)
    return rr


def _ndcg(gr: _Groups, k: int) -> Tensor:
    """Tie-averaged nDCG@k with binary gains, k <= G, for every (valid) query."""
    discount = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)  # (k,)
    mean_gain = gr.group_rel[:, :k] / gr.size[:, :k]  # expected gain at each position
    dcg = (mean_gain * discount).sum(dim=1)
    n_rel = gr.rel_sorted.sum(dim=1).clamp(max=k)  # >= 1 for valid queries
    ideal = discount.cumsum(dim=0)[n_rel - 1]
    return dcg / ideal
