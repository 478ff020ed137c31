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
Scores are compared in their own dtype (float32 or float64, exact); the statistics are float64. Only
the top max(ks, ndcg_k) items of each row are sorted (``torch.topk``); everything is vectorised over
queries on the CPU, and the tie formulas run only where tie groups actually mix relevant and
irrelevant items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    valid = ~torch.isnan(per_query["MRR"])  # NaN exactly for queries without a relevant item
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
    out: dict[str, Tensor] = {f"R@{k}": nan.clone() for k in ks}
    out["MRR"] = nan.clone()
    out[f"nDCG@{ndcg_k}"] = nan.clone()
    n_rel = _count(rel).long()
    valid = n_rel > 0
    if not bool(valid.any()):
        return out
    if not bool(valid.all()):
        s, rel, n_rel = s[valid], rel[valid], n_rel[valid]

    top = _top_groups(s, rel, n_rel, min(max([*ks, ndcg_k]), num_g))
    values: dict[str, Tensor] = {f"R@{k}": _hit_rate(top, min(k, num_g)) for k in ks}
    values["MRR"] = _reciprocal_rank(s, rel, top)
    values[f"nDCG@{ndcg_k}"] = _ndcg(top, min(ndcg_k, num_g))
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
    s = scores.detach().to("cpu")
    # Comparisons are exact in float32/float64; other dtypes convert exactly to float64.
    if s.dtype not in (torch.float32, torch.float64):
        s = s.to(torch.float64)
    if bool(torch.isnan(s).any()):
        raise ValueError("scores contain NaN")
    return s, relevance.detach().to("cpu")


@dataclass
class _TopGroups:
    """The top ``k`` items of each row by score with their tie groups' statistics, all (Q, k).

    Tie groups are counted over the whole row, so a group straddling the cut-off k has its full size.
    """

    rel: Tensor  # bool, relevance in descending-score order
    start: Tensor  # int64, items strictly above this position's tie group
    size: Tensor  # float64, size g of the tie group
    group_rel: Tensor  # float64, relevant items r in the tie group
    rel_above: Tensor  # float64, relevant items strictly above the tie group
    n_rel: Tensor  # (Q,) int64, relevant items in the whole row


def _top_groups(s: Tensor, rel: Tensor, n_rel: Tensor, k: int) -> _TopGroups:
    num_q, num_g = s.shape
    n = min(k + 1, num_g)  # one extra column tells whether the group at position k-1 continues past k
    vals, idx = torch.topk(s, n, dim=1, largest=True, sorted=True)
    rel_top = torch.gather(rel, 1, idx)
    pos = torch.arange(n).expand(num_q, n)
    new_group = torch.ones_like(rel_top)
    new_group[:, 1:] = vals[:, 1:] != vals[:, :-1]
    start = torch.where(new_group, pos, torch.zeros_like(pos)).cummax(dim=1).values
    gid = new_group.long().cumsum(dim=1) - 1  # group id per position
    rel_f = rel_top.double()
    size = torch.zeros(num_q, n, dtype=torch.float64).scatter_add_(1, gid, torch.ones_like(rel_f))
    group_rel = torch.zeros(num_q, n, dtype=torch.float64).scatter_add_(1, gid, rel_f)
    size, group_rel = torch.gather(size, 1, gid), torch.gather(group_rel, 1, gid)
    rel_before = rel_f.cumsum(dim=1) - rel_f
    rel_above = torch.gather(rel_before, 1, start)
    if n > k:
        spill = (vals[:, k] == vals[:, k - 1]).nonzero().squeeze(1)  # rows whose tie group crosses the list's end
        if len(spill):
            boundary = vals[spill, k - 1 : k]
            at = s[spill] == boundary
            in_group = vals[spill] == boundary
            full_size = _count(at, keepdim=True).expand(-1, n)
            full_rel = _count(at & rel[spill], keepdim=True).expand(-1, n)
            size[spill] = torch.where(in_group, full_size, size[spill])
            group_rel[spill] = torch.where(in_group, full_rel, group_rel[spill])
    return _TopGroups(
        rel=rel_top[:, :k],
        start=start[:, :k],
        size=size[:, :k],
        group_rel=group_rel[:, :k],
        rel_above=rel_above[:, :k],
        n_rel=n_rel,
    )


def _count(mask: Tensor, keepdim: bool = False) -> Tensor:
    """Row-wise count of True values as float64 (summing bytes is much cheaper than bool -> int64)."""
    return mask.view(torch.uint8).sum(dim=1, keepdim=keepdim, dtype=torch.int32).double()


def _hit_rate(top: _TopGroups, k: int) -> Tensor:
    """P(some relevant item in the top k), k <= list length, for every query."""
    idx = k - 1  # the group at the last position inside the top k is the one straddling the cut
    g, r = top.size[:, idx], top.group_rel[:, idx]
    slots = k - top.start[:, idx].double()  # 1..g positions of this group fall inside the top k
    hit = ((top.rel_above[:, idx] > 0) | (r > 0)).double()  # certain, or possible via the straddling group
    # Random draw of `slots` of the group's g items: P(none of its r relevant ones) = C(g-r, s) / C(g, s)
    # = prod_{i<s} (g-r-i) / (g-i); only partial groups that mix relevant and irrelevant items need it.
    mixed = (top.rel_above[:, idx] == 0) & (r > 0) & (r < g) & (slots < g) & (slots <= g - r)
    if bool(mixed.any()):
        gm, rm, sm = g[mixed, None], r[mixed, None], slots[mixed, None]
        i = torch.arange(int(sm.max()), dtype=torch.float64)[None, :]
        factors = torch.where(i < sm, (gm - rm - i) / (gm - i), torch.ones_like(i))
        hit[mixed] = 1.0 - factors.prod(dim=1)
    return hit


def _reciprocal_rank(s: Tensor, rel: Tensor, top: _TopGroups) -> Tensor:
    """E[1 / rank of the first relevant item] for every query (each has a relevant item)."""
    num_q = len(s)
    p = torch.empty(num_q, dtype=torch.float64)
    g, r = torch.empty_like(p), torch.empty_like(p)
    # Queries with a relevant item in the top list: its tie-group statistics are already exact there.
    hit = top.rel.any(dim=1)
    first = top.rel.long().argmax(dim=1, keepdim=True)[hit]
    p[hit] = torch.gather(top.start[hit], 1, first).squeeze(1).double()
    g[hit] = torch.gather(top.size[hit], 1, first).squeeze(1)
    r[hit] = torch.gather(top.group_rel[hit], 1, first).squeeze(1)
    # The others: locate the best-scored relevant item's tie group over the whole row.
    miss = ~hit
    if bool(miss.any()):
        s_m, rel_m = s[miss], rel[miss]
        best = s_m.masked_fill(~rel_m, float("-inf")).amax(dim=1, keepdim=True)
        at = s_m == best
        p[miss] = _count(s_m > best)
        g[miss] = _count(at)
        r[miss] = _count(at & rel_m)
    rr = 1.0 / (p + 1.0)  # exact when the group holds only relevant items (e.g. no tie)
    mixed = g > r
    if bool(mixed.any()):
        # The group's first relevant item is its k-th item (k = 1..g-r+1) with probability
        # w_k = C(g-k, r-1) / C(g, r): w_1 = r/g, w_{k+1} = w_k (g-r-k+1) / (g-k).
        pm, gm, rm = p[mixed, None], g[mixed, None], r[mixed, None]
        k = torch.arange(1, int((gm - rm).max()) + 2, dtype=torch.float64)[None, :]
        ok = k <= gm - rm + 1
        step = torch.where(ok[:, 1:], (gm - rm - k[:, :-1] + 1) / (gm - k[:, :-1]), torch.zeros_like(k[:, 1:]))
        w = torch.cat([rm / gm, step], dim=1).cumprod(dim=1)  # 0 beyond k = g-r+1
        rr[mixed] = (w / (pm + k)).sum(dim=1)
    return rr


def _ndcg(top: _TopGroups, k: int) -> Tensor:
    """Tie-averaged nDCG@k with binary gains, k <= list length, for every query."""
    discount = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)  # (k,)
    mean_gain = top.group_rel[:, :k] / top.size[:, :k]  # expected gain at each position
    dcg = (mean_gain * discount).sum(dim=1)
    return dcg / discount.cumsum(dim=0)[top.n_rel.clamp(max=k) - 1]
