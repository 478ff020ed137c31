"""The training step as a unit: batch preparation, the loss assembly shared by training and the
benchmarks, and gradient clipping over every trained parameter."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from tests.synthetic import write_synthetic

from vla_align.cli import main
from vla_align.data.episode import ActionSpec
from vla_align.data.lerobot import FrameTable, read_dataset
from vla_align.data.windows import ChunkSampler
from vla_align.presets import RunConfig, get_preset
from vla_align.step import StepBatch, StepLosses, TrainingStep
from vla_align.train import build_model

ROOT = Path(__file__).resolve().parents[2]
NAMED = ActionSpec(kind="discrete", num_actions=4, names=["left", "right", "forward", "pickup"])


def memory_table(spec: ActionSpec, episodes: int = 8, length: int = 12, size: int = 28, seed: int = 0) -> FrameTable:
    """A small in-memory training split (the benchmarks' synthetic table with four instructions)."""
    texts = [f"go to the {c} ball on your left" for c in ("red", "green", "blue", "grey")]
    table: FrameTable = load_benchmark_common().synthetic_table(spec, size, episodes, length, seed, texts)
    return table


def tiny_step(table: FrameTable, cfg: RunConfig | None = None) -> TrainingStep:
    """The training step of ``cfg`` (default: the tiny preset with its policy on) for a fresh model."""
    if cfg is None:
        cfg = get_preset("tiny")
        cfg.model.policy.enabled = True
    torch.manual_seed(0)
    model = cfg.model.build(table.action_spec)
    model.text_encoder.fit(table.instructions)
    return TrainingStep(cfg, model, table)


def test_prepared_batch_depends_only_on_seed_and_step() -> None:
    """Shift, history dropout, mirror and modality dropout all come from (seed, step): a resumed run
    sees the batches of the uninterrupted one."""
    table = memory_table(NAMED)
    cfg = get_preset("tiny")
    cfg.model.policy.enabled, cfg.model.policy.history_dropout = True, 0.5
    cfg.train.augment_shift, cfg.train.augment_mirror, cfg.loss.modality_dropout = 2, 0.5, 0.5
    unit = tiny_step(table, cfg)
    assert unit.mirror_perm is not None and unit.mirror_perm.tolist() == [1, 0, 2, 3]
    sampler = ChunkSampler(table, unit.cfg.model.action.chunk_len, history=2)
    first = unit.prepare_batch(sampler, 3)
    unit.prepare_batch(sampler, 4)
    again = unit.prepare_batch(sampler, 3)
    for field in ("image", "action", "prev_action", "text_group"):
        assert torch.equal(getattr(first.batch, field), getattr(again.batch, field)), field
    assert first.batch.text == again.batch.text
    assert first.drop is not None and again.drop is not None and torch.equal(first.drop, again.drop)
    assert set(first.drop.tolist()) <= {0, 1, 2}
    assert first.rng.random() == again.rng.random()
    assert not torch.equal(unit.prepare_batch(sampler, 5).batch.image, first.batch.image)


def test_gradient_clipping_covers_the_auxiliary_heads() -> None:
    """A huge gradient on the cycle heads is scaled by the clip like every other parameter's."""
    table = memory_table(NAMED)
    cfg = get_preset("tiny")
    cfg.model.policy.enabled, cfg.loss.cycle.weight = True, 0.2  # the cycle objective: heads g_VL and g_LA
    unit = tiny_step(table, cfg)
    heads = list(unit.aux.parameters())
    assert heads and all(any(p is h for h in unit.parameters()) for p in heads)
    sampler = ChunkSampler(table, unit.cfg.model.action.chunk_len, unit.cfg.model.policy.history)
    inp = unit.prepare_batch(sampler, 0)

    def scaled() -> dict[str, torch.Tensor]:  # the cycle term (and so its heads' gradient) blown up
        weighted = unit.compute_losses(inp, 0).weighted
        return {n: v * 1e6 if n == "cycle" else v for n, v in weighted.items()}

    params = unit.parameters()
    unit.model.zero_grad(set_to_none=True)
    unit.aux.zero_grad(set_to_none=True)
    sum(scaled().values(), torch.zeros(())).backward()
    raw = [p.grad.clone() if p.grad is not None else None for p in params]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw if g is not None]))
    head_norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in heads if p.grad is not None])
    )
    assert float(head_norm) > 1e3

    optimizer = torch.optim.SGD(params, lr=0.0)  # the update leaves the weights as they are
    balancer = unit.cfg.loss.balancer.build(unit.names)
    update = unit.apply(scaled(), optimizer, balancer, 0)
    torch.testing.assert_close(update.grad_norm, norm)
    clip = unit.cfg.train.grad_clip
    for p, g in zip(params, raw, strict=True):
        if g is not None:
            assert p.grad is not None
            torch.testing.assert_close(p.grad, g * (clip / (float(norm) + 1e-6)))
    after = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in heads if p.grad is not None])
    )
    assert float(after) <= clip * (1 + 1e-4)


@functools.cache
def load_benchmark_common() -> ModuleType:
    """``benchmarks/common.py``, which the benchmark scripts import as ``common``."""
    spec = importlib.util.spec_from_file_location("vla_align_benchmarks_common", ROOT / "benchmarks" / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


AUX_TERMS = {
    "cycle",
    "trimodal",
    "paraphrase",
    "spectral",
    "spectral_recon",
    "feasibility",
    "distill",
    "vq_commit",
    "vq_codebook",
    "vq_agreement",
}


def test_training_and_benchmark_paths_give_identical_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss-assembly test: batch 2 of a run, through ``train`` (as logged) and through the benchmarks'
    ``training_step`` with the same weights, gives the same terms, auxiliary objectives included."""
    data = write_synthetic(tmp_path / "ds", n_train=12, n_val=4, n_test=4, continuous=True, lengths=(40, 50))
    flags = ["--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--train.steps", "2"]
    flags += ["--train.log-every", "1", "--train.batch-size", "8", "--model.policy.enabled", "true"]
    flags += ["--loss.cycle.weight", "0.2", "--loss.trimodal", "0.1", "--loss.paraphrase", "0.5"]
    flags += ["--loss.spectral.weight", "0.1", "--loss.spectral.windows", "2", "--loss.spectral.recon-weight", "0.1"]
    flags += ["--loss.physics.feasibility-weight", "0.1", "--loss.physics.distill-weight", "0.1"]
    flags += ["--loss.codebook.weight", "0.1", "--loss.codebook.ema", "false", "--loss.modality-dropout", "0.2"]
    seen: dict[str, Any] = {}
    real = TrainingStep.compute_losses

    def spy(self: TrainingStep, inp: StepBatch, step: int) -> StepLosses:
        if step == 1:  # after one update: weights, heads and codebook have moved from their initial values
            seen.update(cfg=self.cfg, step=step, inp=copy.deepcopy(inp), torch_rng=torch.get_rng_state())
            seen.update(model=copy.deepcopy(self.model.state_dict()), aux=copy.deepcopy(self.aux.state_dict()))
        losses = real(self, inp, step)
        if step == 1:
            seen["values"] = {n: float(v.detach()) for n, v in losses.values.items()}
            seen["weighted"] = {n: v.detach().clone() for n, v in losses.weighted.items()}
        return losses

    monkeypatch.setattr(TrainingStep, "compute_losses", spy)
    assert main(["train", *flags]) == 0
    monkeypatch.undo()
    cfg: RunConfig = seen["cfg"]
    table = read_dataset(data, split="train")
    assert table.state is not None
    model = build_model(cfg, table.info, int(table.state.shape[1]))

    common = load_benchmark_common()
    unit, _ = common.training_step(cfg, model, table, seen["step"])
    model.load_state_dict(seen["model"])
    unit.aux.load_state_dict(seen["aux"])
    torch.set_rng_state(seen["torch_rng"])
    weighted = unit.compute_losses(copy.deepcopy(seen["inp"]), seen["step"]).weighted

    assert set(weighted) == set(seen["weighted"])
    assert AUX_TERMS | {"policy", "image_text", "image_action", "text_action"} == set(weighted)
    for name, value in weighted.items():
        assert torch.equal(value.detach(), seen["weighted"][name]), name
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    record = next(r for r in logged if r.get("step") == 2 and "loss/total" in r)
    assert {k: v for k, v in record.items() if k.startswith("loss/") and k != "loss/total"} == {
        f"loss/{n}": v for n, v in seen["values"].items()
    }


def test_a_finite_step_through_the_guard_is_bit_identical_to_the_plain_update() -> None:
    """The finite-loss guard only reads the total and the clip norm: three finite steps through ``apply``
    leave exactly the weights, optimizer moments and balancer state of the unguarded sequence."""
    from vla_align.balancing import UncertaintyBalancerConfig
    from vla_align.train import make_optimizer

    table = memory_table(NAMED)
    cfg = get_preset("tiny")
    cfg.model.policy.enabled, cfg.loss.balancer = True, UncertaintyBalancerConfig()
    runs = []
    for guarded in (True, False):
        unit = tiny_step(table, cfg)
        optimizer = make_optimizer(unit.model, cfg.train, unit.aux)
        balancer = cfg.loss.balancer.build(unit.names)
        sampler = ChunkSampler(table, cfg.model.action.chunk_len, cfg.model.policy.history)
        for step in range(3):
            torch.manual_seed(step)
            weighted = unit.compute_losses(unit.prepare_batch(sampler, step), step).weighted
            if guarded:
                assert unit.apply(weighted, optimizer, balancer, step).skipped is None
            else:  # the update as it was before the guard
                optimizer.zero_grad(set_to_none=True)
                balancer.backward(weighted, unit.parameters(), step)
                torch.nn.utils.clip_grad_norm_(unit.parameters(), cfg.train.grad_clip)
                optimizer.step()
        runs.append((unit.model.state_dict(), optimizer.state_dict()["state"], balancer.state_dict()))
    (model_a, opt_a, bal_a), (model_b, opt_b, bal_b) = runs
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    assert all(torch.equal(bal_a[k], bal_b[k]) for k in bal_a if isinstance(bal_a[k], torch.Tensor))
