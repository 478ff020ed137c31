"""Gradient-conflict diagnostics (chapter 5.10): two objectives fight when ⟨g_a, g_b⟩ < 0.

* :func:`gradient_cosines`: cos(g_a, g_b) over the shared tensors (those two or more objectives
  reach, see ``base``), per pair "a|b" (a before b in the losses' order); 0.0 when either
  gradient is 0 there. The sign is exactly PCGrad's conflict test.
* :func:`conflict_histogram`: per pair, the cosines of the individual parameter tensors both
  objectives reach (tensors where either gradient is 0 are skipped), counted into ``bins`` equal
  bins over [−1, 1]: edges e_k = −1 + 2k/bins, k = 0..bins; bin k holds e_k <= c < e_{k+1}, the
  last bin also holds c = 1. With the default 20 bins, bin 0 is [−1, −0.9) and bin 10 is [0, 0.1).
* :func:`diagnose`: both, keyed for metrics.jsonl: ``conflict/cos/<a>|<b>`` (float),
  ``conflict/hist/<a>|<b>`` (list of ``bins`` ints), ``conflict/grad_norm/<name>`` (‖g_i‖ over all
  tensors it reaches) and ``conflict/hist_edges`` (the bins + 1 edges). Log every 1-2k steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from .base import Grads, VJPMode, per_objective_grads, shared_gram, shared_mask, trainable


def _pairs(grads: Grads) -> list[tuple[str, str]]:
    return list(itertools.combinations(grads, 2))


def bin_edges(bins: int = 20) -> list[float]:
    """The bins + 1 histogram edges, −1 + 2k/bins."""
    return [-1.0 + 2.0 * k / bins for k in range(bins + 1)]


def gradient_cosines(grads: Grads) -> dict[str, float]:
    """cos(g_a, g_b) over the shared tensors, for every pair "a|b"."""
    names = list(grads)
    gram = shared_gram(grads, names, shared_mask(grads))
    out: dict[str, float] = {}
    for a, b in itertools.combinations(range(len(names)), 2):
        denom = float(gram[a, a] * gram[b, b]) ** 0.5
        out[f"{names[a]}|{names[b]}"] = float(gram[a, b]) / denom if denom > 0 else 0.0
    return out


def conflict_histogram(grads: Grads, bins: int = 20) -> dict[str, list[int]]:
    """Per pair "a|b": counts of per-tensor cosines over the tensors both reach, in ``bins`` bins on [−1, 1]."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    out: dict[str, list[int]] = {}
    for a, b in _pairs(grads):
        counts = [0] * bins
        for ga, gb in zip(grads[a], grads[b], strict=True):
            if ga is None or gb is None:
                continue
            x, y = ga.double().reshape(-1), gb.double().reshape(-1)
            denom = float(x.norm() * y.norm())
            if denom == 0:
                continue
            cos = max(-1.0, min(1.0, float(torch.dot(x, y)) / denom))
            counts[min(int((cos + 1.0) / 2.0 * bins), bins - 1)] += 1
        out[f"{a}|{b}"] = counts
    return out


def diagnose(
    losses: Mapping[str, Tensor], params: Iterable[Tensor], bins: int = 20, mode: VJPMode = "auto"
) -> dict[str, Any]:
    """Conflict metrics for metrics.jsonl (JSON-able). Recomputes the per-objective gradients and
    keeps the graph, so call it before the step's backward."""
    params = trainable(params)
    grads = per_objective_grads(losses, params, retain_graph=True, mode=mode)
    record: dict[str, Any] = {}
    for pair, cos in gradient_cosines(grads).items():
        record[f"conflict/cos/{pair}"] = cos
    for pair, counts in conflict_histogram(grads, bins).items():
        record[f"conflict/hist/{pair}"] = counts
    for name, row in grads.items():
        record[f"conflict/grad_norm/{name}"] = (
            sum(float(g.double().square().sum()) for g in row if g is not None) ** 0.5
        )
    record["conflict/hist_edges"] = bin_edges(bins)
    return record
