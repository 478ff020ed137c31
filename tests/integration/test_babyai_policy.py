"""Closed loop on BabyAI: the rollout machinery replays experts perfectly, ablations change only what
the policy sees, and a policy run goes train -> eval --episodes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("minigrid")

from vla_align.cli import main
from vla_align.data.lerobot import read_dataset
from vla_align.sim import EvalContext, evaluate_closed_loop, get_simulator
from vla_align.sim.babyai.generate import generate_babyai
from vla_align.sim.babyai.rollout import episode_specs, held_out_from_table, rollout, summarize
from vla_align.sim.base import EpisodeResult, SimConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("babyai-policy")
    return generate_babyai(root / "d", ["GoToLocal"], {"train": 24, "val": 4, "test": 10}, seed=5, image_size=28)


def test_replaying_the_expert_succeeds_with_spl_one(dataset: Path) -> None:
    table = read_dataset(dataset, split="test")
    specs = episode_specs(held_out_from_table(table), 10, seed=0)
    by_seed = {int(table.seeds[e]): e for e in range(table.num_episodes)}
    order = iter(specs)
    state: dict[str, object] = {}

    def replay(frames: np.ndarray, texts: list[str], prev: np.ndarray) -> np.ndarray:
        assert frames.shape[1:] == (28, 28, 3) and len(texts) == 1
        if prev[0] < 0:  # a new episode starts (one env: episodes run in spec order)
            spec = next(order)
            assert texts[0] == spec.instruction
            e = by_seed[spec.seed]
            state["actions"] = list(
                table.actions[table.episode_start[e] : table.episode_start[e] + table.episode_length[e]]
            )
        actions = state["actions"]
        assert isinstance(actions, list)
        return np.asarray([[actions.pop(0)]])

    results = rollout(replay, specs, 28, SimConfig(envs=1))
    assert len(results) == len(specs) and all(r.success for r in results)
    metrics = summarize(results)
    assert metrics["sim/success_rate"] == 1.0 and metrics["sim/spl"] == pytest.approx(1.0)
    assert metrics["sim/mean_steps"] == metrics["sim/expert_mean_steps"]


def test_a_policy_that_only_turns_never_succeeds(dataset: Path) -> None:
    table = read_dataset(dataset, split="test")
    specs = episode_specs(held_out_from_table(table), 6, seed=0)
    results = rollout(
        lambda f, t, p: np.zeros((len(t), 2), dtype=np.int64), specs, 28, SimConfig(envs=4, max_steps=12), execute=2
    )
    assert [r.steps for r in results] == [12] * 6
    assert summarize(results)["sim/success_rate"] == 0.0


def test_shuffled_instructions_differ_and_shuffled_images_come_from_other_episodes(dataset: Path) -> None:
    table = read_dataset(dataset, split="test")
    specs = episode_specs(held_out_from_table(table), 10, seed=0, ablation="shuffle_text")
    assert sorted(s.shown_instruction for s in specs) == sorted(s.instruction for s in specs)
    if len({s.instruction for s in specs}) > 1:
        assert all(s.shown_instruction != s.instruction for s in specs)
    seen: list[np.ndarray] = []
    specs = episode_specs(held_out_from_table(table), 4, seed=0, ablation="shuffle_image")
    assert all(int(table.seeds[s.image_episode]) != s.seed for s in specs)

    def record(frames: np.ndarray, texts: list[str], prev: np.ndarray) -> np.ndarray:
        seen.extend(frames)
        return np.full((len(texts), 1), 2)

    rollout(record, specs, 28, SimConfig(envs=2, max_steps=3), table=table, ablation="shuffle_image")
    pool = {table.frames[r].tobytes() for r in range(table.num_frames)}
    assert seen and all(f.tobytes() in pool for f in seen)


def test_spl_and_breakdown_keys() -> None:
    results = [
        EpisodeResult(seed=1, level="L", instruction="go to the red ball", success=True, steps=10, expert_steps=5),
        EpisodeResult(seed=2, level="L", instruction="go to a blue key", success=False, steps=64, expert_steps=7),
    ]
    m = summarize(results)
    assert m["sim/spl"] == pytest.approx(0.25)
    assert m["sim/by_colour/red/success_rate"] == 1.0 and m["sim/by_object/key/success_rate"] == 0.0


@pytest.mark.slow
def test_policy_run_trains_and_acts_end_to_end(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", str(dataset), "--out", str(run), "--train.steps", "30"]
    args += ["--model.policy.enabled", "true", "--model.policy.fusion", "xattn", "--model.policy.chunk", "2"]
    args += ["--train.select.every", "10", "--train.select.episodes", "4"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "loss/policy" in r]
    assert train_lines and 0 <= train_lines[-1]["policy/accuracy"] <= 1
    checks = [r for r in lines if "val/score" in r]
    assert [r["step"] for r in checks] == [10, 20, 30]
    assert all(0 <= r["val/sim/success_rate"] <= 1 for r in checks)
    selection = json.loads((run / "selection.json").read_text())
    best = max(checks, key=lambda r: r["val/score"])  # first of equals wins, as in training
    assert selection["best_step"] == next(r["step"] for r in checks if r["val/score"] == best["val/score"])
    assert main(["eval", "--run", str(run), "--episodes", "6"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sim/episodes"] == 6
    for key in (
        "sim/success_rate",
        "sim/spl",
        "ablation/shuffle_text/sim/success_rate",
        "ablation/shuffle_image/sim/success_rate",
        "retrieval/image_to_text/R@10",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key


@pytest.mark.slow
def test_worker_processes_give_the_single_process_results(dataset: Path) -> None:
    from vla_align.data.episode import ActionSpec
    from vla_align.policy import PolicyConfig
    from vla_align.presets import get_preset

    table = read_dataset(dataset, split="test")
    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True, fusion="film", hidden=32, history=2)
    torch.manual_seed(3)
    model = cfg.model.build(ActionSpec.from_dict(table.info["vla_align"]["action_spec"]))
    sim, ctx = get_simulator("babyai"), EvalContext.from_table(table, "test")
    one = evaluate_closed_loop(sim, model, ctx, SimConfig(episodes=10, envs=3, max_steps=20), progress=False)
    two = evaluate_closed_loop(sim, model, ctx, SimConfig(episodes=10, envs=3, max_steps=20, workers=2), progress=False)
    assert one == two
    assert one["sim/episodes"] == 10 and "ablation/shuffle_image/sim/success_rate" in one
