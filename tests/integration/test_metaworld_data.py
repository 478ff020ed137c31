"""Meta-World expert demonstrations -> LeRobot v3.0 dataset: shapes, split seeds, instructions,
determinism, upright frames, read-back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before metaworld imports mujoco, which fixes the GL backend
pytest.importorskip("metaworld")

from vla_align.data.lerobot import read_dataset, read_episodes
from vla_align.data.splits import SPLITS, split_seed
from vla_align.errors import DatasetError, UserError
from vla_align.sim.metaworld.env import (
    ACTION_NAMES,
    CONTROL_FPS,
    SUCCESS_EXTRA_STEPS,
    expert_episode,
    make_env,
)
from vla_align.sim.metaworld.generate import generate_metaworld
from vla_align.sim.metaworld.instructions import INSTRUCTIONS, instruction_for

pytestmark = pytest.mark.slow  # ~11 s: six simulator + GL context set-ups (0.6 s each) and 700 rendered frames
TASKS = ["reach", "drawer-close-v3"]  # short expert episodes (~45 and ~80 steps)
PER_TASK = {"train": 1, "val": 1, "test": 1}
SEED = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_metaworld(tmp_path_factory.mktemp("mw") / "ds", TASKS, PER_TASK, seed=SEED, image_size=48)


def test_contents(dataset: Path) -> None:
    info = json.loads((dataset / "meta/info.json").read_text())
    assert info["fps"] == CONTROL_FPS == 80.0 and info["robot_type"] == "sawyer"
    assert info["splits"] == {"train": "0:2", "val": "2:4", "test": "4:6"}
    assert info["features"]["observation.state"]["shape"] == [4]
    extra = info["vla_align"]
    assert extra["source"] == "metaworld" and extra["tasks"] == ["reach-v3", "drawer-close-v3"]
    assert extra["image_size"] == 48 and extra["seed"] == SEED and extra["control_fps"] == 80.0
    assert extra["instruction_sets"] == {t: INSTRUCTIONS[t] for t in ("reach-v3", "drawer-close-v3")}
    assert extra["action_spec"] == {"kind": "continuous", "dim": 4, "num_actions": 0, "names": ACTION_NAMES}
    for split in SPLITS:
        t = read_dataset(dataset, split=split)
        n = PER_TASK[split]
        assert t.frames.shape == (t.num_frames, 48, 48, 3) and t.frames.dtype == np.uint8
        assert t.actions.shape == (t.num_frames, 4) and t.actions.dtype == np.float32
        assert np.abs(t.actions).max() <= 1.0
        assert t.state is not None and t.state.shape == (t.num_frames, 4) and t.state.dtype == np.float32
        assert ((t.state[:, 3] >= 0) & (t.state[:, 3] <= 1)).all()  # gripper opening
        assert t.action_spec.kind == "continuous" and t.action_spec.dim == 4
        assert t.env_tasks == ["reach-v3"] * n + ["drawer-close-v3"] * n  # task-major inside a split
        # the expert solves both tasks; an episode ends SUCCESS_EXTRA_STEPS steps after the first success
        assert t.success.all() and (t.episode_length < 200).all()
        for e, task in enumerate(t.env_tasks):
            assert t.instructions[e] in INSTRUCTIONS[task]
            assert t.instructions[e] == instruction_for(task, int(t.seeds[e]))


def test_timestamps_at_the_control_rate(dataset: Path) -> None:
    table = pa.concat_tables(pq.read_table(f) for f in sorted((dataset / "data").rglob("*.parquet")))
    ts = table["timestamp"].to_numpy()
    frame_index = table["frame_index"].to_numpy()
    np.testing.assert_allclose(ts, frame_index / 80.0, atol=1e-6)


def test_split_seeds_are_disjoint(dataset: Path) -> None:
    seeds = {s: read_dataset(dataset, split=s).seeds.tolist() for s in SPLITS}
    assert seeds["train"] == [split_seed(SEED, "train", i) for i in range(2)]
    assert seeds["val"] == [split_seed(SEED, "val", i) for i in range(2)]
    sets = [set(v) for v in seeds.values()]
    assert sum(len(s) for s in sets) == len(set().union(*sets)) == 6
    extra = json.loads((dataset / "meta/info.json").read_text())["vla_align"]
    assert extra["split_seeds"] == {s: [seeds[s][0], seeds[s][-1]] for s in SPLITS}


def test_generation_is_deterministic(dataset: Path, tmp_path: Path) -> None:
    # the val split of the first task alone: the same env seed (episode 0 of the split), so the same episode
    again = generate_metaworld(tmp_path / "val", TASKS[:1], {"val": 1}, seed=SEED, image_size=48)
    want = read_episodes(dataset, split="val")[:1]
    got = read_episodes(again, split="val")
    assert [(e.task, e.seed, e.instruction, e.success) for e in got] == [
        (e.task, e.seed, e.instruction, e.success) for e in want
    ]
    for a, b in zip(got, want, strict=True):
        assert a.actions.tobytes() == b.actions.tobytes()
        assert a.state is not None and b.state is not None and a.state.tobytes() == b.state.tobytes()
        assert a.frames.tobytes() == b.frames.tobytes()


def test_layouts_differ_between_seeds_and_frames_are_upright() -> None:
    with make_env("reach-v3", image_size=64) as env:
        a = expert_episode(env, seed=1)
        b = expert_episode(env, seed=2)
        assert not np.array_equal(a.actions[:5], b.actions[:5])  # new goal, new expert motion
        assert a.success and a.state is not None
        # upright: the dark wooden table fills the bottom of the image, the bright wall and floor the top
        top, bottom = a.frames[:, :16].astype(np.float32), a.frames[:, -16:].astype(np.float32)
        assert top.mean() > bottom.mean() + 10
        assert bottom[..., 0].mean() > bottom[..., 2].mean()  # wood is red-brown, not grey or blue
        # the closed-loop interface: same seed, same first frame and state
        frame, state = env.reset(1)
        assert frame.shape == (64, 64, 3) and state.shape == (4,) and state.dtype == np.float32
        np.testing.assert_array_equal(frame, a.frames[0])
        np.testing.assert_array_equal(state, a.state[0])
        done, steps = False, 0
        while not done:
            frame, state, success, done = env.step(env.expert_action())
            steps += 1
        assert success and steps == len(a) - SUCCESS_EXTRA_STEPS


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown split"):
        generate_metaworld(tmp_path / "x", ["reach"], {"dev": 1}, seed=0)
    with pytest.raises(UserError, match="holds at most"):
        generate_metaworld(tmp_path / "x", ["reach", "push"], {"val": 500_001}, seed=0)
    with pytest.raises(UserError, match="did you mean drawer-open"):
        generate_metaworld(tmp_path / "x", ["drawer-opn"], {"train": 1}, seed=0)
    with pytest.raises(UserError, match="image_size must be in"):
        make_env("reach", image_size=8)
    with pytest.raises(UserError, match="max_steps must be in"):
        make_env("reach", max_steps=501)
    generate_metaworld(tmp_path / "x", ["reach"], {"test": 1}, seed=0, image_size=32, max_steps=5)
    with pytest.raises(DatasetError, match="already exists"):
        generate_metaworld(tmp_path / "x", ["reach"], {"test": 1}, seed=0)
