"""`vla-align report` on a tiny Meta-World run: failed closed-loop episodes are replayed in the simulator
into three-view panels (key step = first divergence from the scripted expert, Grad-CAM towards the
expert's chunk, violations of the run's limits on the commanded actions), also when only the checkpoint
is left."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

from vla_align.cli import main
from vla_align.physics import PhysicalLimits, violations
from vla_align.report.text import TEXT
from vla_align.runs import load_model
from vla_align.sim import EvalContext, get_simulator
from vla_align.sim.base import EPISODES_FILE, EpisodeResult, read_episodes
from vla_align.sim.metaworld.env import ACTION_NAMES
from vla_align.sim.metaworld.failures import continuous_grad_cam
from vla_align.sim.metaworld.generate import generate_metaworld


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report_mw")
    data = generate_metaworld(
        root / "d", ["reach", "drawer-close"], {"train": 2, "val": 1, "test": 1}, seed=3, image_size=48, max_steps=60
    )
    run = root / "run"
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--train.steps", "10"]
    args += ["--model.policy.enabled", "true", "--model.policy.chunk", "4", "--model.policy.execute", "2"]
    args += ["--eval.sim.max-steps", "40"]
    assert main(args) == 0
    assert main(["eval", "--run", str(run), "--episodes", "1"]) == 0  # 10 steps of training: it fails
    assert main(["report", "--run", str(run)]) == 0
    return run


@pytest.mark.slow
def test_report_has_metaworld_failure_panels(run: Path) -> None:
    failed = [e for e in read_episodes(run / EPISODES_FILE) if not e.success]
    assert failed, "the untrained policy was expected to fail"
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.count('<div class="failure"') == len(failed)
    assert "key step" in html and "reach-v3" in html + "drawer-close-v3"
    # continuous control at 80 Hz: γ_VA and the offset are scored, not waved off as discrete / turn-based
    assert TEXT["zh"]["na_discrete"] not in html and "回合制数据" not in html
    assert "图中文字为中文" in html or TEXT["zh"]["figure_lang_no_cjk"] in html


@pytest.mark.slow
def test_three_view_flags_use_the_run_limits_and_heat_is_a_map(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    limits = PhysicalLimits.from_dict(config["dataset"]["physical_limits"])
    assert limits.signal == "velocity"
    model, _ = load_model(run)
    episodes = read_episodes(run / EPISODES_FILE)
    ctx = EvalContext.from_run(config["dataset"], "test")
    (view,) = get_simulator("metaworld").three_views(model, ctx, episodes, None, limit=1)
    steps = len(view.signal)
    assert view.actions is not None and view.expert_actions is not None
    assert view.actions.shape == view.expert_actions.shape == view.signal.shape == (steps, 4)
    assert view.action_names == ACTION_NAMES and view.signal_names == ["dx", "dy", "dz", "grip"]
    assert 0 <= view.key_step < steps
    assert any("key step" in n for n in view.notes)
    assert view.limits == limits
    expected = violations(torch.as_tensor(view.signal), limits)
    assert set(view.flags) == set(expected)
    for name, flags in expected.items():
        np.testing.assert_array_equal(view.flags[name], flags.numpy())
    assert view.heat is not None and view.heat.shape == view.frame.shape[:2] == (48, 48)
    assert view.heat.min() >= 0.0 and view.heat.max() <= 1.0


@pytest.mark.slow
def test_continuous_grad_cam_is_deterministic_and_leaves_the_model_alone(run: Path) -> None:
    model, cfg = load_model(run)
    head = replace(cfg.model.policy.head, name="flow")
    flow = replace(cfg.model, policy=replace(cfg.model.policy, head=head)).build(model.action_spec, model.state_dim)
    rng = np.random.default_rng(0)
    flow.fit_normalizers(rng.uniform(-1, 1, (64, 4)), rng.normal(size=(64, model.state_dim)))
    frame = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    state = rng.normal(size=model.state_dim).astype(np.float32)
    target = rng.uniform(-1, 1, (3, 4))  # shorter than the chunk: the rest is masked
    for m in (model, flow):
        m.train()
        first = continuous_grad_cam(m, frame, "reach the goal", state, target)
        second = continuous_grad_cam(m, frame, "reach the goal", state, target)
        assert m.training
        assert all(p.grad is None for p in m.parameters())
        assert first.shape == (48, 48) and first.min() >= 0.0 and first.max() <= 1.0
        np.testing.assert_array_equal(first, second)


@pytest.mark.slow
def test_checkpoint_only_report_still_replays_failures(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["dataset"]["path"] = str(tmp_path / "gone")
    (copy / "config.json").write_text(json.dumps(config))
    episodes: list[EpisodeResult] = read_episodes(copy / EPISODES_FILE)
    assert main(["report", "--run", str(copy), "--failures", "1"]) == 0
    html = (copy / "report.html").read_text(encoding="utf-8")
    assert html.count('<div class="failure"') == min(1, sum(not e.success for e in episodes))
    assert "no coherence spectrum" in html
