"""Linear CKA against an explicit HSIC reference and its invariances; CCA against a scipy eigenproblem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from vla_align.diagnostics import cca, linear_cka, mean_cca, modality_similarity

SEEDS = [0, 1, 2, 3, 4]


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X Xᵀ, L = Y Yᵀ, HSIC(K, L) = tr(K H L H) / (n − 1)²."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n  # centering matrix

    def hsic(k: np.ndarray, l_: np.ndarray) -> float:
        return float(np.trace(k @ h @ l_ @ h)) / (n - 1) ** 2

    k, l_ = x @ x.T, y @ y.T
    return hsic(k, l_) / math.sqrt(hsic(k, k) * hsic(l_, l_))


def scipy_cca(x: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """ρ² = eigenvalues of Σ_xx⁻¹ Σ_xy Σ_yy⁻¹ Σ_yx (ridge ε·mean variance as in ``cca``), descending."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    n = len(x)
    sxx, syy, sxy = xc.T @ xc / (n - 1), yc.T @ yc / (n - 1), xc.T @ yc / (n - 1)
    sxx = sxx + eps * np.trace(sxx) / len(sxx) * np.eye(len(sxx))
    syy = syy + eps * np.trace(syy) / len(syy) * np.eye(len(syy))
    m = scipy.linalg.solve(sxx, sxy, assume_a="pos") @ scipy.linalg.solve(syy, sxy.T, assume_a="pos")  # (D1, D1)
    eig = np.sort(np.clip(scipy.linalg.eigvals(m).real, 0, None))[::-1]
    return np.sqrt(eig[: min(x.shape[1], y.shape[1])])


def _pair(seed: int, n: int = 50, d1: int = 6, d2: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64)
    y = x[:, :d2] @ torch.randn(d2, d2, generator=g, dtype=torch.float64) + 0.7 * torch.randn(
        n, d2, generator=g, dtype=torch.float64
    )
    return x, y


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_cka_matches_the_hsic_reference(seed: int) -> None:
    x, y = _pair(seed, n=40, d1=7, d2=3)
    assert abs(linear_cka(x, y) - hsic_cka(x.numpy(), y.numpy())) < 1e-6
    # float32 input and uncentred data: still the float64 answer
    assert abs(linear_cka((x + 3).float(), (y - 1).float()) - hsic_cka(x.numpy(), y.numpy())) < 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling(seed: int) -> None:
    x, y = _pair(seed)
    base = linear_cka(x, y)
    moved = linear_cka(2.5 * x @ _orthogonal(x.shape[1], seed), 0.01 * y @ _orthogonal(y.shape[1], seed + 7))
    assert abs(moved - base) < 1e-10
    assert abs(linear_cka(x, x) - 1.0) < 1e-12
    assert abs(linear_cka(x, x @ _orthogonal(x.shape[1], seed)) - 1.0) < 1e-12
    assert 0.0 <= base <= 1.0
    assert abs(linear_cka(y, x) - base) < 1e-12  # symmetric


def test_linear_cka_edge_cases() -> None:
    x, _ = _pair(0)
    assert math.isnan(linear_cka(x, torch.ones(len(x), 3)))  # constant representation
    with pytest.raises(ValueError):
        linear_cka(x, x[:-1])
    with pytest.raises(ValueError):
        linear_cka(x[:, 0], x[:, 0])


@pytest.mark.parametrize("seed", SEEDS)
def test_cca_matches_a_scipy_reference(seed: int) -> None:
    x, y = _pair(seed, n=60, d1=5, d2=3)
    rho = cca(x, y)
    assert rho.shape == (3,) and rho.dtype == torch.float64
    np.testing.assert_allclose(rho.numpy(), scipy_cca(x.numpy(), y.numpy()), atol=1e-6, rtol=0)
    assert bool((rho[:-1] >= rho[1:]).all()) and bool((rho >= 0).all()) and bool((rho <= 1).all())
    np.testing.assert_allclose(cca(y, x).numpy(), rho.numpy(), atol=1e-9)  # symmetric
    assert cca(x, y, k=2).shape == (2,)


@pytest.mark.parametrize("seed", SEEDS)
def test_cca_of_an_invertible_linear_map_is_one_and_of_noise_is_small(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(500, 4, generator=g)
    # well conditioned (singular values 1..2): the ridge biases ρ down by about ε·κ²
    m = (_orthogonal(4, seed) * torch.linspace(1.0, 2.0, 4, dtype=torch.float64)).float()
    rho = cca(x, x @ m + 5.0)
    assert float(rho.min()) > 1 - 1e-4
    assert mean_cca(x, x @ m, k=2) > 1 - 1e-4
    # a map into more dimensions: still min(D1, D2) = 4 correlations of 1 (the ridge handles rank deficiency)
    assert float(cca(x, x @ torch.randn(4, 6, generator=g)).min()) > 1 - 1e-3
    noise = torch.randn(2000, 4, generator=g)
    assert float(cca(torch.randn(2000, 4, generator=g), noise).max()) < 0.15
    # invariance to isotropic scaling of either side
    y = torch.randn(500, 3, generator=g) + x[:, :3]
    np.testing.assert_allclose(cca(x, y).numpy(), cca(1e3 * x, 1e-3 * y).numpy(), atol=1e-8)


def test_modality_similarity_keys_and_values() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(80, 8, generator=g)
    emb = {"image": image, "text": image @ _orthogonal(8, 0).float(), "action": torch.randn(80, 8, generator=g)}
    out = modality_similarity(emb)
    assert list(out) == [
        "cka/image_text",
        "cca/image_text",
        "cka/image_action",
        "cca/image_action",
        "cka/text_action",
        "cca/text_action",
    ]
    assert out["cka/image_text"] == pytest.approx(1.0, abs=1e-6)
    assert out["cca/image_text"] == pytest.approx(1.0, abs=1e-4)
    assert out["cka/image_action"] < 0.5
    assert set(modality_similarity({"image": image, "action": emb["action"]})) == {
        "cka/image_action",
        "cca/image_action",
    }
    assert modality_similarity({"image": image, "text": None, "action": emb["action"]}).keys() == {
        "cka/image_action",
        "cca/image_action",
    }
