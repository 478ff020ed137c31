"""Naive reference implementations for the tests: plain Python loops, float64, no vectorisation.

Deliberately slow and literal, so they can be read against the definitions:
* ``info_nce_reference``: the symmetric multi-positive InfoNCE, one scalar torch op at a time
  (autograd flows through it; use B <= 8).
* ``retrieval_reference``: R@K, MRR and nDCG@K as the exact expectation over every ordering
  consistent with the scores (all permutations within tie groups; keep G <= 7).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor


def info_nce_reference(z_a: Tensor, z_b: Tensor, logit_scale: Tensor, positives: Tensor | None = None) -> Tensor:
    """0.5 * (mean_i row_loss_i + mean_j col_loss_j), targets uniform over each row's/column's positives."""
    n, d = z_a.shape
    pos = [[(i == j) if positives is None else bool(positives[i, j]) for j in range(n)] for i in range(n)]
    s = [[logit_scale * sum(z_a[i, k] * z_b[j, k] for k in range(d)) for j in range(n)] for i in range(n)]

    def direction(sim: list[list[Tensor]], is_pos: list[list[bool]]) -> Tensor:
        total = torch.zeros((), dtype=z_a.dtype)
        for i in range(n):
            denom = sum(torch.exp(sim[i][k]) for k in range(n))
            n_pos = sum(is_pos[i])
            for j in range(n):
                if is_pos[i][j]:
                    total = total - (1.0 / n_pos) * torch.log(torch.exp(sim[i][j]) / denom)
        return total / n

    s_t = [[s[j][i] for j in range(n)] for i in range(n)]
    pos_t = [[pos[j][i] for j in range(n)] for i in range(n)]
    return 0.5 * (direction(s, pos) + direction(s_t, pos_t))


def _orderings(scores: list[float]) -> list[list[int]]:
    """Every ordering of item indices by descending score, ties broken in every possible way."""
    groups = [[i for i in range(len(scores)) if scores[i] == v] for v in sorted(set(scores), reverse=True)]
    return [[i for perm in choice for i in perm] for choice in itertools.product(*map(itertools.permutations, groups))]


def retrieval_reference(
    scores: Tensor, relevance: Tensor, k_list: Sequence[int] = (1, 5, 10), ndcg_k: int = 10
) -> dict[str, float]:
    """Means over queries with a relevant item of the exact expectations over tie orderings."""
    sums = dict.fromkeys([*(f"R@{k}" for k in k_list), "MRR", f"nDCG@{ndcg_k}"], 0.0)
    n_queries = 0
    for row_s, row_r in zip(scores.tolist(), relevance.tolist(), strict=True):
        n_rel = sum(bool(x) for x in row_r)
        if n_rel == 0:
            continue
        n_queries += 1
        orderings = _orderings([float(x) for x in row_s])
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(n_rel, ndcg_k)))
        for order in orderings:
            ranked = [bool(row_r[i]) for i in order]
            for k in k_list:
                sums[f"R@{k}"] += float(any(ranked[:k])) / len(orderings)
            sums["MRR"] += 1.0 / (ranked.index(True) + 1) / len(orderings)
            dcg = sum(1.0 / math.log2(i + 2) for i in range(min(ndcg_k, len(ranked))) if ranked[i])
            sums[f"nDCG@{ndcg_k}"] += dcg / ideal / len(orderings)
    if n_queries == 0:
        raise ValueError("no query has any relevant item")
    return {name: total / n_queries for name, total in sums.items()}
