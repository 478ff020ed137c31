"""ADE / FDE / DTW against naive loops (tests/reference.py) and against dtaidistance as an oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tests.reference import ade_reference, dtw_reference, fde_reference

from vla_align.trajectory import ade, dtw, dtw_batch, fde, step_distances, trajectory_metrics


def _batch(seed: int = 0, b: int = 5, t: int = 7, a: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(b, t, a, generator=g, dtype=torch.float64)
    target = torch.randn(b, t, a, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.3  # holes anywhere, not only at the end
    mask[0] = True  # one full row
    mask[1] = torch.arange(t) < 3  # a padded prefix
    mask[2, :] = False
    mask[2, 0] = True  # a single valid step
    return pred, target, mask


def test_ade_fde_match_reference_with_masks() -> None:
    pred, target, mask = _batch()
    got_ade, got_fde = ade(pred, target, mask), fde(pred, target, mask)
    assert got_ade.shape == got_fde.shape == (5,)
    for i in range(5):
        args = (pred[i].tolist(), target[i].tolist(), mask[i].tolist())
        assert got_ade[i].item() == pytest.approx(ade_reference(*args), abs=1e-12)
        assert got_fde[i].item() == pytest.approx(fde_reference(*args), abs=1e-12)


def test_ade_fde_hand_values_and_single_trajectory() -> None:
    target = torch.zeros(3, 2)
    pred = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])  # distances 5, 1, 10
    assert ade(pred, target).shape == ()
    assert ade(pred, target).item() == pytest.approx(16 / 3)
    assert fde(pred, target).item() == pytest.approx(10.0)
    mask = torch.tensor([True, True, False])
    assert ade(pred, target, mask).item() == pytest.approx(3.0)
    assert fde(pred, target, mask).item() == pytest.approx(1.0)  # last *valid* step
    assert torch.allclose(step_distances(pred, target), torch.tensor([5.0, 1.0, 10.0]))
    one = torch.tensor([[1.0, 0.0]])  # length 1
    assert ade(one, torch.zeros(1, 2)).item() == fde(one, torch.zeros(1, 2)).item() == 1.0


def test_no_valid_step_is_nan_and_excluded_from_means() -> None:
    pred, target, mask = _batch()
    mask[3] = False
    assert math.isnan(ade(pred, target, mask)[3].item()) and math.isnan(fde(pred, target, mask)[3].item())
    assert math.isnan(dtw_batch(pred, target, mask, mask)[3].item())
    got = trajectory_metrics(pred, target, mask)
    keep = [0, 1, 2, 4]
    assert got["traj/ade"] == pytest.approx(float(ade(pred, target, mask)[keep].mean()))
    assert got["traj/fde"] == pytest.approx(float(fde(pred, target, mask)[keep].mean()))
    assert got["traj/dtw"] == pytest.approx(float(dtw_batch(pred, target, mask, mask)[keep].mean()))
    with pytest.raises(ValueError, match="no valid step"):
        trajectory_metrics(pred, target, torch.zeros_like(mask))


def test_ade_is_differentiable() -> None:
    pred = torch.randn(2, 4, 3, requires_grad=True)
    ade(pred, torch.zeros(2, 4, 3)).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


@pytest.mark.parametrize(("n", "m", "a"), [(1, 1, 2), (1, 6, 3), (6, 1, 3), (5, 9, 4), (12, 7, 1), (8, 8, 2)])
def test_dtw_matches_reference_and_dtaidistance(n: int, m: int, a: int) -> None:
    dtw_ndim = pytest.importorskip("dtaidistance.dtw_ndim")
    rng = np.random.default_rng(n * 100 + m * 10 + a)
    x, y = rng.normal(size=(n, a)), rng.normal(size=(m, a))
    got = dtw(x, y)
    assert abs(got - dtw_reference(x.tolist(), y.tolist())) < 1e-9
    assert abs(got - dtw_ndim.distance(x, y, use_c=False)) < 1e-6
    assert abs(dtw(x, y, squared=True) - dtw_reference(x.tolist(), y.tolist(), squared=True)) < 1e-9
    assert dtw(x, y, squared=True) == pytest.approx(got**2, rel=1e-12)


def test_dtw_properties() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(4, 2))
    assert dtw(x, x) == 0.0
    assert dtw(x, y) == pytest.approx(dtw(y, x), abs=1e-12)
    # a time-stretched copy costs nothing: every step of the slow one matches its original
    assert dtw(x, np.repeat(x, 2, axis=0)) == 0.0
    # matched step by step, DTW <= sqrt(sum of squared step distances)
    z = rng.normal(size=(6, 2))
    assert dtw(x, z) <= math.sqrt(float(((x - z) ** 2).sum())) + 1e-12
    # 1-D sequences are (T, 1), tensors work too
    assert dtw(np.array([0.0, 1.0, 2.0]), torch.tensor([0.0, 2.0])) == pytest.approx(1.0)


def test_dtw_batch_uses_valid_steps_only() -> None:
    pred, target, mask = _batch(seed=1, b=4, t=9, a=2)
    mask_b = torch.roll(mask, 2, dims=1)  # different masks for the two sides
    got = dtw_batch(pred, target, mask, mask_b)
    got_sq = dtw_batch(pred, target, mask, mask_b, squared=True)
    for i in range(4):
        x, y = pred[i][mask[i]], target[i][mask_b[i]]
        if len(x) == 0 or len(y) == 0:
            assert math.isnan(got[i].item())
            continue
        assert got[i].item() == pytest.approx(dtw(x, y), abs=1e-12)
        assert got_sq[i].item() == pytest.approx(dtw(x, y, squared=True), abs=1e-12)
    # different lengths across the batch and between sides
    short = dtw_batch(pred, target[:, :5], None, None)
    assert short[0].item() == pytest.approx(dtw(pred[0], target[0, :5]), abs=1e-12)


def test_errors_name_the_argument() -> None:
    x = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="target shape"):
        ade(x, torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="mask shape"):
        fde(x, x, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be a bool"):
        ade(x, x, torch.ones(2, 4))
    with pytest.raises(ValueError, match="pred must be"):
        ade(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="b has 2 dimensions"):
        dtw(np.zeros((3, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="a must have at least one step"):
        dtw(np.zeros((0, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="b must be"):
        dtw_batch(x, torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="mask_b"):
        dtw_batch(x, x, None, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="pred must be"):
        trajectory_metrics(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))


def test_trajectory_metrics_keys_and_single_trajectory() -> None:
    pred, target = torch.zeros(4, 2), torch.ones(4, 2)
    got = trajectory_metrics(pred, target)
    assert set(got) == {"traj/ade", "traj/fde", "traj/dtw"}
    assert got["traj/ade"] == pytest.approx(math.sqrt(2))
    assert got["traj/fde"] == pytest.approx(math.sqrt(2))
    assert got["traj/dtw"] == pytest.approx(math.sqrt(4 * 2))  # diagonal path, 4 steps of squared cost 2


def _dtaidistance_c() -> object:
    dtw_ndim = pytest.importorskip("dtaidistance.dtw_ndim")
    try:
        dtw_ndim.distance(np.zeros((2, 2)), np.ones((3, 2)), use_c=True)
    except Exception:  # the C extension is optional in dtaidistance
        pytest.skip("dtaidistance was installed without its C extension")
    return dtw_ndim


@pytest.mark.parametrize(("b", "t1", "t2", "a"), [(64, 8, 8, 4), (5, 30, 17, 3), (3, 1, 9, 2), (7, 40, 40, 1)])
def test_dtw_batch_bit_identical_to_dtaidistance_c(b: int, t1: int, t2: int, a: int) -> None:
    dtw_ndim = _dtaidistance_c()
    rng = np.random.default_rng(b + t1 + t2 + a)
    x, y = rng.normal(size=(b, t1, a)), rng.normal(size=(b, t2, a))
    mask_a, mask_b = rng.random((b, t1)) > 0.25, rng.random((b, t2)) > 0.25  # unequal lengths per pair
    mask_a[:, 0] = mask_b[:, 0] = True
    for ma, mb in ((None, None), (mask_a, mask_b)):
        got = dtw_batch(x, y, ma, mb).numpy()
        got_sq = dtw_batch(torch.from_numpy(x).float(), torch.from_numpy(y).float(), ma, mb, squared=True).numpy()
        for i in range(b):
            xi = x[i] if ma is None else x[i][ma[i]]
            yi = y[i] if mb is None else y[i][mb[i]]
            assert got[i] == dtw_ndim.distance(xi, yi, use_c=True)  # exact, same summation order
            xf, yf = xi.astype(np.float32).astype(np.float64), yi.astype(np.float32).astype(np.float64)
            assert got_sq[i] == pytest.approx(dtw_ndim.distance(xf, yf, use_c=True) ** 2, rel=1e-14, abs=0)
    assert dtw(x[0], y[0]) == dtw_ndim.distance(x[0], y[0], use_c=True)
