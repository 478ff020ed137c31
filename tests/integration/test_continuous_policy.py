"""Continuous-action policies end to end on synthetic data: every head trains through the CLI, the
action / state normalisers are fitted on the training split and stored in the checkpoint, and a model
restored from the checkpoint alone acts exactly like the one that was saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.synthetic import write_synthetic

from vla_align.cli import main
from vla_align.data.lerobot import read_dataset
from vla_align.runs import load_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("cont") / "d", continuous=True, lengths=(6, 12))


@pytest.mark.parametrize("head", ["regression", "binned", "flow"])
def test_each_head_trains_and_acts_from_its_checkpoint(dataset: Path, tmp_path: Path, head: str) -> None:
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", str(dataset), "--out", str(run), "--train.steps", "40"]
    args += ["--model.policy.enabled", "true", "--model.policy.chunk", "4", "--model.policy.execute", "2"]
    args += ["--model.policy.hidden", "32", "--model.policy.head.name", head, "--model.policy.head.hidden", "32"]
    assert main(args) == 0
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    policy = [r["loss/policy"] for r in log if "loss/policy" in r]
    assert len(policy) >= 4 and np.isfinite(policy).all()
    assert min(policy[-2:]) < policy[0]  # it learns something in 40 steps

    model, _ = load_model(run)
    assert model.action_norm is not None and model.state_norm is not None
    table = read_dataset(dataset, split="train")
    assert table.state is not None
    np.testing.assert_allclose(model.action_norm.q99.numpy(), np.percentile(table.actions, 99, axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.state_norm.mean.numpy(), table.state.mean(0), rtol=1e-4, atol=1e-6)

    image, state = torch.from_numpy(table.frames[:5]), torch.from_numpy(table.state[:5])
    texts = [table.instructions[0]] * 5
    a = model.act_chunk(image, texts, state, torch.Generator().manual_seed(0))
    assert a.shape == (5, 4, 2) and torch.isfinite(a).all()
    again, _ = load_model(run)
    b = again.act_chunk(image, texts, state, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    # the model acts in the dataset's units: outputs are within the range actions take (plus a margin)
    lo, hi = table.actions.min(0) - 1.0, table.actions.max(0) + 1.0
    assert (a.numpy() >= lo).all() and (a.numpy() <= hi).all()


def test_policy_chunk_longer_than_the_action_window_is_a_config_error(dataset: Path, tmp_path: Path) -> None:
    args = ["train", "--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / "r")]
    args += ["--model.policy.enabled", "true", "--model.policy.chunk", "16", "--model.policy.execute", "1"]
    assert main(args) == 2
