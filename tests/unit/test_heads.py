"""Continuous policy heads: the common contract for every registered head, then each head's own maths."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from vla_align.config import from_dict
from vla_align.errors import ConfigError
from vla_align.heads import (
    HEADS,
    BinnedHead,
    BinnedHeadConfig,
    FlowHead,
    FlowHeadConfig,
    HeadConfig,
    RegressionHeadConfig,
    build_head,
    euler_integrate,
    masked_mean,
)

B, D, T, A = 6, 12, 4, 3


def _cfg(name: str, **kw: Any) -> HeadConfig:
    return HEADS.get(name)(**{"chunk_len": T, "action_dim": A, "hidden": 32, **kw})


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(B, D, generator=g)
    target = torch.rand(B, T, A, generator=g) * 1.6 - 0.8  # inside the binned head's default [-1, 1]
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 2:] = False  # chunks padded at an episode end
    mask[3, 1:] = False
    return cond, target, mask


def _loss(head: torch.nn.Module, cond: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return head.loss(cond, target, mask, generator=torch.Generator().manual_seed(7))  # type: ignore[operator]


def test_registry_knows_every_head() -> None:
    assert HEADS.names() == ["binned", "flow", "regression"]
    with pytest.raises(ConfigError, match="unknown action head 'diffusion'; known: binned, flow, regression"):
        HEADS.get("diffusion")


@pytest.mark.parametrize("name", HEADS.names())
def test_shapes_and_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    head = _cfg(name).build(D)
    cond, target, mask = _batch()
    loss = _loss(head, cond, target, mask)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: {pname} gets no gradient"
    out = head.sample(cond, torch.Generator().manual_seed(0))
    assert out.shape == (B, T, A) and out.dtype == torch.float32 and not out.requires_grad


@pytest.mark.parametrize("name", HEADS.names())
def test_masked_steps_do_not_affect_the_loss(name: str) -> None:
    torch.manual_seed(0)
    head = build_head(_cfg(name), D)
    cond, target, mask = _batch()
    other = target.clone()
    other[~mask] = torch.tensor([1e6, float("nan"), -3.0])  # anything at the padded steps, even NaN
    a, b = _loss(head, cond, target, mask), _loss(head, cond, other, mask)
    assert torch.isfinite(b) and torch.equal(a, b)
    changed = target.clone()
    changed[mask] += 0.3  # a valid step does change it
    assert not torch.equal(a, _loss(head, cond, changed, mask))


@pytest.mark.parametrize(("name", "factor"), [("regression", 20.0), ("binned", 20.0), ("flow", 8.0)])
def test_each_head_overfits_a_tiny_batch(name: str, factor: float) -> None:
    torch.manual_seed(0)
    head = build_head(_cfg(name, hidden=64), D)
    cond, target, mask = _batch()  # 6 chunks, each seen 8 times per step (8 noise draws for flow)
    train = cond.repeat(8, 1), target.repeat(8, 1, 1), mask.repeat(8, 1)
    evaluate = cond.repeat(16, 1), target.repeat(16, 1, 1), mask.repeat(16, 1)  # fixed noise: low variance
    before = _loss(head, *evaluate).item()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 150)
    for _ in range(150):
        loss = head.loss(*train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    after = _loss(head, *evaluate).item()
    assert after < before / factor, f"{name}: loss {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("name", HEADS.names())
def test_sample_is_deterministic_with_a_generator(name: str) -> None:
    torch.manual_seed(0)
    head = build_head(_cfg(name, **({"temperature": 1.0} if name == "binned" else {})), D)
    cond, _, _ = _batch()
    first = head.sample(cond, torch.Generator().manual_seed(3))
    assert torch.equal(first, head.sample(cond, torch.Generator().manual_seed(3)))
    if name != "regression":  # stochastic heads: another seed, another chunk
        assert not torch.equal(first, head.sample(cond, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (HeadConfig, "name", "diffusion"),
        (FlowHeadConfig, "chunk_len", 0),
        (RegressionHeadConfig, "action_dim", 0),
        (BinnedHeadConfig, "hidden", 4),
        (HeadConfig, "depth", 0),
        (RegressionHeadConfig, "reg_loss", "huber"),
        (BinnedHeadConfig, "bins", 1),
        (BinnedHeadConfig, "temperature", -1.0),
        (FlowHeadConfig, "steps", 0),
        (FlowHeadConfig, "time_alpha", 0.0),
        (FlowHeadConfig, "time_min", 1.0),
        (FlowHeadConfig, "time_dim", 7),
    ],
)
def test_config_errors_name_the_field(cls: type[HeadConfig], field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"model\.policy\.head\.{field}\b"):
        cls(**{field: value})  # type: ignore[arg-type]


def test_config_round_trips_through_dicts() -> None:
    cfg = _cfg("flow", steps=5)
    assert from_dict(HeadConfig, dataclasses.asdict(cfg)) == cfg


def test_input_shape_errors_name_the_argument() -> None:
    head = build_head(_cfg("regression"), D)
    cond, target, mask = _batch()
    with pytest.raises(ValueError, match="cond must be"):
        head.loss(cond[:, :5], target, mask)
    with pytest.raises(ValueError, match="target must be"):
        head.loss(cond, target[:, :2], mask)
    with pytest.raises(ValueError, match="mask must be a bool"):
        head.loss(cond, target, mask.float())


def test_masked_mean() -> None:
    values = torch.tensor([[[1.0, 3.0], [5.0, 7.0]], [[2.0, 2.0], [100.0, 100.0]]])  # (2, 2, 2)
    mask = torch.tensor([[True, True], [True, False]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 3 + 5 + 7 + 2 + 2) / 6)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0


@pytest.mark.parametrize("reg_loss", ["l1", "mse"])
def test_regression_loss_is_the_masked_mean_error(reg_loss: str) -> None:
    torch.manual_seed(0)
    head = build_head(_cfg("regression", reg_loss=reg_loss), D)
    cond, target, mask = _batch()
    diff = (head(cond) - target)[mask]  # (N, A) valid steps
    want = diff.abs().mean() if reg_loss == "l1" else diff.square().mean()
    assert torch.allclose(head.loss(cond, target, mask), want)
    assert torch.equal(head.sample(cond), head(cond).detach())


# --- binned ---------------------------------------------------------------------------------------


def test_binned_round_trip_within_half_a_bin() -> None:
    head = build_head(_cfg("binned", bins=256), D)
    assert isinstance(head, BinnedHead)
    head.set_bounds([-1.0, -0.5, 0.0], [1.0, 2.0, 0.01])
    half = head.bin_width() / 2  # (A,)
    x = head.low + torch.rand(1000, A) * (head.high - head.low)  # (N, A) inside the bounds
    x = torch.cat([x, head.low[None], head.high[None]])  # the end points too
    k = head.to_bins(x)
    assert k.dtype == torch.int64 and k.min() >= 0 and k.max() <= 255
    assert ((head.from_bins(k) - x).abs() <= half * (1 + 1e-4)).all()
    assert torch.equal(head.to_bins(head.from_bins(k)), k)  # centres map back to their own bin
    out = head.to_bins(torch.tensor([[-5.0, -5.0, -5.0], [5.0, 5.0, 5.0]]))  # out of range: edge bins
    assert out.tolist() == [[0, 0, 0], [255, 255, 255]]


def test_binned_bounds_from_percentiles_are_buffers() -> None:
    head = build_head(_cfg("binned"), D)
    assert isinstance(head, BinnedHead)
    actions = torch.randn(2000, A) * torch.tensor([1.0, 2.0, 0.0])  # the last dimension is constant
    head.fit_bounds(actions)
    want = torch.quantile(actions[:, :2].double(), torch.tensor([0.01, 0.99], dtype=torch.float64), dim=0).float()
    assert torch.allclose(head.low[:2], want[0], atol=1e-5) and torch.allclose(head.high[:2], want[1], atol=1e-5)
    assert head.high[2] > head.low[2]  # widened, not a zero-width bin
    fresh = build_head(_cfg("binned"), D)
    assert isinstance(fresh, BinnedHead)
    fresh.load_state_dict(head.state_dict())
    assert torch.equal(fresh.low, head.low) and torch.equal(fresh.high, head.high)
    with pytest.raises(ConfigError, match="high > low"):
        head.set_bounds([0.0, 0.0, 0.0], [1.0, 0.0, 1.0])
    with pytest.raises(ConfigError, match="need 3 values"):
        head.set_bounds([0.0], [1.0])


def test_binned_loss_is_cross_entropy_and_argmax_decodes_centres() -> None:
    torch.manual_seed(0)
    head = build_head(_cfg("binned", bins=16), D)
    assert isinstance(head, BinnedHead)
    cond, target, mask = _batch()
    logits = head(cond)  # (B, T, A, K)
    want = F.cross_entropy(logits[mask].reshape(-1, 16), head.to_bins(target[mask]).reshape(-1))
    assert torch.allclose(head.loss(cond, target, mask), want)
    assert torch.equal(head.sample(cond), head.from_bins(logits.argmax(-1)))


# --- flow matching --------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_euler_with_the_exact_field_lands_on_the_data_point(steps: int) -> None:
    point = torch.tensor([[0.5, -0.25], [0.8, 0.1]], dtype=torch.float64)  # (T, A) the only data chunk
    noise = torch.randn(64, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def optimal(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # E[u | x_t] for a single data point
        return (x - point) / t[:, None, None]

    out = euler_integrate(optimal, noise, steps)
    assert torch.allclose(out, point.expand_as(out), atol=1e-12)
    # the training pair agrees with that field: u = noise − a = (x_t − a) / t, and x_1 is pure noise
    t = torch.rand(64, dtype=torch.float64) * 0.99 + 0.01
    x_t, u = FlowHead.interpolate(point.expand(64, 2, 2), noise, t)
    assert torch.allclose(u, optimal(x_t, t))
    assert torch.equal(FlowHead.interpolate(point.expand(64, 2, 2), noise, torch.ones(64))[0], noise)


def test_flow_training_times_follow_the_documented_beta() -> None:
    head = build_head(_cfg("flow"), D)
    assert isinstance(head, FlowHead)
    t = head.sample_time(20000, torch.Generator().manual_seed(0)).double()
    assert t.min() >= 0.001 and t.max() < 1.0
    s = (t - 0.001) / 0.999  # Beta(1.5, 1): mean 0.6, P(s < 0.25) = 0.25 ** 1.5
    assert s.mean().item() == pytest.approx(0.6, abs=0.01)
    assert (s < 0.25).double().mean().item() == pytest.approx(0.125, abs=0.01)


def test_flow_learns_a_single_constant_chunk() -> None:
    torch.manual_seed(0)
    chunk = torch.tensor([0.5, -0.25, 0.8, 0.1]).view(1, 4, 1)  # (1, T, A) with A = 1
    head = build_head(FlowHeadConfig(chunk_len=4, action_dim=1, hidden=64), 4)
    cond, mask = torch.zeros(64, 4), torch.ones(64, 4, dtype=torch.bool)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 300)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        loss = head.loss(cond, chunk.expand(64, 4, 1), mask, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    out = head.sample(torch.zeros(16, 4), torch.Generator().manual_seed(3))  # 16 different noises
    assert (out - chunk).abs().max() < 0.1
    assert (out - chunk).abs().mean() < 0.03
