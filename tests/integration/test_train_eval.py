"""End to end on synthetic data: train (tiny preset) -> checkpoint -> eval, determinism, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.synthetic import write_synthetic

from vla_align.cli import main
from vla_align.evaluate import DIRECTIONS
from vla_align.runs import load_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "synth", n_train=120, n_val=8, n_test=24)


def test_train_then_eval_writes_the_run_contract(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", str(dataset), "--out", str(run), "--train.steps", "150"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "tiny" and cfg["model"]["text"]["backbone"] == "scratch"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lines = [r for r in records if "loss/total" in r]
    assert [r["step"] for r in lines] == list(range(5, 151, 5))
    # gradient-conflict health check at the first step (every loss.balancer.conflict_every steps)
    conflict = [r for r in records if "conflict/cos/image_text|text_action" in r]
    assert [r["step"] for r in conflict] == [1]
    assert -1.0 <= conflict[0]["conflict/cos/image_text|text_action"] <= 1.0
    assert lines[-1]["loss/total"] < lines[0]["loss/total"]
    assert (run / "checkpoint" / "model.safetensors").is_file()

    assert main(["eval", "--run", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(DIRECTIONS) == 7  # six pairwise directions and image+text -> action
    for q, g in DIRECTIONS:
        for m in ("R@1", "R@5", "R@10", "MRR", "nDCG@10"):
            assert 0.0 <= metrics[f"retrieval/{q}_to_{g}/{m}"] <= 1.0
    assert metrics["retrieval/samples"] == 24
    assert metrics["retrieval/text_to_image/queries"] == 4  # four distinct instructions
    # The synthetic labels are easy: after 150 steps image->text must beat chance (R@1 = 0.25).
    assert metrics["retrieval/image_to_text/R@1"] > 0.5


def test_training_is_deterministic_on_cpu(dataset: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert main(["train", "--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / name)]) == 0
    wa = load_file(str(tmp_path / "a" / "checkpoint" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.mark.slow
def test_sigkill_then_resume(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VLA_ALIGN_QUIET": "1"}

    def train_args(out: Path) -> list[str]:
        flags = ["--train.steps", "400", "--train.checkpoint-every", "20"]
        return ["train", "--preset", "tiny", "--data", str(dataset), "--out", str(out), *flags]

    cmd = [sys.executable, "-m", "vla_align", *train_args(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = run / "checkpoint" / "train_state.pt"
    deadline = time.time() + 120
    while not state_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state_file.exists(), "no checkpoint was written before the kill"
    killed_at = torch.load(state_file, weights_only=True)["step"]
    assert killed_at < 400
    done = subprocess.run(
        [sys.executable, "-m", "vla_align", "train", "--resume", str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert torch.load(state_file, weights_only=True)["step"] == 400
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 400  # no duplicated or missing log lines
    model, cfg = load_model(run)
    assert cfg.train.steps == 400 and sum(p.numel() for p in model.parameters()) > 0
    # Batches are drawn per step from (seed, step): the resumed run equals an uninterrupted one.
    ref = tmp_path / "ref"
    assert main(train_args(ref)) == 0
    wa = load_file(str(run / "checkpoint" / "model.safetensors"))
    wb = load_file(str(ref / "checkpoint" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
