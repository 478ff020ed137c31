"""How much the V / L / A subspaces of the shared space Z overlap (chapter 5.9): linear CKA and CCA.

Both compare two representations of the *same* N samples (rows paired), x (N, D1) and y (N, D2):

* linear CKA (Kornblith et al., 2019), on column-centred x and y:
      CKA = ‖Yᵀ X‖_F² / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)  ∈ [0, 1],
  invariant to orthogonal transforms and isotropic scaling of either side (not to general linear maps);
* CCA: the canonical correlations ρ_1 ≥ ρ_2 ≥ … , the singular values of the whitened
  cross-covariance Σ_xx^{-1/2} Σ_xy Σ_yy^{-1/2}; invariant to any invertible linear map.
  With N not much larger than D1 + D2 the sample correlations are biased towards 1 (CCA overfits):
  compare values computed on the same N.

Everything is computed in float64 on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ..modalities import PAIR_MODALITIES, PAIRS

__all__ = ["cca", "linear_cka", "mean_cca", "modality_similarity"]


def _centred(x: Tensor, name: str) -> Tensor:
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    return x - x.mean(0, keepdim=True)  # (N, D)


def _check_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    xc, yc = _centred(x, "x"), _centred(y, "y")
    if len(xc) != len(yc):
        raise ValueError(f"x and y must hold the same samples, got {len(xc)} and {len(yc)} rows")
    if len(xc) < 2:
        raise ValueError("need at least 2 samples")
    return xc, yc


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between x (N, D1) and y (N, D2); NaN when either side is constant over samples."""
    xc, yc = _check_pair(x, y)
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2  # ‖Yᵀ X‖_F², (D2, D1) inside
    norm = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    if float(norm) == 0.0:
        return math.nan
    return float((cross / norm).clamp(0.0, 1.0))


def _inv_sqrt(cov: Tensor, eps: float) -> Tensor:
    """(Σ + ε·(tr Σ / D)·I)^{-1/2} for a (D, D) covariance; the ridge is relative to the mean variance."""
    d = len(cov)
    scale = float(torch.diagonal(cov).mean())
    ridge = eps * scale if scale > 0 else eps
    vals, vecs = torch.linalg.eigh(cov + ridge * torch.eye(d, dtype=cov.dtype))  # (D,), (D, D)
    vals = vals.clamp(min=ridge)
    result: Tensor = (vecs * vals.rsqrt()) @ vecs.T  # (D, D)
    return result


def cca(x: Tensor, y: Tensor, k: int | None = None, eps: float = 1e-6) -> Tensor:
    """Canonical correlations of x (N, D1) and y (N, D2), descending, in [0, 1]: (min(k, D1, D2),) float64.

    Σ_xx, Σ_yy get a ridge ε·(mean variance)·I (keeps the whitening finite for rank-deficient data,
    scale-free); ρ = svd(Σ_xx^{-1/2} Σ_xy Σ_yy^{-1/2}). The ridge biases ρ down by about ε·κ² for a
    covariance of condition number κ² (an exact linear map with κ = 24 gives ρ ≈ 0.9999).
    """
    xc, yc = _check_pair(x, y)
    n = len(xc)
    sxx = xc.T @ xc / (n - 1)  # (D1, D1)
    syy = yc.T @ yc / (n - 1)  # (D2, D2)
    sxy = xc.T @ yc / (n - 1)  # (D1, D2)
    t = _inv_sqrt(sxx, eps) @ sxy @ _inv_sqrt(syy, eps)  # (D1, D2)
    rho = torch.linalg.svdvals(t).clamp(0.0, 1.0)  # (min(D1, D2),) descending
    result: Tensor = rho if k is None else rho[: max(int(k), 0)]
    return result


def mean_cca(x: Tensor, y: Tensor, k: int | None = None, eps: float = 1e-6) -> float:
    """Mean of the top-k canonical correlations (all of them with k None); the SVCCA-style summary."""
    rho = cca(x, y, k, eps)
    return float(rho.mean()) if len(rho) else math.nan


def modality_similarity(emb: Mapping[str, Tensor | None], cca_k: int | None = None) -> dict[str, float]:
    """``cka/<a>_<b>`` and ``cca/<a>_<b>`` (mean of the top ``cca_k`` canonical correlations) for every
    pair among image / text / action present in ``emb`` (each (N, D), rows paired), pairs in the order
    image_text, image_action, text_action."""
    out: dict[str, float] = {}
    for pair in PAIRS:
        a, b = PAIR_MODALITIES[pair]
        za, zb = emb.get(a), emb.get(b)
        if za is None or zb is None:
            continue
        out[f"cka/{pair}"] = linear_cka(za, zb)
        out[f"cca/{pair}"] = mean_cca(za, zb, cca_k)
    return out
