"""Datasets written by LeRobot's own writer, read by vla-align's reader (LeRobot itself is not needed).

tests/fixtures/lerobot/<name>/ was written by ``interop/make_fixtures.py`` with LeRobot's
``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` / ``finalize`` (``make interop
INTEROP_UPDATE_FIXTURES=1`` rewrites them). Beside each, ``<name>.expected.npz`` / ``.expected.json``
hold every frame as LeRobot's own reader returned it at that time: images (uint8), action, state,
timestamp, episode and frame index, and the task string. Here vla-align reads the same directory and must
agree frame by frame: exactly for images stored as PNG, within a small tolerance for mp4 video (two
FFmpeg-based decoders may round the YUV -> RGB conversion differently).

The video fixtures (LeRobot's default codec, AV1 via libsvtav1, with two cameras; and H.264) need PyAV,
vla-align's ``video`` extra: they fail, not skip, when it is missing.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vla_align.data.lerobot import FrameTable, read_dataset

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot"
NAMES = sorted(p.name.removesuffix(".expected.json") for p in FIXTURES.glob("*.expected.json"))
VIDEO_MEAN_TOLERANCE = 1.0  # mean |pixel difference| per frame allowed between LeRobot's and our video decode
VIDEO_P99_TOLERANCE = 8  # 99th percentile of |pixel difference| per frame


def _expected(name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    with np.load(FIXTURES / f"{name}.expected.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


@cache
def _read(name: str, cameras: tuple[str, ...] = ()) -> FrameTable:
    """vla-align's read of fixture ``name``: the default camera, or ``cameras`` tiled left to right."""
    meta, _ = _expected(name)
    if meta["camera_dtype"] == "video":
        assert importlib.util.find_spec("av") is not None, "video fixtures need PyAV: pip install 'vla-align[video]'"
    if not cameras:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # several cameras: a warning names those not read
            return read_dataset(FIXTURES / name)
    return read_dataset(FIXTURES / name, cameras=list(cameras))


def _rows(table: FrameTable, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """For each expected frame (LeRobot's order), its row in vla-align's arrays; checks none is missing."""
    where = {}
    for e, s, n in zip(table.episode_ids, table.episode_start, table.episode_length, strict=True):
        for t in range(int(n)):
            where[(int(e), t)] = int(s) + t
    pairs = zip(arrays["episode_index"].reshape(-1), arrays["frame_index"].reshape(-1), strict=True)
    keys = [(int(e), int(f)) for e, f in pairs]
    missing = [k for k in keys if k not in where]
    assert not missing, f"vla-align lacks (episode, frame) {missing[:5]}"
    assert len(where) == len(keys), f"vla-align read {len(where)} frames, LeRobot {len(keys)}"
    return np.array([where[k] for k in keys])


def test_fixtures_present() -> None:
    assert set(NAMES) >= {"image_continuous", "image_discrete", "video_default", "video_h264"}
    total = sum(f.stat().st_size for f in FIXTURES.rglob("*") if f.is_file())
    assert total < 1_000_000, f"tests/fixtures/lerobot is {total} bytes; keep it under 1 MB"


@pytest.mark.parametrize("name", NAMES)
def test_episodes_and_frames(name: str) -> None:
    meta, arrays = _expected(name)
    table = _read(name)
    assert table.num_episodes == meta["num_episodes"]
    assert table.num_frames == meta["num_frames"]
    assert table.fps == meta["fps"]
    _rows(table, arrays)


def _check_images(name: str, table: FrameTable, cams: list[str]) -> None:
    """``table.frames`` holds ``cams`` tiled left to right, each equal to what LeRobot read."""
    meta, arrays = _expected(name)
    rows = _rows(table, arrays)
    h, w = arrays[f"image/{cams[0]}"].shape[1:3]
    assert table.frames.shape[1:] == (h, w * len(cams), 3), f"frames {table.frames.shape[1:]} for cameras {cams}"
    for k, cam in enumerate(cams):
        want = arrays[f"image/{cam}"].astype(np.int16)
        got = table.frames[rows, :, k * w : (k + 1) * w].astype(np.int16)
        diff = np.abs(got - want).reshape(len(rows), -1)
        if meta["camera_dtype"] == "image":
            bad = np.nonzero(diff.max(1) > 0)[0]
            assert not len(bad), f"{cam}: {len(bad)} frames differ from LeRobot's, first row {bad[0]}"
        else:
            mean, p99 = diff.mean(1), np.percentile(diff, 99, axis=1)
            bad = np.nonzero((mean > VIDEO_MEAN_TOLERANCE) | (p99 > VIDEO_P99_TOLERANCE))[0]
            assert not len(bad), (
                f"{cam}: {len(bad)} of {len(rows)} decoded frames differ from LeRobot's "
                f"(worst mean |diff| {mean.max():.2f}, p99 {p99.max():.0f})"
            )


@pytest.mark.parametrize("name", NAMES)
def test_images(name: str) -> None:
    """The default read: the first camera in info.json's order."""
    meta, _ = _expected(name)
    table = _read(name)
    _check_images(name, table, meta["cameras"][:1])


MULTI = [(n, c) for n in NAMES for c in _expected(n)[0]["cameras"] if len(_expected(n)[0]["cameras"]) > 1]


@pytest.mark.parametrize(("name", "camera"), MULTI)
def test_one_chosen_camera(name: str, camera: str) -> None:
    _check_images(name, _read(name, (camera,)), [camera])


@pytest.mark.parametrize("name", sorted({n for n, _ in MULTI}))
def test_cameras_tiled(name: str) -> None:
    cams = _expected(name)[0]["cameras"]
    _check_images(name, _read(name, tuple(reversed(cams))), list(reversed(cams)))


@pytest.mark.parametrize("name", NAMES)
def test_actions(name: str) -> None:
    meta, arrays = _expected(name)
    table = _read(name)
    rows = _rows(table, arrays)
    want = arrays["action"]
    if meta["discrete_action"]:
        assert table.action_spec.kind == "discrete"
        assert table.actions.dtype == np.int64 and table.actions.ndim == 1
        np.testing.assert_array_equal(table.actions[rows], want.reshape(-1))
    else:
        names = meta["features"]["action"]["names"]
        assert table.action_spec.kind == "continuous"
        assert table.action_spec.dim == len(names)
        assert table.action_spec.names == names
        assert table.actions.dtype == np.float32
        np.testing.assert_array_equal(table.actions[rows], want)


@pytest.mark.parametrize("name", NAMES)
def test_state(name: str) -> None:
    _, arrays = _expected(name)
    table = _read(name)
    rows = _rows(table, arrays)
    assert table.state is not None, "observation.state not read"
    assert table.state.dtype == np.float32
    np.testing.assert_array_equal(table.state[rows], arrays["state"])


@pytest.mark.parametrize("name", NAMES)
def test_timestamps(name: str) -> None:
    _, arrays = _expected(name)
    table = _read(name)
    rows = _rows(table, arrays)
    ts = getattr(table, "timestamps", None)
    if ts is None:  # the reader keeps no timestamps: episodes are sampled at fps from frame 0
        ts = np.concatenate([np.arange(int(n)) / table.fps for n in table.episode_length])
    np.testing.assert_allclose(np.asarray(ts, dtype=np.float64)[rows], arrays["timestamp"].reshape(-1), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_task_strings(name: str) -> None:
    meta, arrays = _expected(name)
    table = _read(name)
    rows = _rows(table, arrays)
    per_row = np.repeat(np.array(table.instructions, dtype=object), table.episode_length)
    got = [str(x) for x in per_row[rows]]
    assert got == meta["tasks_per_frame"]
    assert table.instructions == meta["episode_tasks"]
    assert sorted(table.tasks) == sorted(set(meta["episode_tasks"]))
