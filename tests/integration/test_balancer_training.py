"""Every balancer trains from the command line, logs its weights, and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.synthetic import write_synthetic

from vla_align.balancing import BALANCERS
from vla_align.cli import main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "synth", n_train=40, n_val=8, n_test=8)


@pytest.mark.parametrize("name", BALANCERS.names())
def test_each_balancer_trains_and_logs(dataset: Path, tmp_path: Path, name: str) -> None:
    args = ["train", "--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / "run")]
    args += ["--train.steps", "10", "--loss.balancer.name", name, "--loss.cycle.weight", "0.2"]
    args += ["--loss.balancer.floors", "cycle=0.3"]
    assert main(args) == 0
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "loss/total" in r][-1]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in last.items() if k.startswith("loss/"))
    if name in ("gradnorm", "pcgrad_gradnorm", "uncertainty"):
        weights = {k: v for k, v in last.items() if k.startswith("balance/weight/")}
        assert set(weights) == {f"balance/weight/{n}" for n in ("image_text", "image_action", "text_action", "cycle")}
        assert weights["balance/weight/cycle"] >= 0.3 - 1e-6  # the floor holds
        if name != "uncertainty":
            assert sum(weights.values()) == pytest.approx(4.0, rel=1e-5)
    assert any("conflict/hist/image_text|image_action" in r for r in records)


def interrupted_then_resumed(args: list[str], run: Path, monkeypatch: pytest.MonkeyPatch, at: int = 5) -> None:
    """Train ``args`` into ``run``, dying right after the checkpoint of step ``at``, then --resume it."""
    import vla_align.train as train_module

    real = train_module.lr_factor

    def dies(step: int, cfg: object) -> float:
        if step == at:
            raise KeyboardInterrupt
        return real(step, cfg)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "lr_factor", dies)
    assert main([*args, "--out", str(run), "--train.checkpoint-every", str(at)]) == 130  # "interrupted"
    monkeypatch.setattr(train_module, "lr_factor", real)
    assert main(["train", "--resume", str(run)]) == 0


def test_gradnorm_resume_is_exact(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["train", "--preset", "tiny", "--data", str(dataset), "--loss.balancer.name", "pcgrad_gradnorm"]
    base += ["--train.steps", "10", "--loss.cycle.weight", "0.2"]
    assert main([*base, "--out", str(tmp_path / "full")]) == 0
    interrupted_then_resumed(base, tmp_path / "half", monkeypatch)
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "half" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
