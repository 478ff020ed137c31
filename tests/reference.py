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


# --- multi-objective balancing (chapter 5.10): PCGrad, GradNorm, cosines -------------------------
# Gradients are flattened to Python lists of floats (float64) and combined with explicit loops.


def _flat(g: Tensor) -> list[float]:
    return [float(x) for x in g.detach().double().reshape(-1).tolist()]


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def cosine_reference(a: Tensor, b: Tensor) -> float:
    """<a, b> / (|a| |b|), 0.0 when either vector is 0."""
    x, y = _flat(a), _flat(b)
    denom = math.sqrt(_dot(x, x)) * math.sqrt(_dot(y, y))
    return _dot(x, y) / denom if denom > 0 else 0.0


def pcgrad_reference(grads: list[Tensor], order: list[list[int]]) -> list[list[float]]:
    """Projected gradients g_i^PC: for j in order[i], if <g_i^PC, g_j> < 0 (g_j original),
    g_i^PC -= <g_i^PC, g_j> / |g_j|^2 * g_j. Returns one list of floats per objective."""
    flat = [_flat(g) for g in grads]
    out = []
    for i, g_i in enumerate(flat):
        g = list(g_i)
        for j in order[i]:
            d = _dot(g, flat[j])
            sq = _dot(flat[j], flat[j])
            if d < 0 and sq > 0:
                g = [x - d / sq * y for x, y in zip(g, flat[j], strict=True)]
        out.append(g)
    return out


def gradnorm_step_reference(
    weights: list[float],
    grad_norms: list[float],
    losses: list[float],
    initial_losses: list[float],
    alpha: float,
    lr: float,
    eps: float = 1e-8,
) -> list[float]:
    """GradNorm's weights after its *first* update, with Adam (β1=0.9, β2=0.999) on
    L_gn = Σ_i |w_i n_i − Ḡ r_i^α| (Ḡ = mean_i w_i n_i and r_i held constant), then w clamped
    positive and renormalised to Σ w = K. Adam's first step is w -= lr · ĝ / (|ĝ| + eps), ĝ = g."""
    k = len(weights)
    ratio = [losses[i] / initial_losses[i] for i in range(k)]
    mean_ratio = sum(ratio) / k
    rel = [r / mean_ratio for r in ratio]
    g_w = [weights[i] * grad_norms[i] for i in range(k)]
    g_bar = sum(g_w) / k
    new = []
    for i in range(k):
        diff = g_w[i] - g_bar * rel[i] ** alpha
        sign = 1.0 if diff > 0 else (-1.0 if diff < 0 else 0.0)
        grad = sign * grad_norms[i]  # d|w_i n_i - target_i| / dw_i
        m_hat = grad  # (1 - β1) g / (1 - β1)
        v_hat = grad * grad  # (1 - β2) g² / (1 - β2)
        new.append(max(weights[i] - lr * m_hat / (math.sqrt(v_hat) + eps), 1e-4))
    total = sum(new)
    return [w * k / total for w in new]


# --- offline trajectory matching (chapter 5.8): ADE, FDE, DTW -------------------------------------
# One trajectory at a time, as Python lists of floats, with the definitions written out literally.


def _euclid(u: Sequence[float], v: Sequence[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(u, v, strict=True)))


def ade_reference(pred: list[list[float]], target: list[list[float]], mask: list[bool] | None = None) -> float:
    """Mean over valid steps t of ||pred_t − target_t||_2 (NaN without a valid step)."""
    valid = [t for t in range(len(pred)) if mask is None or mask[t]]
    if not valid:
        return math.nan
    return sum(_euclid(pred[t], target[t]) for t in valid) / len(valid)


def fde_reference(pred: list[list[float]], target: list[list[float]], mask: list[bool] | None = None) -> float:
    """||pred_t − target_t||_2 at the largest valid t (NaN without a valid step)."""
    valid = [t for t in range(len(pred)) if mask is None or mask[t]]
    return _euclid(pred[valid[-1]], target[valid[-1]]) if valid else math.nan


def dtw_reference(a: list[list[float]], b: list[list[float]], squared: bool = False) -> float:
    """Textbook DTW, full (n + 1) x (m + 1) table, local cost ||a_i − b_j||², steps (1,0), (0,1), (1,1);
    returns the minimal path sum (squared=True) or its square root."""
    n, m = len(a), len(b)
    table = [[math.inf] * (m + 1) for _ in range(n + 1)]
    table[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = _euclid(a[i - 1], b[j - 1]) ** 2
            table[i][j] = cost + min(table[i - 1][j - 1], table[i - 1][j], table[i][j - 1])
    return table[n][m] if squared else math.sqrt(table[n][m])


def nearest_code_reference(z: list[list[float]], codes: list[list[float]]) -> list[int]:
    """For each vector, the index of the code with the highest cosine similarity (first on ties)."""

    def cos(u: Sequence[float], v: Sequence[float]) -> float:
        return _dot(u, v) / (math.sqrt(_dot(u, u)) * math.sqrt(_dot(v, v)))

    out = []
    for u in z:
        best, best_sim = 0, -math.inf
        for k, e in enumerate(codes):
            s = cos(u, e)
            if s > best_sim:
                best, best_sim = k, s
        out.append(best)
    return out
