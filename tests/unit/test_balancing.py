"""Multi-objective balancers (chapter 5.10): PCGrad, GradNorm, uncertainty weighting, diagnostics."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import typing
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.reference import cosine_reference, gradnorm_step_reference, pcgrad_reference
from tests.unit.test_step import memory_table
from torch import Tensor, nn

from vla_align.balancing import (
    BALANCERS,
    VJP_STATUS,
    Balancer,
    BalancerConfig,
    BalancerName,
    FixedBalancer,
    GradNormBalancer,
    GradNormBalancerConfig,
    PCGradBalancerConfig,
    PCGradGradNormBalancerConfig,
    UncertaintyBalancer,
    UncertaintyBalancerConfig,
    bin_edges,
    conflict_histogram,
    diagnose,
    gradient_cosines,
    pcgrad_project,
    pcgrad_sum,
    per_objective_grads,
    projection_orders,
    reached_params,
    shared_mask,
)
from vla_align.data.episode import ActionSpec
from vla_align.errors import ConfigError
from vla_align.modalities import Batch
from vla_align.presets import get_preset
from vla_align.step import StepBatch, TrainingStep

TOL = 1e-9  # float64 slack for "non-negative" inner products


class Toy(nn.Module):
    """A shared trunk and two regression heads; head 2's target is ``scale`` times larger."""

    def __init__(self, seed: int = 0, scale: float = 10.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(4, 16), nn.Tanh())
        self.head1 = nn.Linear(16, 1)
        self.head2 = nn.Linear(16, 1)
        self.head3 = nn.Linear(16, 1)
        self.scale = scale
        self.w_true = torch.randn(4, 3)

    def losses(self, step: int, names: tuple[str, ...] = ("a", "b")) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(32, 4, generator=g)
        y = x @ self.w_true
        h = self.trunk(x)
        out = {
            "a": F.mse_loss(self.head1(h).squeeze(1), y[:, 0]),
            "b": F.mse_loss(self.head2(h).squeeze(1), self.scale * y[:, 1]),
            "c": F.mse_loss(self.head3(h).squeeze(1), y[:, 2]),
        }
        return {n: out[n] for n in names}


def grads_of(model: nn.Module) -> list[Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def run_balancer(bal: Balancer, model: Toy, step: int, names: tuple[str, ...] = ("a", "b")) -> dict[str, float]:
    model.zero_grad(set_to_none=True)
    return bal.backward(model.losses(step, names), list(model.parameters()), step)


# --- PCGrad ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(50))
def test_pcgrad_without_conflict_is_the_plain_sum(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    k = 2 + seed % 4
    grads = torch.rand(k, 30, generator=g, dtype=torch.float64)  # positive entries: every <g_i, g_j> > 0
    projected = pcgrad_project(grads, projection_orders(k, seed, 0))
    torch.testing.assert_close(projected, grads, rtol=0, atol=0)
    torch.testing.assert_close(projected.sum(0), grads.sum(0))


def test_pcgrad_two_objectives_remove_every_conflict() -> None:
    """K = 2: <g_1^PC, g_2> >= 0, <g_2^PC, g_1> >= 0, <g_1^PC, g_2^PC> >= 0, <Σ g^PC, g_j> >= 0."""
    conflicts = 0
    for seed in range(300):
        g = torch.Generator().manual_seed(seed)
        grads = torch.randn(2, 20, generator=g, dtype=torch.float64)
        conflicts += int(grads[0] @ grads[1] < 0)
        p = pcgrad_project(grads, [[1], [0]])
        assert p[0] @ grads[1] >= -TOL
        assert p[1] @ grads[0] >= -TOL
        assert p[0] @ p[1] >= -TOL
        total = p.sum(0)
        assert total @ grads[0] >= -TOL and total @ grads[1] >= -TOL
    assert conflicts > 100  # the property was exercised


def test_pcgrad_k_objectives_last_projection_holds() -> None:
    """K > 2 guarantees less: g_i^PC has a non-negative inner product with the *last* g_j of its
    order (projecting onto a later g_j can reintroduce a conflict with an earlier one)."""
    for seed in range(300):
        k = 3 + seed % 3
        g = torch.Generator().manual_seed(seed)
        grads = torch.randn(k, 12, generator=g, dtype=torch.float64)
        orders = projection_orders(k, seed, seed)
        p = pcgrad_project(grads, orders)
        for i in range(k):
            assert p[i] @ grads[orders[i][-1]] >= -TOL


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pcgrad_matches_reference(dtype: torch.dtype) -> None:
    for seed in range(20):
        k = 2 + seed % 4
        g = torch.Generator().manual_seed(seed)
        grads = torch.randn(k, 25, generator=g, dtype=torch.float64)
        orders = projection_orders(k, 7, seed)
        got = pcgrad_project(grads.to(dtype), orders).double()
        want = torch.tensor(pcgrad_reference(list(grads), orders), dtype=torch.float64)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
        # the balancers' fused form: Σ_i PC(s_i g_i) from one Gram matrix
        scale = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
        fused = pcgrad_sum(grads.to(dtype), orders, scale=scale.tolist()).double()
        weighted = [scale[i] * grads[i] for i in range(k)]
        want_sum = torch.tensor(pcgrad_reference(weighted, orders), dtype=torch.float64).sum(0)
        torch.testing.assert_close(fused, want_sum, rtol=tol, atol=tol)


def test_projection_orders_are_permutations_fixed_by_seed_and_step() -> None:
    for k in range(1, 6):
        orders = projection_orders(k, 3, 11)
        assert orders == projection_orders(k, 3, 11)
        for i, order in enumerate(orders):
            assert sorted(order) == [j for j in range(k) if j != i]
    distinct = {tuple(map(tuple, projection_orders(4, 0, step))) for step in range(20)}
    assert len(distinct) > 1


def test_pcgrad_balancer_matches_reference_on_the_shared_trunk() -> None:
    """The balancer's trunk gradient is Σ_i g_i^PC (reference, same (seed, step) order); each head
    keeps its own objective's gradient."""
    model = Toy()
    names = ("a", "b", "c")
    bal = PCGradBalancerConfig(seed=3).build(list(names))
    params = list(model.parameters())
    for step in range(10):
        grads = per_objective_grads(model.losses(step, names), params, mode="loop")
        run_balancer(bal, model, step, names)
        trunk = [0, 1]  # trunk.0.weight, trunk.0.bias
        flat = [torch.cat([grads[n][j].reshape(-1) for j in trunk]) for n in names]  # type: ignore[union-attr]
        want = torch.tensor(pcgrad_reference(flat, projection_orders(3, 3, step)), dtype=torch.float64).sum(0)
        got = torch.cat([params[j].grad.reshape(-1) for j in trunk]).double()  # type: ignore[union-attr]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for j in range(2, 8):  # heads 1-3: one objective each
            n = names[(j - 2) // 2]
            torch.testing.assert_close(params[j].grad, grads[n][j])


def test_pcgrad_balancer_without_conflict_equals_fixed() -> None:
    """Parallel gradients (L_b = 2 L_a) never conflict: PCGrad gives exactly the plain sum."""
    model = Toy()
    params = list(model.parameters())

    def losses() -> dict[str, Tensor]:
        a = model.losses(0)["a"]
        return {"a": a, "b": 2 * a}

    FixedBalancer(["a", "b"]).backward(losses(), params, 0)
    want = grads_of(model)
    model.zero_grad(set_to_none=True)
    BalancerConfig(name="pcgrad").build(["a", "b"]).backward(losses(), params, 0)
    for g, w in zip(grads_of(model), want, strict=True):
        assert (g is None) == (w is None)
        if g is not None and w is not None:
            torch.testing.assert_close(g, w)


# --- per-objective gradients ----------------------------------------------------------------------


def test_reached_and_shared_parameters() -> None:
    model = Toy()
    losses = model.losses(0, ("a", "b"))
    params = list(model.parameters())
    reach = reached_params(losses, params)
    names = [n for n, _ in model.named_parameters()]
    assert [names[j] for j, hit in enumerate(reach["a"]) if hit] == ["trunk.0.weight", "trunk.0.bias", *_head(1)]
    grads = per_objective_grads(losses, params, mode="loop")
    assert [names[j] for j, s in enumerate(shared_mask(grads)) if s] == ["trunk.0.weight", "trunk.0.bias"]
    assert all(g is None for g in grads["a"][-2:])  # head3: no objective reaches it


def _head(i: int) -> list[str]:
    return [f"head{i}.weight", f"head{i}.bias"]


def test_batched_vjp_equals_one_backward_per_objective() -> None:
    model = Toy()
    params = list(model.parameters())
    batched = per_objective_grads(model.losses(0, ("a", "b", "c")), params, mode="batched")
    loop = per_objective_grads(model.losses(0, ("a", "b", "c")), params, mode="loop")
    for name in ("a", "b", "c"):
        for gb, gl in zip(batched[name], loop[name], strict=True):
            assert (gb is None) == (gl is None)
            if gb is not None and gl is not None:
                torch.testing.assert_close(gb, gl, rtol=1e-5, atol=1e-7)
    # and against a plain backward of each loss
    for name in ("a", "b", "c"):
        model.zero_grad(set_to_none=True)
        model.losses(0, ("a", "b", "c"))[name].backward()
        for p, g in zip(params, loop[name], strict=True):
            assert (p.grad is None) == (g is None)
            if g is not None:
                torch.testing.assert_close(g, p.grad)


# --- the tri-modal model --------------------------------------------------------------------------


def tiny_model_losses(policy: bool = True) -> tuple[nn.Module, Callable[[], dict[str, Tensor]]]:
    cfg = get_preset("tiny")
    cfg.model.text.backbone = "scratch"
    cfg.model.policy.enabled = policy
    torch.manual_seed(0)
    model = cfg.model.build(ActionSpec(kind="discrete", num_actions=7))
    b, size, t = 8, cfg.data.image_size, cfg.model.action.chunk_len
    texts = [f"go to the {c} ball" for c in ("red", "green", "blue", "grey")]
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        image=torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g),
        text=[texts[i % 4] for i in range(b)],
        action=torch.randint(0, 7, (b, t), generator=g),
        action_mask=torch.ones(b, t, dtype=torch.bool),
        text_group=torch.arange(b) % 4,
        prev_action=torch.randint(-1, 7, (b,), generator=g),
    )
    model.text_encoder.fit(texts)
    unit = TrainingStep(cfg, model, memory_table(ActionSpec(kind="discrete", num_actions=7), size=size))
    inp = StepBatch(batch, np.random.default_rng(0))

    def losses() -> dict[str, Tensor]:  # the training step's terms (pair InfoNCE + the policy), unweighted
        return unit.compute_losses(inp, 10**9).values

    return model, losses


def test_per_objective_grads_auto_on_the_trimodal_model_equal_the_loop() -> None:
    """Whichever path "auto" takes (the batched VJP, or the loop where vmap does not cover an op)."""
    model, losses = tiny_model_losses()
    params = list(model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        auto = per_objective_grads(losses(), params)
    assert VJP_STATUS.last_path in ("batched", "loop")
    loop = per_objective_grads(losses(), params, mode="loop")
    for name in loop:
        for ga, gl in zip(auto[name], loop[name], strict=True):
            assert (ga is None) == (gl is None)
            if ga is not None and gl is not None:
                torch.testing.assert_close(ga, gl, rtol=1e-4, atol=1e-6)
    by_name = dict(zip([n for n, _ in model.named_parameters()], shared_mask(loop), strict=True))
    for prefix in ("image_encoder.", "text_encoder.", "action_encoder.", "heads.", "log_logit_scale"):
        assert all(s for n, s in by_name.items() if n.startswith(prefix)), prefix
    assert not any(s for n, s in by_name.items() if n.startswith("policy.head"))


def test_auto_falls_back_once_when_vmap_cannot_batch_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the batched path allowed on CPU: the tiny tri-modal model's graph is not vmap-able
    (GroupNorm backward on channels-last feature maps); "auto" warns, records the error, returns
    the loop's gradients with the graph intact, and goes straight to the loop afterwards."""
    model, losses = tiny_model_losses()
    params = list(model.parameters())
    try:
        per_objective_grads(losses(), params, mode="batched")
        pytest.skip("this torch batches the whole graph; nothing to fall back from")
    except RuntimeError:
        pass
    monkeypatch.setattr(VJP_STATUS, "loop_on_cpu", False)
    monkeypatch.setattr(VJP_STATUS, "batched_error", "")
    values = losses()
    with pytest.warns(RuntimeWarning, match="falling back"):
        auto = per_objective_grads(values, params)
    assert VJP_STATUS.batched_error and VJP_STATUS.last_path == "loop"
    loop = per_objective_grads(losses(), params, mode="loop")
    for name in loop:
        for ga, gl in zip(auto[name], loop[name], strict=True):
            assert (ga is None) == (gl is None)
            if ga is not None and gl is not None:
                torch.testing.assert_close(ga, gl)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        per_objective_grads(losses(), params)  # no second attempt, no second warning


@pytest.mark.parametrize("name", BALANCERS.names())
def test_every_balancer_fills_every_reachable_grad(name: str) -> None:
    model, losses = tiny_model_losses()
    reference = losses()
    sum(reference.values(), torch.zeros(())).backward()
    reachable = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reachable == {n for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    values = losses()
    bal = BalancerConfig(name=typing.cast(BalancerName, name)).build(list(values))
    mult = bal.backward(values, list(model.parameters()), step=0)
    assert set(mult) == set(values) and all(m > 0 for m in mult.values())
    filled = {n for n, p in model.named_parameters() if p.grad is not None}
    assert filled == reachable
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    json.dumps(bal.log_values())


def test_fixed_equals_plain_summed_backward() -> None:
    model, losses = tiny_model_losses()
    sum(losses().values(), torch.zeros(())).backward()
    want = grads_of(model)
    model.zero_grad(set_to_none=True)
    values = losses()
    mult = FixedBalancer(list(values)).backward(values, list(model.parameters()), step=0)
    assert mult == dict.fromkeys(values, 1.0)
    for g, w in zip(grads_of(model), want, strict=True):
        assert g is not None and w is not None
        torch.testing.assert_close(g, w)


def test_backward_accumulates_into_existing_grads() -> None:
    model = Toy()
    FixedBalancer(["a", "b"]).backward(model.losses(0), list(model.parameters()), 0)
    once = grads_of(model)
    FixedBalancer(["a", "b"]).backward(model.losses(0), list(model.parameters()), 0)
    for g, w in zip(grads_of(model), once, strict=True):
        if w is not None:
            torch.testing.assert_close(g, 2 * w)


def test_diagnostics_match_reference_and_are_json() -> None:
    model = Toy()
    params = list(model.parameters())
    losses = model.losses(0, ("a", "b", "c"))
    grads = per_objective_grads(losses, params, retain_graph=True, mode="loop")
    cos = gradient_cosines(grads)
    assert set(cos) == {"a|b", "a|c", "b|c"}
    shared = [j for j, s in enumerate(shared_mask(grads)) if s]  # the trunk
    for pair, value in cos.items():
        a, b = pair.split("|")
        flat_a = torch.cat([grads[a][j].reshape(-1) for j in shared])  # type: ignore[union-attr]
        flat_b = torch.cat([grads[b][j].reshape(-1) for j in shared])  # type: ignore[union-attr]
        assert value == pytest.approx(cosine_reference(flat_a, flat_b), abs=1e-6)
    hist = conflict_histogram(grads, bins=10)
    assert all(len(c) == 10 and sum(c) == 2 for c in hist.values())  # trunk weight + bias, per pair
    for pair, counts in hist.items():
        a, b = pair.split("|")
        for j in shared:
            c = cosine_reference(grads[a][j], grads[b][j])  # type: ignore[arg-type]
            assert counts[min(int((c + 1) / 2 * 10), 9)] >= 1
    record = diagnose(losses, params, bins=10)
    assert record["conflict/hist_edges"] == pytest.approx(bin_edges(10))
    assert record["conflict/cos/a|b"] == pytest.approx(cos["a|b"], abs=1e-6)
    json.loads(json.dumps(record))
    sum(losses.values(), torch.zeros(())).backward()  # diagnose kept the graph


# --- GradNorm ------------------------------------------------------------------------------------


def shared_norms(model: Toy, step: int, names: tuple[str, ...]) -> list[float]:
    grads = per_objective_grads(model.losses(step, names), list(model.parameters()), mode="loop")
    shared = shared_mask(grads)
    return [
        math.sqrt(sum(float(g.square().sum()) for g, s in zip(grads[n], shared, strict=True) if s and g is not None))
        for n in names
    ]


def test_gradnorm_first_step_matches_reference() -> None:
    model = Toy()
    bal = GradNormBalancer(["a", "b"], alpha=0.5, lr=0.025)
    norms = shared_norms(model, 0, ("a", "b"))
    losses = [float(v.detach()) for v in model.losses(0).values()]
    run_balancer(bal, model, 0)
    want = gradnorm_step_reference([1.0, 1.0], norms, losses, losses, alpha=0.5, lr=0.025)
    torch.testing.assert_close(bal.weight.detach().double(), torch.tensor(want, dtype=torch.float64))


def test_gradnorm_weights_stay_positive_sum_to_k_and_balance_norms() -> None:
    model = Toy(scale=10.0)
    names = ("a", "b")
    before = shared_norms(model, 0, names)
    assert before[1] / before[0] > 5  # head b's gradient on the trunk dominates
    bal = GradNormBalancer(list(names), alpha=0.5, lr=0.025)
    frozen = copy.deepcopy(model)
    for _ in range(300):  # the network frozen: r_i = 1, so the target is w_a n_a = w_b n_b
        run_balancer(bal, frozen, step=0)
        w = bal.weight.detach()
        assert (w > 0).all() and float(w.sum()) == pytest.approx(2.0, abs=1e-5)
    wa, wb = bal.weight.detach().tolist()
    assert abs(math.log(wa * before[0] / (wb * before[1]))) < 0.1 * abs(math.log(before[0] / before[1]))
    # and while training: positive, summing to K at every step
    bal = GradNormBalancer(list(names), alpha=0.5, lr=0.025)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(150):
        mult = run_balancer(bal, model, step)
        assert all(m > 0 for m in mult.values()) and sum(mult.values()) == pytest.approx(2.0, abs=1e-5)
        opt.step()
    assert 0 < bal.log_values()["balance/weight/b"] < 1 < bal.log_values()["balance/weight/a"]


def test_gradnorm_late_term_starts_at_weight_one() -> None:
    model = Toy()
    bal = GradNormBalancer(["a", "b", "c"], lr=0.05)
    for step in range(5):
        run_balancer(bal, model, step, ("a", "b"))
    assert math.isnan(float(bal.initial_loss[2])) and float(bal.weight.detach()[2]) == 1.0
    w = bal.weight.detach()
    assert float(w[:2].sum()) == pytest.approx(2.0, abs=1e-6)
    mult = run_balancer(bal, model, 5, ("a", "b", "c"))
    assert mult["c"] == pytest.approx(1.0) and sum(mult.values()) == pytest.approx(3.0, abs=1e-6)
    assert float(bal.initial_loss[2]) == pytest.approx(float(model.losses(5, ("c",))["c"].detach()))


def test_gradnorm_ignores_a_term_without_shared_gradient() -> None:
    """A term reaching no shared tensor (a detached policy input) keeps its weight and does not
    drag Ḡ down; the others still balance."""
    model = Toy()
    bal = GradNormBalancer(["a", "b", "c"], lr=0.05)

    def losses(step: int) -> dict[str, Tensor]:
        out = model.losses(step, ("a", "b"))
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(step))
        out["c"] = model.head3(x).square().mean()  # head3 only: nothing shared
        return out

    for step in range(50):
        model.zero_grad(set_to_none=True)
        mult = bal.backward(losses(step), list(model.parameters()), step)
        assert sum(mult.values()) == pytest.approx(3.0, abs=1e-5)
    assert float(bal.weight.detach()[2]) == pytest.approx(1.0, abs=1e-5)
    assert bal.log_values()["balance/grad_norm/c"] == 0.0
    assert float(bal.weight.detach()[0]) > 1.0 > float(bal.weight.detach()[1])


# --- uncertainty weighting ------------------------------------------------------------------------


def constant_losses(values: dict[str, float], p: nn.Parameter) -> dict[str, Tensor]:
    """Losses with fixed values and a graph to ``p`` (so the network part still runs)."""
    return {n: v + (p - p.detach()).sum() for n, v in values.items()}


def test_uncertainty_converges_to_the_closed_form() -> None:
    """min_s L e^{−s}/2 + s/2 is at s = log L (σ² = L): checked numerically, then learned."""
    target = {"a": 0.25, "b": 4.0, "c": 1.0}
    for value in target.values():
        grid = torch.linspace(-5, 5, 100001, dtype=torch.float64)
        f = value * torch.exp(-grid) / 2 + grid / 2
        assert float(grid[f.argmin()]) == pytest.approx(math.log(value), abs=1e-3)
    p = nn.Parameter(torch.zeros(3))
    bal = UncertaintyBalancer(list(target), lr=0.05)
    for step in range(1500):
        p.grad = None
        bal.backward(constant_losses(target, p), [p], step)
    s = bal.log_var.detach().tolist()
    for i, value in enumerate(target.values()):
        assert s[i] == pytest.approx(math.log(value), abs=0.03)
    logs = bal.log_values()
    assert logs["balance/sigma/b"] == pytest.approx(2.0, rel=0.03)  # σ = sqrt(L)
    assert logs["balance/weight/b"] == pytest.approx(1 / 8, rel=0.05)  # 1/(2σ²)


def test_uncertainty_floor_is_respected() -> None:
    p = nn.Parameter(torch.zeros(1))
    bal = UncertaintyBalancer(["prior", "task"], floors={"prior": 0.2}, lr=0.1)
    for step in range(400):
        p.grad = None
        mult = bal.backward(constant_losses({"prior": 100.0, "task": 100.0}, p), [p], step)
        assert mult["prior"] >= 0.2
    assert mult["prior"] == pytest.approx(0.2) and mult["task"] < 0.05  # the unfloored one falls to 1/200
    assert float(bal.log_var.detach()[0]) <= -math.log(0.4) + 1e-6
    assert bal.log_values()["balance/weight/prior"] >= 0.2


def test_gradnorm_floor_is_respected() -> None:
    model = Toy(scale=10.0)
    bal = GradNormBalancer(["a", "b"], floors={"b": 0.6}, lr=0.05)
    for _ in range(200):
        mult = run_balancer(bal, model, 0)
        assert mult["b"] >= 0.6 - 1e-6 and sum(mult.values()) == pytest.approx(2.0, abs=1e-5)
    assert mult["b"] == pytest.approx(0.6, abs=1e-5)  # unfloored it settles near 0.2


# --- state, registry, config ----------------------------------------------------------------------


@pytest.mark.parametrize("name", BALANCERS.names())
def test_state_dict_round_trip_gives_an_identical_next_step(name: str) -> None:
    cls = BALANCERS.get(name)
    seed = {"seed": 5} if "seed" in {f.name for f in dataclasses.fields(cls)} else {}
    cfg = cls(floors={"a": 0.3}, **seed)
    model = Toy()
    first = cfg.build(["a", "b", "c"])
    for step in range(4):
        run_balancer(first, model, step, ("a", "b", "c"))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    mult_a = run_balancer(first, model, 4, ("a", "b", "c"))
    grads_a, logs_a = grads_of(model), first.log_values()
    second = cfg.build(["a", "b", "c"])
    second.load_state_dict(state)
    mult_b = run_balancer(second, model, 4, ("a", "b", "c"))
    assert mult_a == mult_b
    for ga, gb in zip(grads_a, grads_of(model), strict=True):
        assert ga is not None and gb is not None and torch.equal(ga, gb)
    assert {k: v for k, v in logs_a.items() if "weight" in k or "sigma" in k} == {
        k: v for k, v in second.log_values().items() if "weight" in k or "sigma" in k
    }
    for key, value in first.state_dict().items():
        if isinstance(value, Tensor):
            torch.testing.assert_close(value, second.state_dict()[key], rtol=0, atol=0, equal_nan=True)


def test_registry_names_match_the_config_literal() -> None:
    assert set(BALANCERS.names()) == set(typing.get_args(BalancerName))


def test_unknown_loss_name_raises() -> None:
    model = Toy()
    bal = FixedBalancer(["a"])
    with pytest.raises(ValueError, match="'b' is not one of"):
        bal.backward(model.losses(0), list(model.parameters()), 0)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (BalancerConfig, {"name": "mgda"}, "loss.balancer.name"),
        (GradNormBalancerConfig, {"alpha": -0.1}, "loss.balancer.alpha"),
        (UncertaintyBalancerConfig, {"lr": 0.0}, "loss.balancer.lr"),
        (BalancerConfig, {"floors": {"policy": 1.5}}, "loss.balancer.floors.policy"),
        (BalancerConfig, {"floors": "policy"}, "loss.balancer.floors"),
        (BalancerConfig, {"conflict_every": -1}, "loss.balancer.conflict_every"),
        (PCGradGradNormBalancerConfig, {"seed": -1}, "loss.balancer.seed"),
    ],
)
def test_config_validation(cls: type[BalancerConfig], kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)  # type: ignore[arg-type]


def test_config_floors_from_the_command_line_and_unknown_names() -> None:
    cfg = BalancerConfig(name="gradnorm", floors="policy=0.2, image_text=0.1")  # type: ignore[arg-type]
    assert cfg.floors == {"policy": 0.2, "image_text": 0.1}
    with pytest.raises(ConfigError, match=r"loss\.balancer\.floors names 'policy'"):
        BalancerConfig(floors={"policy": 0.2}).build(["image_text", "text_action"])
    assert BalancerConfig(conflict_every=1000).diagnose_at(2000)
    assert not BalancerConfig(conflict_every=0).diagnose_at(0)
