"""Kinematics, fitted limits, violation counts, the feasibility penalty, the teacher and its distillation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vla_align.errors import ConfigError
from vla_align.losses.distill import distillation_loss, perturb_infeasible
from vla_align.physics import (
    DERIVATIVES,
    PhysicalLimits,
    PhysicsConfig,
    feasibility_penalty,
    fit_limits,
    kinematics,
    reachability_teacher_logits,
    rms_jerk,
    violation_rate,
    violations,
)

DT = 0.1


def _naive_kinematics(x: np.ndarray, m: np.ndarray, signal: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Loop-by-loop reference: (T, A) trajectory and (T,) mask of one sample."""
    out = {}
    cur, cur_m = x, m
    for i, name in enumerate(DERIVATIVES):
        if i > 0 or signal == "position":
            cur = np.array([(cur[t + 1] - cur[t]) / DT for t in range(len(cur) - 1)]).reshape(-1, x.shape[1])
            cur_m = np.array([cur_m[t] and cur_m[t + 1] for t in range(len(cur_m) - 1)], dtype=bool)
        out[name] = (cur, cur_m)
    return out


def _smooth_batch(seed: int, batch: int = 6, length: int = 40, dims: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) * DT
    freq = 0.2 + 0.3 * torch.rand(batch, 1, dims, generator=g, dtype=torch.float64)
    phase = 6.0 * torch.rand(batch, 1, dims, generator=g, dtype=torch.float64)
    return torch.sin(2 * math.pi * freq * t[None, :, None] + phase)  # (B, T, A)


@pytest.mark.parametrize("signal", ["position", "velocity"])
def test_kinematics_matches_naive_loop(signal: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 2, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 3] = False  # a hole, not just a padded tail
    values, masks = kinematics(x, DT, mask, signal)  # type: ignore[arg-type]
    for b in range(3):
        ref = _naive_kinematics(x[b].numpy(), mask[b].numpy(), signal)
        for name in DERIVATIVES:
            np.testing.assert_allclose(values[name][b].numpy(), ref[name][0], rtol=1e-12, atol=1e-9)
            np.testing.assert_array_equal(masks[name][b].numpy(), ref[name][1])
            np.testing.assert_allclose(
                values[name][b].numpy(),
                np.diff(x[b].numpy(), n=DERIVATIVES.index(name) + (signal == "position"), axis=0)
                / DT ** (DERIVATIVES.index(name) + (signal == "position")),
                rtol=1e-9,
                atol=1e-9,
            )
    offset = 1 if signal == "position" else 0
    assert [values[n].shape[1] for n in DERIVATIVES] == [9 - offset, 8 - offset, 7 - offset]


def test_fit_limits_matches_np_percentile() -> None:
    rng = np.random.default_rng(1)
    trajs = [np.cumsum(rng.standard_normal((n, 2)), axis=0) for n in (12, 7, 20)]
    limits = fit_limits(trajs, DT, percentile=90.0)
    for k, name in enumerate(DERIVATIVES, start=1):
        pooled = np.concatenate([np.abs(np.diff(t, n=k, axis=0)) / DT**k for t in trajs])
        np.testing.assert_allclose(getattr(limits, name), np.percentile(pooled, 90.0, axis=0), rtol=1e-10)
    # The same data as a padded tensor + mask gives the same limits.
    padded = torch.zeros(3, 20, 2, dtype=torch.float64)
    mask = torch.zeros(3, 20, dtype=torch.bool)
    for i, t in enumerate(trajs):
        padded[i, : len(t)] = torch.from_numpy(t)
        mask[i, : len(t)] = True
    padded[~mask] = 1e6  # padding must not leak into the statistics
    from_tensor = fit_limits(padded, DT, percentile=90.0, mask=mask)
    for name in DERIVATIVES:
        np.testing.assert_allclose(getattr(from_tensor, name), getattr(limits, name), rtol=1e-10)
    again = PhysicalLimits.from_dict(json.loads(json.dumps(limits.to_dict())))
    assert again == limits


def _hand_built() -> tuple[torch.Tensor, PhysicalLimits]:
    # Position with unit steps (velocity 10 at dt=0.1) except one jump of 3 at step 5 -> 6.
    steps = torch.ones(10, dtype=torch.float64)
    steps[5] = 3.0
    x = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(steps, 0)])[None, :, None]  # (1, 11, 1)
    limits = PhysicalLimits(velocity=[15.0], acceleration=[250.0], jerk=[1e9], dt=DT)
    return x, limits


def test_violation_rate_on_a_hand_built_trajectory() -> None:
    x, limits = _hand_built()
    # Velocity is 10 except one 30: 1 of 10 steps over 15. Acceleration is 0 except +200 then −200:
    # none of 9 over 250, two over 150.
    rate = violation_rate(x, limits)
    assert rate == {"velocity": 0.1, "acceleration": 0.0, "jerk": 0.0}
    tight = PhysicalLimits(velocity=[15.0], acceleration=[150.0], jerk=None, dt=DT)
    assert violation_rate(x, tight) == {"velocity": 0.1, "acceleration": 2 / 9}
    timeline = violations(x, tight)
    assert timeline["velocity"].shape == (1, 11)
    assert timeline["velocity"][0].nonzero().flatten().tolist() == [6]  # the difference ending at step 6
    assert timeline["acceleration"][0].nonzero().flatten().tolist() == [6, 7]
    mask = torch.ones(1, 11, dtype=torch.bool)
    mask[0, 6:] = False  # the jump is in the padding now
    assert violation_rate(x, tight, mask) == {"velocity": 0.0, "acceleration": 0.0}


def test_rms_jerk() -> None:
    t = torch.arange(12, dtype=torch.float64) * DT
    x = torch.stack([t**3, 2 * t**3], -1)[None]  # jerk = 6 and 12 exactly (third difference of a cubic)
    assert math.isclose(rms_jerk(x, DT), math.sqrt(36 + 144), rel_tol=1e-6)
    assert rms_jerk(torch.stack([t, -t], -1)[None], DT) < 1e-6


def test_feasibility_penalty_zero_inside_positive_outside() -> None:
    x = _smooth_batch(0)
    limits = fit_limits(x, DT, percentile=100.0)
    inside = (0.9 * x).requires_grad_()
    assert feasibility_penalty(inside, limits) == 0
    fast = (1.5 * x).requires_grad_()  # every derivative scales by 1.5: the worst steps are over
    pen = feasibility_penalty(fast, limits)
    assert pen > 0
    (grad,) = torch.autograd.grad(pen, fast)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():  # a small step against the gradient reduces the violation
        assert feasibility_penalty(fast - 1e-3 * grad / grad.norm(), limits) < pen
    # Exactly quadratic in the relative excess: one velocity step at 2x its limit costs (2 − 1)² per step.
    one = PhysicalLimits(velocity=[5.0], acceleration=None, jerk=None, dt=1.0)
    ramp = torch.tensor([[[0.0], [10.0], [11.0]]], dtype=torch.float64)
    assert math.isclose(float(feasibility_penalty(ramp, one)), 0.5)  # mean of [1, 0] over 2 steps


def test_teacher_logit_sign_and_perturbed_negatives() -> None:
    x = _smooth_batch(1, batch=16)
    limits = fit_limits(x, DT, percentile=100.0)
    logits = reachability_teacher_logits(0.9 * x, limits)
    assert logits.shape == (16,) and torch.all(logits > 0)
    assert torch.all(reachability_teacher_logits(3.0 * x, limits) < 0)
    g = torch.Generator().manual_seed(0)
    for mode in ("compress", "ripple", "mixed"):
        neg = perturb_infeasible(x, g, scale=1.0, mode=mode)  # type: ignore[arg-type]
        assert neg.shape == x.shape
        assert (reachability_teacher_logits(neg, limits) < 0).float().mean() == 1.0


def test_perturb_respects_padding() -> None:
    x = _smooth_batch(2, batch=4)
    mask = torch.ones(4, 40, dtype=torch.bool)
    mask[1, 25:] = False
    neg = perturb_infeasible(x, torch.Generator().manual_seed(0), mask=mask, mode="compress")
    assert torch.equal(neg[1, 25:], x[1, 25:])
    assert torch.equal(neg[1, 24], x[1, 24])  # compressed playback holds the last valid step
    assert torch.equal(neg[:, 0], x[:, 0])


def test_distillation_minimum_and_temperature_scaling() -> None:
    teacher = torch.tensor([-3.0, -0.5, 0.0, 2.0, 6.0], dtype=torch.float64)
    student = teacher.clone().requires_grad_()
    loss = distillation_loss(student, teacher, temperature=2.0)
    assert abs(float(loss.detach())) < 1e-12
    (grad,) = torch.autograd.grad(loss, student)
    assert grad.abs().max() < 1e-12
    off = (teacher + torch.tensor([1.0, -1.0, 0.5, -2.0, 1.0], dtype=torch.float64)).requires_grad_()
    assert distillation_loss(off, teacher) > 0
    # The value is T² × the soft-target BCE, minus the target entropy.
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    p = torch.sigmoid(teacher / 3.0)
    want = 9.0 * (bce(off / 3.0, p) - bce(teacher / 3.0, p))
    assert torch.isclose(distillation_loss(off, teacher, 3.0), want)
    # The T² factor keeps the gradient size T-independent for large T: ∂L/∂s → (s − t) / (4B).
    grads = [torch.autograd.grad(distillation_loss(off, teacher, temp), off)[0] for temp in (50.0, 100.0)]
    assert torch.allclose(grads[0], grads[1], rtol=0.01)
    assert torch.allclose(grads[1], (off - teacher).detach() / (4 * len(teacher)), rtol=0.01)


def test_physics_config_validation() -> None:
    limits = PhysicalLimits(velocity=[1.0, 2.0], acceleration=None, jerk=[3.0, 4.0], dt=0.05)
    cfg = PhysicsConfig(feasibility_weight=0.1, limits=limits.to_dict())
    assert cfg.physical_limits() == limits
    assert PhysicsConfig().physical_limits() is None
    for kwargs, field in [
        ({"feasibility_weight": -1.0}, "feasibility_weight"),
        ({"distill_weight": float("inf")}, "distill_weight"),
        ({"percentile": 0.0}, "percentile"),
        ({"percentile": 101.0}, "percentile"),
        ({"distill_temperature": 0.0}, "distill_temperature"),
        ({"limits": "limits.json"}, "limits"),
        ({"limits": {"velocity": [1.0]}}, "limits"),
        ({"limits": {"velocity": [1.0, -1.0], "dt": 0.1}}, "limits"),
        ({"limits": {"velocity": [1.0], "jerk": [1.0, 2.0], "dt": 0.1}}, "limits"),
        ({"limits": {"speed": [1.0], "dt": 0.1}}, "limits"),
    ]:
        with pytest.raises(ConfigError, match=rf"loss\.physics\.{field}\b"):
            PhysicsConfig(**kwargs)  # type: ignore[arg-type]


def test_action_limits_use_the_largest_change_for_a_mostly_held_dimension() -> None:
    from vla_align.physics import fit_action_limits, fit_limits

    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(0, 0.01, size=(400, 1)), axis=0)  # changes every step
    grip = -np.ones((400, 1))
    grip[200:] = 1.0  # one switch: its 99th-percentile change is 0
    traj = [np.concatenate([smooth, grip], axis=1)]
    usual = fit_limits(traj, 0.1, 99.0, signal="velocity")
    fixed = fit_action_limits(traj, 0.1, 99.0, signal="velocity")
    assert fixed.acceleration is not None and usual.acceleration is not None
    assert fixed.acceleration[0] == usual.acceleration[0]  # an ordinary dimension keeps its percentile
    assert usual.acceleration[1] <= 1e-6 and fixed.acceleration[1] == pytest.approx(2.0 / 0.1)  # the switch
