"""The finite-loss guard (issue 17): a step whose total loss or gradient norm is NaN or infinite makes no
update, is counted and logged; ``train.max_bad_steps`` of them in a row stop the run with exit 2,
keeping the last good checkpoint; nothing non-finite is ever written to a checkpoint."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tests.synthetic import write_synthetic
from tests.unit.test_step import NAMED, memory_table, tiny_step

from vla_align.balancing import UncertaintyBalancerConfig
from vla_align.cli import main
from vla_align.data.windows import ChunkSampler
from vla_align.presets import get_preset
from vla_align.step import StepBatch, StepLosses, TrainingStep
from vla_align.train import make_optimizer, non_finite_entries


def _state(unit: TrainingStep, optimizer: torch.optim.Optimizer, balancer: torch.nn.Module) -> dict[str, Any]:
    return copy.deepcopy(
        {
            "model": unit.model.state_dict(),
            "aux": unit.aux.state_dict(),
            "optimizer": optimizer.state_dict(),
            "balancer": balancer.state_dict(),
        }
    )


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())), where
        if a.is_floating_point():
            finite = torch.isfinite(a)
            assert torch.equal(a[finite], b[finite]), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}.{i}")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), where


@pytest.mark.parametrize(("scale", "reason"), [(math.nan, "the total loss is nan"), (1e36, "the gradient norm is inf")])
def test_a_non_finite_step_changes_no_weight_optimizer_or_balancer_state(scale: float, reason: str) -> None:
    table = memory_table(NAMED)
    cfg = get_preset("tiny")
    cfg.model.policy.enabled = True
    cfg.loss.balancer = UncertaintyBalancerConfig()  # learned weights with their own Adam: state to keep
    unit = tiny_step(table, cfg)
    optimizer = make_optimizer(unit.model, cfg.train, unit.aux)
    balancer = cfg.loss.balancer.build(unit.names)
    sampler = ChunkSampler(table, cfg.model.action.chunk_len, cfg.model.policy.history)
    for step in range(2):  # moments and balancer state exist
        update = unit.apply(
            unit.compute_losses(unit.prepare_batch(sampler, step), step).weighted, optimizer, balancer, step
        )
        assert update.skipped is None
    before = _state(unit, optimizer, balancer)
    weighted = unit.compute_losses(unit.prepare_batch(sampler, 2), 2).weighted
    weighted["image_text"] = weighted["image_text"] * scale
    update = unit.apply(weighted, optimizer, balancer, 2)
    assert update.skipped is not None and update.skipped.startswith(reason), update.skipped
    assert all(p.grad is None for p in unit.parameters())
    _assert_same(_state(unit, optimizer, balancer), before)


def test_non_finite_entries_finds_nested_tensors() -> None:
    state = {"a": torch.ones(2), "b": {"0": {"exp_avg": torch.tensor([1.0, math.inf]), "step": torch.tensor(3)}}}
    state["c"] = [torch.zeros(1), torch.tensor([math.nan])]
    state["d"] = torch.tensor([1, 2])  # integers are always finite
    assert non_finite_entries(state, "x") == ["x.b.0.exp_avg", "x.c.1"]


# --- whole runs (tiny preset, synthetic data) ---------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("d") / "synth")


def inject_nan(
    monkeypatch: pytest.MonkeyPatch, bad: set[int] | None = None, start: int | None = None
) -> dict[int, Any]:
    """Make the weighted image_text term NaN at the steps in ``bad`` (or every step from ``start``);
    returns the model's weights at the start of each step."""
    real = TrainingStep.compute_losses
    weights: dict[int, Any] = {}

    def spy(self: TrainingStep, inp: StepBatch, step: int) -> StepLosses:
        weights[step] = copy.deepcopy(self.model.state_dict())
        losses = real(self, inp, step)
        if (bad is not None and step in bad) or (start is not None and step >= start):
            losses.weighted["image_text"] = losses.weighted["image_text"] * math.nan
        return losses

    monkeypatch.setattr(TrainingStep, "compute_losses", spy)
    return weights


def records(run: Path) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for rec in out:
        rec.pop("samples_per_s", None)
    return out


def all_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(path)).values() if t.is_floating_point())


def train_argv(dataset: Path, run: Path, *flags: str) -> list[str]:
    return ["train", "--preset", "tiny", "--data", str(dataset), "--out", str(run), "--train.threads", "1", *flags]


def test_a_nan_at_step_k_is_skipped_counted_and_the_run_finishes(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    k = 6  # 0-based: the 7th step
    weights = inject_nan(monkeypatch, bad={k})
    run = tmp_path / "run"
    assert main(train_argv(dataset, run)) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "step 7: the total loss is nan (terms image_text); update skipped (1 in a row, 1 in all)" in err
    assert "trained 20 steps (1 skipped" in err
    log = records(run)
    assert {"step": 7, "train/skipped_steps": 1, "train/bad_steps_in_a_row": 1} in log
    assert [r["step"] for r in log if "train/skipped_steps" in r] == [7, 10, 15, 20]  # counted once, then carried
    assert all(r["train/skipped_steps"] == 1 for r in log if "train/skipped_steps" in r)
    assert all(math.isfinite(v) for r in log for v in r.values() if isinstance(v, float))
    _assert_same(weights[k + 1], weights[k])  # the skipped step left the weights as they were
    assert not all(torch.equal(weights[k + 2][n], weights[k + 1][n]) for n in weights[k])  # the next one moved them
    assert all_finite(run / "checkpoint" / "model.safetensors")
    state = torch.load(run / "checkpoint" / "train_state.pt", weights_only=True)
    assert state["step"] == 20 and state["guard"] == {"skipped": 1, "in_a_row": 0}


def test_a_run_whose_loss_stays_nan_stops_after_max_bad_steps_keeping_the_last_good_checkpoint(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inject_nan(monkeypatch, start=12)  # after the checkpoint of step 10
    run = tmp_path / "run"
    assert main(train_argv(dataset, run, "--train.max-bad-steps", "3")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vla-align: error: training stopped at step 15: 3 steps in a row had a non-finite loss")
    assert "the last good checkpoint (step 10) is kept" in last and "--train.max-bad-steps" in last
    assert all_finite(run / "checkpoint" / "model.safetensors")
    assert torch.load(run / "checkpoint" / "train_state.pt", weights_only=True)["step"] == 10
    assert [r["train/bad_steps_in_a_row"] for r in records(run) if "train/bad_steps_in_a_row" in r] == [1, 2, 3]


def test_a_run_that_is_nan_from_the_start_writes_no_checkpoint(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inject_nan(monkeypatch, start=0)
    run = tmp_path / "run"
    assert main(train_argv(dataset, run, "--train.max-bad-steps", "2")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training stopped at step 2" in last and "no checkpoint was written" in last
    assert not (run / "checkpoint" / "model.safetensors").exists()


def test_max_bad_steps_0_never_stops(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inject_nan(monkeypatch, start=15)
    run = tmp_path / "run"
    assert main(train_argv(dataset, run, "--train.max-bad-steps", "0")) == 0
    assert records(run)[-1] == {"step": 20, "train/skipped_steps": 5, "train/bad_steps_in_a_row": 5}
    assert all_finite(run / "checkpoint" / "model.safetensors")


def test_non_finite_weights_are_never_written_to_a_checkpoint(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last line of defence: weights that turned non-finite with a finite loss are not saved."""
    real = TrainingStep.apply

    def corrupt(self: TrainingStep, *args: Any, **kwargs: Any) -> Any:
        update = real(self, *args, **kwargs)
        if args[-1] == 14:  # after the update of step 15; the next checkpoint is at 20
            with torch.no_grad():
                next(self.model.parameters()).fill_(math.inf)
        return update

    monkeypatch.setattr(TrainingStep, "apply", corrupt)
    run = tmp_path / "run"
    assert main(train_argv(dataset, run, "--train.log-every", "100")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training stopped at step" in last and "hold NaN or infinity (first: model." in last
    assert "the last good checkpoint (step 10) is kept" in last
    assert all_finite(run / "checkpoint" / "model.safetensors")


def test_the_guard_counts_survive_a_kill_and_resume(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject_nan(monkeypatch, bad={4})
    whole = tmp_path / "whole"
    assert main(train_argv(dataset, whole)) == 0
    real = TrainingStep.compute_losses

    def killed(self: TrainingStep, inp: StepBatch, step: int) -> StepLosses:
        if step == 13:
            raise KeyboardInterrupt
        return real(self, inp, step)

    monkeypatch.setattr(TrainingStep, "compute_losses", killed)
    run = tmp_path / "run"
    assert main(train_argv(dataset, run)) == 130
    monkeypatch.setattr(TrainingStep, "compute_losses", real)
    assert main(["train", "--resume", str(run)]) == 0
    assert records(run) == records(whole)
    assert records(run)[-1]["step"] == 20 and records(run)[-1]["train/skipped_steps"] == 1  # restored, not reset
    assert all_finite(run / "checkpoint" / "model.safetensors")


def test_a_nan_forward_pass_leaves_the_codebook_moving_averages_as_they_were(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN embeddings reach the VQ codebook's EMA update inside the forward pass; the skipped step puts
    the codebook back, so one bad batch does not poison every later step."""
    real = TrainingStep.compute_losses

    def nan_forward(self: TrainingStep, inp: StepBatch, step: int) -> StepLosses:
        if step != 6:
            return real(self, inp, step)
        weight = next(self.model.image_encoder.parameters())
        kept = weight.detach().clone()
        weight.data.fill_(math.nan)  # this forward pass only: NaN image embeddings
        try:
            return real(self, inp, step)
        finally:
            weight.data.copy_(kept)

    monkeypatch.setattr(TrainingStep, "compute_losses", nan_forward)
    run = tmp_path / "run"
    assert main(train_argv(dataset, run, "--loss.codebook.weight", "0.1")) == 0
    assert records(run)[-1]["train/skipped_steps"] == 1
    state = torch.load(run / "checkpoint" / "train_state.pt", weights_only=True)
    assert any(k.endswith("ema_sum") for k in state["aux"])
    assert non_finite_entries(state["aux"], "aux") == [] and non_finite_entries(state["model"], "model") == []
