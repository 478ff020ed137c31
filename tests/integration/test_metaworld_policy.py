"""Meta-World end to end at toy scale: a continuous policy trains on generated demonstrations, is
evaluated offline (ADE / FDE / DTW) and in closed loop, and a checkpoint alone (dataset deleted)
reproduces the closed-loop results on the same held-out seeds."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("metaworld")

from vla_align.cli import main
from vla_align.sim.base import EPISODES_FILE, read_episodes
from vla_align.sim.metaworld.generate import generate_metaworld


@pytest.mark.slow
def test_train_eval_and_checkpoint_only_closed_loop(tmp_path: Path) -> None:
    data = generate_metaworld(
        tmp_path / "d",
        ["reach", "drawer-close"],
        {"train": 2, "val": 1, "test": 1},
        seed=3,
        image_size=48,
        max_steps=60,
    )
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--train.steps", "10"]
    args += ["--model.policy.enabled", "true", "--model.policy.chunk", "4", "--model.policy.execute", "2"]
    args += ["--model.policy.head.name", "binned", "--eval.sim.max-steps", "40"]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    limits = config["dataset"]["physical_limits"]
    assert limits["signal"] == "velocity" and len(limits["jerk"]) == 4
    assert main(["eval", "--run", str(run), "--episodes", "1"]) == 0
    first = json.loads((run / "metrics.json").read_text())
    for key in ("traj/ade", "traj/fde", "traj/dtw"):
        assert first[key] >= 0.0, key
    assert first["sim/episodes"] == 2 and 0.0 <= first["sim/success_rate"] <= 1.0
    for task in ("reach-v3", "drawer-close-v3"):
        assert f"sim/by_task/{task}/success_rate" in first
    assert "sim/comfort_rms_jerk" in first and 0.0 <= first["sim/violation_rate"] <= 1.0
    assert "ablation/shuffle_text/sim/success_rate" in first
    episodes = read_episodes(run / EPISODES_FILE)
    assert len(episodes) == 2 and all(len(e.actions) == e.steps and len(e.actions[0]) == 4 for e in episodes)

    shutil.rmtree(data)  # the checkpoint and config.json alone must act
    (run / "metrics.json").unlink()
    assert main(["eval", "--run", str(run), "--episodes", "1"]) == 0
    second = json.loads((run / "metrics.json").read_text())
    assert "traj/ade" not in second
    sim_keys = [k for k in first if k.startswith("sim/")]
    assert {k: second[k] for k in sim_keys} == {k: first[k] for k in sim_keys}

    from vla_align.runs import load_model
    from vla_align.sim import EvalContext, evaluate_closed_loop, get_simulator
    from vla_align.sim.base import SimConfig

    model, _ = load_model(run)
    sim, ctx = get_simulator("metaworld"), EvalContext(config["dataset"]["info"], 48)
    one = evaluate_closed_loop(sim, model, ctx, SimConfig(episodes=1, max_steps=20, ablations=False), False)
    two = evaluate_closed_loop(sim, model, ctx, SimConfig(episodes=1, max_steps=20, ablations=False, workers=2), False)
    assert one == two  # tasks spread over spawned workers give the single-process results
