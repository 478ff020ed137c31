"""The simulator seam is real: ``tests/reach_sim.py`` (outside ``src/``) registers a simulator that
generates data, trains, evaluates closed loop from the checkpoint alone and appears in the report,
through the ordinary command line, with no edit to vla-align."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tests import reach_sim

from vla_align.cli import main
from vla_align.sim import SIMULATORS, EvalContext, evaluate_closed_loop, get_simulator
from vla_align.sim.base import EPISODES_FILE, SimConfig, read_episodes


class PixelExpert:
    """Reads the agent and the named target off the rendered frame and moves like the expert."""

    cfg = SimpleNamespace(policy=SimpleNamespace(history=1, prev_action=False))
    policy = object()
    continuous = False

    def eval(self) -> PixelExpert:
        return self

    def act_logits(self, frames: torch.Tensor, texts: list[str], prev: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(texts), 1, len(reach_sim.ACTIONS))
        cell = frames.shape[1] // reach_sim.GRID
        for i, (frame, text) in enumerate(zip(frames.numpy(), texts, strict=True)):
            centres = frame[cell // 2 :: cell, cell // 2 :: cell][: reach_sim.GRID, : reach_sim.GRID]  # (G, G, 3)
            (ay,), (ax,) = np.nonzero((centres == 255).all(-1))
            colour = next(c for c in reach_sim.COLOURS if c in text)
            hit = np.nonzero((centres == reach_sim.COLOURS[colour]).all(-1))
            gy, gx = (int(hit[0][0]), int(hit[1][0])) if len(hit[0]) else (ay, ax)  # under the agent
            arena = reach_sim.Arena((int(ax), int(ay)), {colour: (gx, gy)}, colour)
            out[i, 0, arena.expert_action()] = 1.0
        return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reach") / "data"
    assert main(["data", "reach2d", "--episodes", "60", "--out", str(out)]) == 0
    return out


def test_the_simulator_registers_from_outside_src() -> None:
    assert "reach2d" in SIMULATORS.names()
    assert isinstance(get_simulator("reach2d"), reach_sim.Reach2D)


def test_an_expert_reading_pixels_solves_every_episode_with_spl_one(dataset: Path) -> None:
    info = json.loads((dataset / "meta" / "info.json").read_text())["vla_align"]
    ctx = EvalContext(info, 30, "test")
    metrics = evaluate_closed_loop(get_simulator("reach2d"), PixelExpert(), ctx, SimConfig(episodes=12), False)  # type: ignore[arg-type]
    assert metrics["sim/episodes"] == 12
    assert metrics["sim/success_rate"] == 1.0 and metrics["sim/spl"] == pytest.approx(1.0)
    assert metrics["ablation/shuffle_text/sim/success_rate"] < 1.0  # the instruction matters


def test_train_evaluate_from_the_checkpoint_alone_and_report(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--model.policy.enabled", "true", "--train.steps", "30"]
    assert main(["train", "--preset", "tiny", "--data", str(dataset), "--out", str(run), *flags]) == 0
    assert main(["eval", "--run", str(run), "--episodes", "10"]) == 0
    with_data = json.loads((run / "metrics.json").read_text())
    assert with_data["sim/episodes"] == 10 and "retrieval/image_to_text/R@10" in with_data

    moved = tmp_path / "elsewhere"
    shutil.move(dataset, moved)  # the checkpoint and config.json alone
    try:
        (run / "metrics.json").unlink()
        assert main(["eval", "--run", str(run), "--episodes", "10"]) == 0
        alone = json.loads((run / "metrics.json").read_text())
        assert not any(k.startswith("retrieval/") for k in alone)
        assert {k: v for k, v in alone.items() if k.startswith("sim/")} == {
            k: v for k, v in with_data.items() if k.startswith("sim/")
        }
        assert main(["report", "--run", str(run), "--lang", "en"]) == 0
    finally:
        shutil.move(moved, dataset)
    html = (run / "report.html").read_text(encoding="utf-8")
    failed = [e for e in read_episodes(run / EPISODES_FILE) if not e.success]
    assert html.count('<div class="failure"') == min(6, len(failed))
    assert "reach the" in html and f"{alone['sim/success_rate']:.3f}" in html


def test_imported_data_has_no_closed_loop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "synth", n_train=40, n_val=8, n_test=8)
    run = tmp_path / "run"
    flags = ["--model.policy.enabled", "true", "--train.steps", "5"]
    assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(run), *flags]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--episodes", "5"]) == 0
    said = capsys.readouterr()
    assert "closed loop: none" in said.out + said.err
    metrics = json.loads((run / "metrics.json").read_text())
    assert "retrieval/image_to_text/R@10" in metrics and not any(k.startswith("sim/") for k in metrics)
