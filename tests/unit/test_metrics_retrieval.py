"""Retrieval metrics: torchmetrics / scikit-learn as oracles, brute force over tie orderings, properties."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch
from sklearn.metrics import ndcg_score
from tests.reference import retrieval_reference
from torchmetrics.functional.retrieval import (
    retrieval_hit_rate,
    retrieval_normalized_dcg,
    retrieval_reciprocal_rank,
)

from vla_align.metrics import retrieval_per_query, retrieval_scores

KS = (1, 5, 10)
TOL = 1e-6


def _relevance(q: int, g: int, p: float, empty: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Several positives per query; rows in ``empty`` have none, every other row at least one."""
    rel = torch.rand(q, g, generator=gen) < p
    rel[torch.arange(q), torch.randint(0, g, (q,), generator=gen)] = True
    rel[list(empty)] = False
    return rel


def _tm_row(scores: torch.Tensor, rel: torch.Tensor, ks: tuple[int, ...], ndcg_k: int) -> dict[str, float]:
    out = {f"R@{k}": float(retrieval_hit_rate(scores, rel, top_k=k)) for k in ks}
    out["MRR"] = float(retrieval_reciprocal_rank(scores, rel))
    out[f"nDCG@{ndcg_k}"] = float(retrieval_normalized_dcg(scores, rel, top_k=ndcg_k))
    return out


def _tie_breakings(row: torch.Tensor) -> list[torch.Tensor]:
    """``row`` plus tiny distinct epsilons, permuted over the items of each tie group in every order."""
    values = sorted(set(row.tolist()), reverse=True)
    groups = [(row == v).nonzero().squeeze(1).tolist() for v in values]
    out = []
    for choice in itertools.product(*map(itertools.permutations, groups)):
        eps = torch.zeros_like(row)
        for members in choice:
            for rank, item in enumerate(members):
                eps[item] = 1e-3 * (len(members) - rank)  # << the gap of 1 between distinct scores
        out.append(row + eps)
    return out


def _tie_oracle(scores: torch.Tensor, rel: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """Mean over queries of torchmetrics' hit rate / reciprocal rank averaged over every tie-breaking."""
    sums = dict.fromkeys([*(f"R@{k}" for k in ks), "MRR"], 0.0)
    valid = [i for i in range(len(scores)) if rel[i].any()]
    for i in valid:
        broken = _tie_breakings(scores[i])
        for preds in broken:
            assert len(set(preds.tolist())) == len(preds)
            for k in ks:
                sums[f"R@{k}"] += float(retrieval_hit_rate(preds, rel[i], top_k=k)) / len(broken)
            sums["MRR"] += float(retrieval_reciprocal_rank(preds, rel[i])) / len(broken)
    return {name: total / len(valid) for name, total in sums.items()}


def _assert_close(got: dict[str, float], want: dict[str, float], tol: float = TOL) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=tol), name


# --- oracles -------------------------------------------------------------------------------------------


def test_no_ties_matches_torchmetrics() -> None:
    gen = torch.Generator().manual_seed(0)
    q, g, empty = 50, 40, (3, 17, 41)
    # torchmetrics' reciprocal rank zeroes the relevance of items scored <= 0: keep every score > 0.
    scores = torch.rand(q, g, generator=gen) + 0.05
    assert all(len(set(row.tolist())) == g for row in scores)  # no ties
    rel = _relevance(q, g, 0.15, empty, gen)
    assert int(rel.sum(1).max()) > 3  # several positives per query

    per_query = retrieval_per_query(scores, rel, KS, 10)
    rows = [i for i in range(q) if i not in empty]
    for i in rows:
        _assert_close({n: float(v[i]) for n, v in per_query.items()}, _tm_row(scores[i], rel[i], KS, 10))
    for i in empty:
        assert all(torch.isnan(v[i]) for v in per_query.values())

    expected = {n: sum(_tm_row(scores[i], rel[i], KS, 10)[n] for i in rows) / len(rows) for n in per_query}
    _assert_close(retrieval_scores(scores, rel, KS, 10), expected)


@pytest.mark.parametrize(("ks", "ndcg_k"), [((1, 5, 10), 10), ((1, 2, 3), 3), ((2, 4), 5), ((1,), 1)])
def test_ties_match_torchmetrics_over_all_tie_breakings(ks: tuple[int, ...], ndcg_k: int) -> None:
    gen = torch.Generator().manual_seed(1)
    q, g = 30, 6
    scores = torch.randint(0, 4, (q, g), generator=gen).double() + 1.0
    rel = _relevance(q, g, 0.3, (5,), gen)
    got = retrieval_scores(scores, rel, ks, ndcg_k)

    # nDCG: torchmetrics (ignore_ties=False) and scikit-learn both average the gain over tie groups.
    valid = rel.any(1)
    tm_ndcg = [float(retrieval_normalized_dcg(scores[i], rel[i], top_k=ndcg_k)) for i in range(q) if valid[i]]
    assert got[f"nDCG@{ndcg_k}"] == pytest.approx(sum(tm_ndcg) / len(tm_ndcg), abs=TOL)
    sk = ndcg_score(rel[valid].double().numpy(), scores[valid].numpy(), k=ndcg_k)
    assert got[f"nDCG@{ndcg_k}"] == pytest.approx(sk, abs=1e-12)

    # R@K and MRR: the exact expectation over every tie-breaking, each scored by torchmetrics.
    oracle = _tie_oracle(scores, rel, ks)
    _assert_close({n: got[n] for n in oracle}, oracle)
    _assert_close(got, retrieval_reference(scores, rel, ks, ndcg_k), tol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_ties_match_brute_force_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    q, g = 25, 7
    scores = torch.randint(0, 3, (q, g), generator=gen).float()  # float32 input, large tie groups
    rel = _relevance(q, g, 0.25, (0,), gen)
    for ks, ndcg_k in [((1, 5, 10), 10), ((1, 2, 3), 2), ((3,), 4)]:
        _assert_close(retrieval_scores(scores, rel, ks, ndcg_k), retrieval_reference(scores, rel, ks, ndcg_k), 1e-12)


def test_worked_example() -> None:
    # One relevant item inside a group of three tied items at ranks 2-4.
    scores = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])
    rel = torch.tensor([[False, False, True, False, False]])
    got = retrieval_scores(scores, rel, (1, 2, 3, 4), 10)
    assert got["R@1"] == 0.0
    assert got["R@2"] == pytest.approx(1 / 3, abs=1e-15)
    assert got["R@3"] == pytest.approx(2 / 3, abs=1e-15)
    assert got["R@4"] == 1.0
    assert got["MRR"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3, abs=1e-15)
    expected_ndcg = sum(1 / math.log2(r + 1) for r in (2, 3, 4)) / 3
    assert got["nDCG@10"] == pytest.approx(expected_ndcg, abs=1e-15)


def test_large_tie_groups_consistency() -> None:
    # Groups of ~25 items straddle every cut-off (the expensive tie paths); checked against scikit-learn
    # for nDCG, the hypergeometric formula evaluated with math.comb for R@K, and for MRR the identity
    # E[1/rank] = sum_t (P(hit@t) - P(hit@(t-1))) / t.
    gen = torch.Generator().manual_seed(7)
    q, g = 40, 200
    scores = torch.randint(0, 8, (q, g), generator=gen).double()
    rel = _relevance(q, g, 0.03, (2,), gen)
    valid = rel.any(1)
    ks = tuple(range(1, g + 1))
    per_query = retrieval_per_query(scores, rel, ks, 5)

    sk = ndcg_score(rel[valid].double().numpy(), scores[valid].numpy(), k=5)
    assert float(per_query["nDCG@5"][valid].mean()) == pytest.approx(sk, abs=1e-12)

    for i in torch.nonzero(valid).squeeze(1).tolist():
        row, row_rel = scores[i], rel[i]
        for k in (1, 5, 10, 37):
            v = row.sort(descending=True).values[k - 1]
            above, group = row > v, row == v
            r, n = int((group & row_rel).sum()), int(group.sum())
            slots = k - int(above.sum())
            want = 1.0 if (above & row_rel).any() else 1 - math.comb(n - r, slots) / math.comb(n, slots)
            assert float(per_query[f"R@{k}"][i]) == pytest.approx(want, abs=1e-12)
        hits = torch.stack([per_query[f"R@{t}"][i] for t in ks])
        mrr = float(((hits - torch.cat([hits.new_zeros(1), hits[:-1]])) / torch.arange(1, g + 1)).sum())
        assert float(per_query["MRR"][i]) == pytest.approx(mrr, abs=1e-12)


# --- properties ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_perfect_ranking_is_one(tied: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    rel = _relevance(20, 30, 0.2, (), gen)
    noise = 0.0 if tied else 0.1 * torch.rand(20, 30, generator=gen)
    scores = rel.double() + noise  # every relevant item above every irrelevant one
    for value in retrieval_scores(scores, rel, (1, 5, 10, 50), 10).values():
        assert value == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("tied", [False, True])
def test_invariant_to_gallery_permutation_and_shift(tied: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    q, g = 30, 25
    scores = torch.randint(0, 5, (q, g), generator=gen).double() if tied else torch.rand(q, g, generator=gen).double()
    rel = _relevance(q, g, 0.2, (4,), gen)
    base = retrieval_per_query(scores, rel, (1, 3, 5, 10), 7)
    perm = torch.randperm(g, generator=gen)
    for s, r in [(scores[:, perm], rel[:, perm]), (scores + 3.0, rel), (scores - 0.5, rel)]:
        other = retrieval_per_query(s, r, (1, 3, 5, 10), 7)
        for name in base:
            assert torch.allclose(other[name], base[name], rtol=0, atol=1e-12, equal_nan=True), name


def test_keys_cutoffs_beyond_gallery_and_dtypes() -> None:
    gen = torch.Generator().manual_seed(4)
    scores = torch.randint(0, 3, (10, 7), generator=gen).float()
    rel = _relevance(10, 7, 0.3, (), gen)
    got = retrieval_scores(scores, rel, (1, 5, 10), 20)
    assert list(got) == ["R@1", "R@5", "R@10", "MRR", "nDCG@20"]
    assert got["R@10"] == 1.0  # K >= G: every relevant item is retrieved
    _assert_close(retrieval_scores(scores.double(), rel, (1, 5, 10), 20), got, 1e-15)
    _assert_close(retrieval_scores(scores.long(), rel, (1, 5, 10), 20), got, 1e-15)
    per_query = retrieval_per_query(scores, rel)
    assert all(v.shape == (10,) and v.dtype == torch.float64 for v in per_query.values())


def test_invalid_inputs() -> None:
    scores = torch.rand(3, 4)
    with pytest.raises(ValueError, match="no query"):
        retrieval_scores(scores, torch.zeros(3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        retrieval_scores(scores, torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"\(Q, G\)"):
        retrieval_scores(scores, torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive"):
        retrieval_scores(scores, torch.ones(3, 4, dtype=torch.bool), ks=(0,))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_scores(torch.full((3, 4), float("nan")), torch.ones(3, 4, dtype=torch.bool))


def test_fast_on_large_inputs() -> None:
    gen = torch.Generator().manual_seed(5)
    q, g = 1500, 2000
    rel = torch.rand(q, g, generator=gen) < 0.005
    for scores in (torch.randn(q, g, generator=gen), torch.randint(0, 30, (q, g), generator=gen).float()):
        retrieval_scores(scores[:10], rel[:10])  # warm-up
        start = time.perf_counter()
        retrieval_scores(scores, rel)
        assert time.perf_counter() - start < 1.0
