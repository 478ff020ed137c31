"""Alignment confusion matrix, per-class hit rates and the InfoNCE MI bound."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vla_align.diagnostics import alignment_confusion, mi_lower_bound, per_class_hit_rate
from vla_align.losses import info_nce


def _random(seed: int, n: int = 30, m: int = 40, d: int = 8, c: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    gal = F.normalize(torch.randn(m, d, generator=g), dim=-1)
    return q, gal, torch.randint(0, c, (n,), generator=g), torch.randint(0, c, (m,), generator=g)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 5, 10, 100])
def test_rows_sum_to_one(seed: int, k: int) -> None:
    q, g, qc, gc = _random(seed)
    amat, classes = alignment_confusion(q, g, qc, gc, k=k)
    assert amat.shape == (len(classes), len(classes)) and amat.dtype == torch.float64
    present = torch.tensor([c in set(qc.tolist()) for c in classes])
    torch.testing.assert_close(amat[present].sum(1), torch.ones(int(present.sum()), dtype=torch.float64))
    assert bool((amat[present] >= 0).all())
    hit, classes2 = per_class_hit_rate(q, g, qc, gc, k=k)
    assert classes2 == classes and bool(((hit[present] >= 0) & (hit[present] <= 1)).all())


def test_perfect_retrieval_gives_the_identity() -> None:
    c, per_class = 5, 3
    g_cls = torch.arange(c).repeat_interleave(per_class)  # (15,)
    q_cls = torch.tensor([0, 1, 2, 3, 4, 4, 2])
    g = F.one_hot(g_cls, c).float() + 0.01 * torch.randn(len(g_cls), c, generator=torch.Generator().manual_seed(0))
    q = F.one_hot(q_cls, c).float()
    amat, classes = alignment_confusion(q, g, q_cls, g_cls, k=per_class)
    assert classes == list(range(c))
    torch.testing.assert_close(amat, torch.eye(c, dtype=torch.float64))
    hit, _ = per_class_hit_rate(q, g, q_cls, g_cls, k=1)
    torch.testing.assert_close(hit, torch.ones(c, dtype=torch.float64))


def test_hand_built_counts() -> None:
    # gallery on a line: scores with q = [1, 0] are 5, 4, 3, 2, 1 (and reversed for q = [-1, 0])
    g = torch.tensor([[5.0, 0.0], [4.0, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    g_cls = ["a", "b", "a", "a", "b"]
    q = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    q_cls = ["a", "b", "c", "a"]  # class c never appears in the gallery
    amat, classes = alignment_confusion(q, g, q_cls, g_cls, k=3)
    assert classes == ["a", "b", "c"]
    # a: top-3 = (a, b, a) twice; b: top-3 = (b, a, a); c: (a, b, a)
    expected = torch.tensor([[2 / 3, 1 / 3, 0.0], [2 / 3, 1 / 3, 0.0], [2 / 3, 1 / 3, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(amat, expected)
    amat1, _ = alignment_confusion(q, g, q_cls, g_cls, k=1)
    torch.testing.assert_close(amat1, torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=torch.float64))
    hit, _ = per_class_hit_rate(q, g, q_cls, g_cls, k=3)
    torch.testing.assert_close(hit, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    # k = 2: the b query sees (b, a): hit; k beyond M is capped at M = 5
    hit2, _ = per_class_hit_rate(q, g, q_cls, g_cls, k=2)
    torch.testing.assert_close(hit2, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    amat_all, _ = alignment_confusion(q, g, q_cls, g_cls, k=50)
    torch.testing.assert_close(amat_all[0], torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64))


def test_explicit_classes() -> None:
    q, g, qc, gc = _random(0, c=3)
    amat, classes = alignment_confusion(q, g, qc, gc, k=5, classes=[2, 1, 0, 7])
    assert classes == [2, 1, 0, 7]
    assert bool(torch.isnan(amat[3]).all())  # no query of class 7
    assert bool((amat[:3, 3] == 0).all())  # nothing retrieved of class 7
    ref, ref_classes = alignment_confusion(q, g, qc, gc, k=5)
    order = [ref_classes.index(c) for c in [2, 1, 0]]
    torch.testing.assert_close(amat[:3, :3], ref[order][:, order])
    with pytest.raises(ValueError):
        alignment_confusion(q, g, qc, gc, k=5, classes=[0, 1])  # label 2 missing
    with pytest.raises(ValueError):
        alignment_confusion(q, g, qc[:-1], gc)


@pytest.mark.parametrize("seed", range(20))
def test_mi_bound_never_exceeds_log_n(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = [2, 3, 8, 64][seed % 4]
    za = F.normalize(torch.randn(n, 16, generator=g), dim=-1)
    zb = F.normalize(za + torch.randn(n, 16, generator=g) * (seed % 3), dim=-1)  # from identical to unrelated
    for scale in (1.0, 14.3, 100.0, 1000.0):
        bound = mi_lower_bound(za, zb, torch.tensor(scale))
        assert bound <= math.log(n)
        assert bound == pytest.approx(
            math.log(n) - float(info_nce(za.double(), zb.double(), torch.tensor(scale).double())), abs=1e-9
        )


def test_mi_bound_approaches_log_n_for_perfect_alignment() -> None:
    n = 32
    z = torch.eye(n, 64)  # orthonormal, perfectly paired
    assert mi_lower_bound(z, z, 100.0) == pytest.approx(math.log(n), abs=1e-9)
    assert mi_lower_bound(z, z, 100.0) <= math.log(n)
    assert mi_lower_bound(z, z, 1.0) < math.log(n) - 1.0  # a small logit scale cannot certify much
    assert mi_lower_bound(z, z.flip(0), 100.0) < 0  # wrong pairing: the bound is useless (negative)
    with pytest.raises(ValueError):
        mi_lower_bound(z, z[:-1], 10.0)
