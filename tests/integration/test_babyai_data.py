"""BabyAI demonstrations -> LeRobot v3.0 dataset: determinism, split seeds, shapes, read-back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("minigrid")

from vla_align.data.lerobot import read_dataset, read_episodes
from vla_align.data.splits import SPLITS, split_seed
from vla_align.errors import DatasetError, UserError
from vla_align.sim.babyai.env import BABYAI_ACTIONS, bot_episode, env_id, make_env, render_frame
from vla_align.sim.babyai.generate import generate_babyai

# Round-robin over this list gives 6 GoToLocal and 2 PutNextLocal episodes in each split of 8.
LEVELS = ["GoToLocal", "GoToLocal", "GoToLocal", "PutNextLocal"]
PER_SPLIT = {"train": 8, "val": 8, "test": 8}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("babyai")
    a = generate_babyai(root / "a", LEVELS, PER_SPLIT, seed=3, image_size=56)
    b = generate_babyai(root / "b", LEVELS, PER_SPLIT, seed=3, image_size=56)
    return a, b


def test_generation_is_deterministic(generated: tuple[Path, Path]) -> None:
    a, b = generated
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "meta/info.json").read_text() == (b / "meta/info.json").read_text()


def test_split_seeds_are_disjoint(generated: tuple[Path, Path]) -> None:
    path = generated[0]
    seeds = {s: set(read_dataset(path, split=s).seeds.tolist()) for s in SPLITS}
    assert all(len(v) == 8 for v in seeds.values())
    assert not seeds["train"] & seeds["val"] and not seeds["train"] & seeds["test"]
    assert not seeds["val"] & seeds["test"]
    assert seeds["val"] == {split_seed(3, "val", i) for i in range(8)}
    extra = json.loads((path / "meta/info.json").read_text())["vla_align"]
    assert extra["split_seeds"] == {s: [split_seed(3, s, 0), split_seed(3, s, 7)] for s in SPLITS}
    assert extra["levels"] == [env_id(x) for x in LEVELS] and extra["source"] == "babyai"
    assert extra["image_size"] == 56 and extra["seed"] == 3
    # Different dataset seeds never share env seeds either.
    assert split_seed(4, "train", 0) > split_seed(3, "test", 999_999)


def test_contents(generated: tuple[Path, Path]) -> None:
    path = generated[0]
    for split in SPLITS:
        t = read_dataset(path, split=split)
        assert t.frames.shape == (t.num_frames, 56, 56, 3) and t.frames.dtype == np.uint8
        assert t.actions.dtype == np.int64 and t.actions.min() >= 0 and t.actions.max() < len(BABYAI_ACTIONS)
        assert all(s.strip() for s in t.instructions)
        assert t.env_tasks.count("BabyAI-GoToLocal-v0") == 6 and t.env_tasks.count("BabyAI-PutNextLocal-v0") == 2
        assert t.action_spec.num_actions == 7 and t.action_spec.names == BABYAI_ACTIONS
        assert t.fps == 1.0 and t.success.mean() > 0.5
    info = json.loads((path / "meta/info.json").read_text())
    assert info["robot_type"] == "babyai" and info["splits"] == {"train": "0:8", "val": "8:16", "test": "16:24"}


def test_read_back_equals_the_bot_episodes(generated: tuple[Path, Path]) -> None:
    got = read_episodes(generated[0], split="test")
    envs = {lv: make_env(lv, 56) for lv in set(LEVELS)}
    for i, ep in enumerate(got):
        want = bot_episode(envs[LEVELS[i % len(LEVELS)]], split_seed(3, "test", i), 56)
        assert ep.frames.tobytes() == want.frames.tobytes()
        np.testing.assert_array_equal(ep.actions, want.actions)
        assert (ep.instruction, ep.task, ep.seed, ep.success) == (want.instruction, want.task, want.seed, want.success)


def test_resized_frames_and_bad_arguments(tmp_path: Path) -> None:
    env = make_env("GoToLocal", image_size=64)  # tiles of 10 px -> 70 px, box-resized to 64
    ep = bot_episode(env, seed=1, image_size=64)
    assert ep.frames.shape[1:] == (64, 64, 3)
    obs = {"image": np.zeros((70, 70, 3), dtype=np.uint8)}
    assert render_frame(obs, 64).shape == (64, 64, 3)
    with pytest.raises(UserError, match=r"image_size must be in 28..224"):
        make_env("GoToLocal", image_size=16)
    with pytest.raises(UserError, match="unknown BabyAI level 'GoToLocl'; did you mean GoToLocal"):
        env_id("GoToLocl")
    assert env_id("gotolocal") == env_id("BabyAI-GoToLocal-v0") == "BabyAI-GoToLocal-v0"
    with pytest.raises(UserError, match="holds at most 1,000,000 episodes"):
        split_seed(0, "val", 1_000_000)
    with pytest.raises(UserError, match="holds at most"):
        generate_babyai(tmp_path / "x", ["GoToLocal"], {"train": 1, "test": 1_000_001}, seed=0)
    with pytest.raises(UserError, match="unknown split"):
        generate_babyai(tmp_path / "x", ["GoToLocal"], {"dev": 1}, seed=0)
    generate_babyai(tmp_path / "x", ["GoToLocal"], {"train": 1, "val": 1, "test": 1}, seed=0)
    with pytest.raises(DatasetError, match="already exists"):
        generate_babyai(tmp_path / "x", ["GoToLocal"], {"train": 1, "val": 1, "test": 1}, seed=0)
