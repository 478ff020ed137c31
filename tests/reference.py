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
from typing import Any

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


# --- memory-bank InfoNCE (chapter 5.7): the queue's entries as extra columns ----------------------


def info_nce_memory_reference(
    z_a: Tensor,
    z_b: Tensor,
    logit_scale: Tensor,
    groups: Sequence[int],
    queue_a: Tensor,
    queue_b: Tensor,
    queue_groups_a: Sequence[int],
    queue_groups_b: Sequence[int],
    shared: bool,
) -> Tensor:
    """0.5 * (mean_i loss of row z_a,i over [z_b ; queue_b] + mean_i loss of row z_b,i over [z_a ; queue_a]).
    Row i's positives: its own partner, and with ``shared`` every batch sample and queue entry whose group is
    groups[i]; the target is uniform over them. One scalar torch op at a time (keep B, Q <= 8)."""
    n, d = z_a.shape

    def dot(u: Tensor, v: Tensor) -> Tensor:
        return sum((u[k] * v[k] for k in range(d)), torch.zeros((), dtype=z_a.dtype))

    def direction(rows: Tensor, batch: Tensor, queue: Tensor, queue_groups: Sequence[int]) -> Tensor:
        total = torch.zeros((), dtype=z_a.dtype)
        for i in range(n):
            columns = [batch[j] for j in range(n)] + [queue[k] for k in range(len(queue))]
            column_groups = list(groups) + list(queue_groups)
            sims = [logit_scale * dot(rows[i], c) for c in columns]
            denom = sum((torch.exp(s) for s in sims), torch.zeros((), dtype=z_a.dtype))
            positive = [j == i or (shared and column_groups[j] == groups[i]) for j in range(len(columns))]
            n_pos = sum(positive)
            for j, s in enumerate(sims):
                if positive[j]:
                    total = total - (1.0 / n_pos) * torch.log(torch.exp(s) / denom)
        return total / n

    return 0.5 * (direction(z_a, z_b, queue_b, queue_groups_b) + direction(z_b, z_a, queue_a, queue_groups_a))


def mutual_vote_reference(
    image: list[list[float]],
    image_owner: list[int],
    action: list[list[float]],
    action_owner: list[int],
    text: list[list[float]],
    text_id: list[int],
    top_k: int,
    action_top: float,
    pool: str,
) -> dict[str, list[tuple[int, float, float]]]:
    """The four mutual votes of ``vla_align.vote`` per episode, as (rank, margin, slack), by plain loops.

    Parts are unit vectors. ``mean`` pools an episode's parts to their renormalised mean; ``max`` scores
    an episode by its best part (for image-action only the frames). Instruction votes rank the own
    instruction among all distinct ones; action votes rank the own episode among the episodes with another
    instruction (image->action: also not the one the image scores highest), passing within the top
    ceil(action_top * candidates) (at least 1). rank = 1 + competitors
    scoring strictly higher; margin = own - best competitor; slack = own - cutoff-th best competitor."""
    n = len(text_id)

    def unit(v: list[float]) -> list[float]:
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    def pooled(parts: list[list[float]], owner: list[int]) -> list[list[float]]:
        out = []
        for e in range(n):
            mine = [p for p, o in zip(parts, owner, strict=True) if o == e]
            out.append(unit([sum(p[k] for p in mine) for k in range(len(mine[0]))]))
        return out

    def score(parts: list[list[float]], owner: list[int], e: int, target: list[float]) -> float:
        if pool == "mean":
            return _dot(pooled(parts, owner)[e], target)
        return max(_dot(p, target) for p, o in zip(parts, owner, strict=True) if o == e)

    def verdict(own: float, rivals: list[float], cutoff: int) -> tuple[int, float, float]:
        best = sorted(rivals, reverse=True)
        return 1 + sum(1 for r in rivals if r > own), own - best[0], own - best[min(cutoff, len(best)) - 1]

    def cutoff(rivals: int) -> int:
        return max(1, math.ceil(action_top * (rivals + 1)))

    actions = pooled(action, action_owner)
    out: dict[str, list[tuple[int, float, float]]] = {v: [] for v in ("image_to_text", "action_to_text")}
    out["image_to_action"], out["text_to_action"] = [], []
    for e in range(n):
        own_t = text_id[e]
        others = [g for g in range(len(text)) if g != own_t]
        for name, parts, owner in (("image_to_text", image, image_owner), ("action_to_text", action, action_owner)):
            scores = [score(parts, owner, e, text[g]) for g in range(len(text))]
            out[name].append(verdict(scores[own_t], [scores[g] for g in others], top_k))
        it = [score(image, image_owner, e, text[g]) for g in range(len(text))]
        seen = max(range(len(text)), key=lambda g: (it[g], -g))  # the image's first instruction
        ia = [score(image, image_owner, e, actions[f]) for f in range(n)]
        rivals = [f for f in range(n) if text_id[f] not in (own_t, seen)]
        out["image_to_action"].append(verdict(ia[e], [ia[f] for f in rivals], cutoff(len(rivals))))
        ta = [score(action, action_owner, f, text[own_t]) for f in range(n)]
        rivals = [f for f in range(n) if text_id[f] != own_t]
        out["text_to_action"].append(verdict(ta[e], [ta[f] for f in rivals], cutoff(len(rivals))))
    return out


def dedup_check_reference(
    a: list[list[list[list[float]]]], b: list[list[list[list[float]]]], grid: int, shift: int
) -> float:
    """The dedup check's frame difference, one loop per pixel: frames ``a`` and ``b`` (K, H, W, C) are cut
    to their interior (a ``shift`` + 1 pixel border dropped; ``b``'s window moved by (dy, dx)), averaged
    into ``grid`` x ``grid`` cells with fractional pixel overlaps, and the largest |cell difference| is
    taken; returns its minimum over dy, dx in [-shift, shift]."""
    k, h, w, c = len(a), len(a[0]), len(a[0][0]), len(a[0][0][0])
    m = shift + 1

    def cells(frames: list[list[list[list[float]]]], dy: int, dx: int) -> list[float]:
        out = []
        for t in range(k):
            for r in range(grid):
                y0, y1 = m + dy + (h - 2 * m) * r / grid, m + dy + (h - 2 * m) * (r + 1) / grid
                for s in range(grid):
                    x0, x1 = m + dx + (w - 2 * m) * s / grid, m + dx + (w - 2 * m) * (s + 1) / grid
                    for ch in range(c):
                        total = weight = 0.0
                        for y in range(h):
                            wy = max(0.0, min(y + 1, y1) - max(y, y0))
                            for x in range(w):
                                wxy = wy * max(0.0, min(x + 1, x1) - max(x, x0))
                                total += wxy * frames[t][y][x][ch]
                                weight += wxy
                        out.append(total / weight)
        return out

    base = cells(a, 0, 0)
    best = math.inf
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            other = cells(b, dy, dx)
            best = min(best, max(abs(u - v) for u, v in zip(base, other, strict=True)))
    return best


def lag_scores_reference(pred: Any, target: Any, max_lag: int, min_len: int) -> list[float]:
    """Normalised cross-correlation of ``pred`` at row t with ``target`` at row t - k, for k = -max_lag ..
    max_lag, one element at a time: centre each side over the overlapping rows, sum the products over
    rows and channels, divide by the square root of the product of the sums of squares (NaN when fewer
    than ``min_len`` rows overlap)."""
    n, c = len(pred), len(pred[0])
    out = []
    for k in range(-max_lag, max_lag + 1):
        rows = [t for t in range(n) if 0 <= t - k < n]
        if len(rows) < min_len:
            out.append(math.nan)
            continue
        mp = [sum(float(pred[t][j]) for t in rows) / len(rows) for j in range(c)]
        mt = [sum(float(target[t - k][j]) for t in rows) / len(rows) for j in range(c)]
        num = pp = tt = 0.0
        for t in rows:
            for j in range(c):
                a, b = float(pred[t][j]) - mp[j], float(target[t - k][j]) - mt[j]
                num, pp, tt = num + a * b, pp + a * a, tt + b * b
        out.append(num / math.sqrt(pp * tt))
    return out
