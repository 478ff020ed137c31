"""`vla-align data dedup`: injected exact and re-rendered copies are found (precision = recall = 1), different
demonstrations of one instruction are not, the check matches a per-pixel loop, and the command writes its
file beside the dataset without touching it; `data split --exclude` leaves the flagged episodes out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.reference import dedup_check_reference

from vla_align.data import split_file
from vla_align.data.dedup import DedupParams, Descriptors, check_distances, dedup_dataset, normalise_instruction
from vla_align.data.episode import ActionSpec, Episode
from vla_align.data.lerobot import read_dataset, write_dataset

SIZE = 32
DISCRETE = ActionSpec(kind="discrete", num_actions=4, names=["left", "right", "up", "down"])
CONTINUOUS = ActionSpec(kind="continuous", dim=2, names=["dx", "dy"])
TEXTS = ("go to the red ball", "go to the blue key", "open the door")
COLOURS = ((220, 40, 40), (40, 40, 220), (40, 200, 40), (230, 230, 40))


def demo(seed: int, continuous: bool, moved: int = 0) -> Episode:
    """A room (background gradient, three coloured blocks at random places) and an agent block that follows
    the actions; ``moved`` shifts the first block by that many pixels (a different demonstration in the same
    room with the same actions)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 11))
    room = np.zeros((SIZE, SIZE, 3), np.float32) + np.linspace(20, 90, SIZE)[None, :, None]
    for k in range(3):
        y, x = rng.integers(2, SIZE - 8, size=2)
        if k == 0:
            x = (x + moved) % (SIZE - 8)
        room[y : y + 5, x : x + 5] = COLOURS[k]
    actions: np.ndarray
    if continuous:
        actions = np.cumsum(rng.normal(0, 0.3, size=(n, 2)), axis=0).astype(np.float32)  # (n, 2)
        steps = np.rint(actions).astype(int)
    else:
        actions = rng.integers(0, 4, size=n)  # (n,)
        steps = np.cumsum(np.array([[0, -1], [0, 1], [-1, 0], [1, 0]])[actions], axis=0)
    frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for t in range(n):
        f = room.copy()
        ay, ax = np.clip(SIZE // 2 + 2 * steps[t], 2, SIZE - 6)
        f[ay : ay + 4, ax : ax + 4] = COLOURS[3]
        frames[t] = f.astype(np.uint8)
    return Episode(frames, actions, TEXTS[seed % 3], "Rooms-v0", 10.0, seed, True, None)


def rerender(ep: Episode, seed: int, action_std: float) -> Episode:
    """A noisy copy: Gaussian pixel noise (sigma 3 grey levels), the camera 1 px to the right, and for
    continuous actions noise of 2 % of their standard deviation."""
    rng = np.random.default_rng(1000 + seed)
    x = ep.frames.astype(np.float32) + rng.normal(0, 3.0, ep.frames.shape)
    x = np.concatenate([x[:, :, :1], x[:, :, :-1]], axis=2)
    actions = ep.actions
    if actions.ndim == 2:
        actions = (actions + rng.normal(0, 0.02 * action_std, actions.shape)).astype(np.float32)
    frames = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return Episode(frames, actions, ep.instruction + " ", ep.task, ep.fps, ep.seed, ep.success, None)


def write_with_copies(path: Path, continuous: bool) -> set[tuple[int, int]]:
    """30 demonstrations (10 per instruction), a near twin in the same room (one block moved by 6 px, same
    actions), 3 exact and 3 re-rendered copies spread over train / val / test; returns the copy pairs."""
    base = [demo(s, continuous) for s in range(30)]
    base.append(demo(4, continuous, moved=6))  # episode 30: a different demonstration, not a copy
    std = float(np.concatenate([np.asarray(e.actions, np.float32).reshape(-1) for e in base]).std())
    episodes = list(base)
    pairs = set()
    for src, noisy in ((1, False), (7, False), (12, False), (2, True), (9, True), (20, True)):
        episodes.append(rerender(base[src], src, std) if noisy else base[src])
        pairs.add((src, len(episodes) - 1))
    # 37 episodes: train 0..24, val 25..30, test 31..36: every copy is in test, its source in train
    write_dataset(
        path,
        episodes,
        action_spec=CONTINUOUS if continuous else DISCRETE,
        fps=10.0,
        splits={"train": (0, 25), "val": (25, 31), "test": (31, 37)},
        robot_type="synthetic",
    )
    return pairs


def cluster_pairs(doc: dict) -> set[tuple[int, int]]:  # type: ignore[type-arg]
    clusters: dict[int, list[int]] = {}
    for r in doc["episodes"]:
        clusters.setdefault(r["cluster"], []).append(r["episode_index"])
    return {(a, b) for m in clusters.values() for a in m for b in m if a < b}


@pytest.mark.parametrize("continuous", [False, True])
def test_finds_exact_and_noisy_copies_only(tmp_path: Path, continuous: bool) -> None:
    ds = tmp_path / "ds"
    truth = write_with_copies(ds, continuous)
    doc = dedup_dataset(ds, DedupParams())
    found = cluster_pairs(doc)
    hit = found & truth
    precision, recall = len(hit) / max(len(found), 1), len(hit) / len(truth)
    assert (precision, recall) == (1.0, 1.0), (found, truth)
    flagged = {r["episode_index"]: r for r in doc["flagged"]}
    assert 30 not in flagged and 4 not in flagged  # the twin in the same room is another demonstration
    # each cluster keeps its copy in the most held-out split: the copies at 31..36 are in test
    assert set(flagged) == {1, 7, 12, 2, 9, 20}
    for src, copy in truth:
        assert flagged[src]["duplicate_of"] == copy
        assert flagged[src]["reason"].startswith(f"duplicate of episode {copy} (distance ")
        assert 0.0 <= flagged[src]["distance"] <= 1.0
    s = doc["summary"]
    assert (s["episodes"], s["clusters"], s["flagged"]) == (37, 6, 6)
    assert s["train_copies_of_held_out"] == 6 and s["cross_split_clusters"] == 6
    nearest = {r["episode_index"]: r for r in doc["episodes"]}
    assert nearest[31]["nearest_episode"] == 1 and nearest[31]["nearest"] == 0.0  # exact copy


def test_check_matches_per_pixel_loop() -> None:
    rng = np.random.default_rng(3)
    shown = rng.integers(0, 256, size=(4, 2, 12, 12, 3), dtype=np.uint8)  # (E, K, H, W, C)
    shown[1] = np.concatenate([shown[0][:, :, :1], shown[0][:, :, :-1]], axis=2)  # episode 0 moved 1 px
    images, rows = shown.reshape(8, 12, 12, 3), np.arange(8).reshape(4, 2)
    desc = Descriptors(
        ["x"] * 4, np.full(4, 2), np.zeros((4, 1), np.float32), np.zeros((4, 2), np.float32), 1, images, rows
    )
    i, j = np.array([0, 0, 2, 1, 3]), np.array([1, 2, 3, 3, 0])
    frame, action = check_distances(desc, i, j, shift=1)
    want = [
        dedup_check_reference(shown[a].tolist(), shown[b].tolist(), grid=8, shift=1) for a, b in zip(i, j, strict=True)
    ]
    np.testing.assert_allclose(frame, want, rtol=1e-5, atol=1e-3)
    assert frame[0] == pytest.approx(0.0, abs=1e-3)  # the shifted copy matches at its shift
    assert (frame[1:] > 20).all() and (action == 0).all()


def test_instruction_normalisation() -> None:
    assert normalise_instruction("  Go to the RED ball. ") == normalise_instruction("go  to the red ball")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


Cli = Callable[..., tuple[int, str, str]]


def test_cli_writes_beside_and_split_excludes(tmp_path: Path, cli: Cli) -> None:
    ds = tmp_path / "ds"
    write_with_copies(ds, continuous=False)
    before = _hashes(ds)
    code, out, err = cli("data", "dedup", str(ds))
    assert code == 0, err
    dedup = tmp_path / "ds.dedup.json"
    assert dedup.is_file() and _hashes(ds) == before  # written beside, the dataset byte-identical
    assert f"--data.exclude {dedup}" in out and f"vla-align data split {ds} --exclude {dedup}" in out
    code, _, err = cli("data", "dedup", str(ds))
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert cli("data", "dedup", str(ds), "--overwrite")[0] == 0
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    code, _, err = cli("data", "dedup", str(ds), "--out", str(other), "--overwrite")
    assert code == 2 and "not a vla-align dedup file" in err and other.read_text() == '{"mine": 1}'
    code, _, err = cli("data", "dedup", str(ds), "--out", str(ds / "x.json"))
    assert code == 2 and "refusing" in err and not (ds / "x.json").exists()

    flagged = {r["episode_index"] for r in json.loads(dedup.read_text())["flagged"]}
    assert flagged == {1, 7, 12, 2, 9, 20}
    code, out, err = cli("data", "split", str(ds), "--exclude", str(dedup), "--val", "0.2", "--test", "0.2")
    assert code == 0, err
    assert "6 flagged episode(s) left out" in out
    path = tmp_path / "ds.splits.json"
    doc = split_file.load_split_file(path)
    split_file.check_split_file(doc, path, ds, np.arange(37))
    in_splits = {i for ids in doc["splits"].values() for i in ids}
    assert not in_splits & flagged and in_splits | flagged == set(range(37))
    assert {r["episode_index"] for r in doc["excluded"]} == flagged
    assert all(r["file"] == str(dedup) and r["reason"].startswith("duplicate of") for r in doc["excluded"])
    assert not set(read_dataset(ds, split="train").episode_ids.tolist()) & flagged
    assert _hashes(ds) == before


def _write(path: Path, episodes: list[Episode]) -> Path:
    n = len(episodes)
    return write_dataset(path, episodes, action_spec=DISCRETE, fps=10.0, splits={"train": (0, n)})


def test_all_copies_warns_and_one_episode_refuses(tmp_path: Path, cli: Cli) -> None:
    one = demo(5, continuous=False)
    _write(tmp_path / "same", [one] * 4)
    code, _, err = cli("data", "dedup", str(tmp_path / "same"))
    assert code == 0 and "all 4 episodes are copies of episode 0" in err
    assert json.loads((tmp_path / "same.dedup.json").read_text())["summary"]["flagged"] == 3
    _write(tmp_path / "single", [one])
    code, _, err = cli("data", "dedup", str(tmp_path / "single"))
    assert code == 2 and "at least 2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "single.dedup.json").exists()
    code, _, err = cli("data", "dedup", str(tmp_path / "missing"))
    assert code == 2 and "missing" in err and len(err.strip().splitlines()) == 1


def test_split_exclude_refuses_other_files(tmp_path: Path, cli: Cli) -> None:
    ds = tmp_path / "ds"
    _write(ds, [demo(s, continuous=False) for s in range(6)])
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "vla-align-splits"}')
    code, _, err = cli("data", "split", str(ds), "--exclude", str(bad))
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ds.splits.json").exists()
