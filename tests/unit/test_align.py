"""`vla-align data align` and `data inject`: camera-action offsets recovered on synthetic episodes with
known lags, the corrected view (``--data.align``), the bad inputs of chapter 5.7's time alignment."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from tests.reference import lag_scores_reference
from tests.synthetic import write_synthetic

from vla_align.data import sidecar
from vla_align.data.align import AlignConfig, align_document, apply_alignment, estimate_offsets, lag_scores
from vla_align.data.episode import ActionSpec, Episode
from vla_align.data.inject import lagged, read_truth
from vla_align.data.lerobot import read_dataset, write_dataset
from vla_align.errors import DatasetError

FPS = 20.0
SIZE = 32


def moving_episode(seed: int, length: int, lag: int = 0, still: bool = False) -> Episode:
    """A white square driven by velocity commands from rest: state = its position, action = the
    command; the camera is ``lag`` steps late."""
    rng = np.random.default_rng(seed)
    cmd = np.cumsum(rng.normal(0, 0.4, size=(length, 2)), axis=0)
    cmd *= np.minimum(1.0, np.arange(length) / 5.0)[:, None]  # starts from rest
    cmd = np.clip(cmd, -1.5, 1.5).astype(np.float32)
    if still:
        cmd[:] = 0.0
    pos = np.clip(np.array([14.0, 14.0]) + np.cumsum(np.vstack([[0, 0], cmd[:-1]]), axis=0), 2, SIZE - 8)
    frames = np.full((length, SIZE, SIZE, 3), 20, np.uint8)
    for t, (x, y) in enumerate(pos):
        frames[t, int(y) : int(y) + 6, int(x) : int(x) + 6] = 255
    return Episode(
        frames=lagged(frames, lag),
        actions=cmd,
        instruction=f"move {'left' if seed % 2 else 'right'}",
        task="Moving-v0",
        fps=FPS,
        seed=seed,
        success=True,
        state=pos.astype(np.float32),
    )


def write_moving(path: Path, lags: list[int], length: int = 80, still: tuple[int, ...] = ()) -> Path:
    eps = [moving_episode(i, length, lag, i in still) for i, lag in enumerate(lags)]
    return write_dataset(
        path,
        eps,
        action_spec=ActionSpec(kind="continuous", dim=2, names=["dx", "dy"]),
        fps=FPS,
        splits={"train": (0, len(eps))},
        robot_type="synthetic",
        extra={"source": "synthetic"},
        total_episodes=len(eps),
    )


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            digest.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return digest.hexdigest()


def test_lag_scores_equal_a_naive_loop() -> None:
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    got = lag_scores(pred, target, 6, 10)
    want = lag_scores_reference(pred, target, 6, 10)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_lagged_camera_shows_earlier_steps() -> None:
    frames = np.arange(5)[:, None, None, None] * np.ones((5, 2, 2, 3), np.uint8)
    assert lagged(frames, 2)[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 2]
    assert lagged(frames, -1)[:, 0, 0, 0].tolist() == [1, 2, 3, 4, 4]


def test_known_lags_are_recovered(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lags = rng.integers(-6, 7, size=24).tolist()  # ±300 ms at 20 Hz
    table = read_dataset(write_moving(tmp_path / "ds", lags))
    offsets, reference = estimate_offsets(table, AlignConfig())
    assert reference == "state"
    err = np.abs(np.array([o.lag_steps for o in offsets]) - np.array(lags))
    assert all(o.status == "ok" for o in offsets)
    assert np.median(err) == 0 and err.max() <= 1, err


def test_clean_data_aligns_at_zero_and_the_view_is_unchanged(tmp_path: Path) -> None:
    table = read_dataset(write_moving(tmp_path / "ds", [0] * 12))
    offsets, _ = estimate_offsets(table, AlignConfig())
    lags = np.array([o.lag_steps for o in offsets])
    assert np.abs(lags).max() <= 1 and (lags == 0).mean() >= 0.8, lags  # the square moves on whole pixels
    for o in offsets:
        o.lag_steps, o.offset_ms = 0, 0.0
    doc = align_document(tmp_path / "ds", table, offsets, AlignConfig(), "state")
    view = apply_alignment(table, doc, "shift", 150.0, 0.0, weigh=True)
    np.testing.assert_array_equal(view.frames, table.frames)
    assert view.row_weight is None


def test_the_corrected_view_pairs_action_t_with_frame_t_plus_lag(tmp_path: Path) -> None:
    lags = [3, -2, 0, 5]
    root = write_moving(tmp_path / "ds", lags, length=40)
    clean = read_dataset(write_moving(tmp_path / "clean", [0, 0, 0, 0], length=40))
    table = read_dataset(root)
    records = [{"episode_index": i, "status": "ok", "offset_ms": k * 50.0, "shift": k} for i, k in enumerate(lags)]
    doc = {"episodes": records, "summary": {"fps": FPS}}
    view = apply_alignment(table, doc, "shift", 150.0, 0.0, weigh=False)
    for e, k in enumerate(lags):
        n = 40 - abs(k)
        assert view.episode_length[e] == n
        rows = slice(int(view.episode_start[e]), int(view.episode_start[e]) + n)
        src = slice(int(clean.episode_start[e]) + max(0, -k), int(clean.episode_start[e]) + max(0, -k) + n)
        np.testing.assert_array_equal(view.actions[rows], clean.actions[src])  # the controller side is cut
        np.testing.assert_array_equal(view.frames[rows], clean.frames[src])  # and each frame is its own again


def test_offsets_above_the_threshold_are_down_weighted_or_dropped(tmp_path: Path) -> None:
    table = read_dataset(write_moving(tmp_path / "ds", [0, 0, 0], length=30))
    records = [
        {"episode_index": 0, "status": "ok", "offset_ms": 0.0, "shift": 0},
        {"episode_index": 1, "status": "ok", "offset_ms": 200.0, "shift": 4},
        {"episode_index": 2, "status": "weak", "offset_ms": 400.0, "shift": 0},
    ]
    doc = {"episodes": records, "summary": {"fps": FPS}}
    weighted = apply_alignment(table, doc, "weight", 150.0, 0.25, weigh=True)  # nothing shifted
    assert weighted.episode_length.tolist() == [30, 30, 30]
    assert weighted.row_weight is not None
    assert weighted.row_weight.reshape(3, 30)[:, 0].tolist() == [1.0, 0.25, 1.0]  # a weak episode is kept
    dropped = apply_alignment(table, doc, "weight", 150.0, 0.0, weigh=True)
    assert dropped.episode_ids.tolist() == [0, 2]
    shifted = apply_alignment(table, doc, "shift", 150.0, 0.0, weigh=True)  # residual 0 after the shift
    assert shifted.episode_length.tolist() == [30, 26, 30] and shifted.row_weight is None


def test_no_signal_and_too_short_episodes_are_named(tmp_path: Path) -> None:
    table = read_dataset(write_moving(tmp_path / "ds", [0] * 8, length=60, still=(3,)))
    offsets, _ = estimate_offsets(table, AlignConfig())
    assert offsets[3].status == "no-signal" and offsets[3].shift() == 0
    short = read_dataset(write_moving(tmp_path / "short", [0] * 4, length=4))
    with pytest.raises(DatasetError, match="too short"):
        estimate_offsets(short, AlignConfig())


def test_turn_based_data_is_refused(tmp_path: Path) -> None:
    table = read_dataset(write_synthetic(tmp_path / "ds", continuous=True))  # 10 Hz
    with pytest.raises(DatasetError, match="under one control step"):
        estimate_offsets(table, AlignConfig(max_lag_ms=50))


def test_cli_inject_align_and_train_on_the_corrected_view(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    src = write_moving(tmp_path / "clean", [0] * 16, length=60)
    before = tree_hash(src)
    code, _, err = cli("data", "inject", str(src), "--out", str(tmp_path / "lag"), "--lag-ms", "300")
    assert code == 0, err
    truth = read_truth(tmp_path / "lag")["lag_steps"]
    lag = tmp_path / "lag"
    code, _, err = cli("data", "align", str(lag))
    assert code == 0, err
    doc = sidecar.load(tmp_path / "lag.align.json", "align", lag)
    got = {r["episode_index"]: r["lag_steps"] for r in doc["episodes"]}
    assert sum(abs(got[int(i)] - v) <= 1 for i, v in truth.items()) >= 15
    assert tree_hash(src) == before  # sources are only read
    code, _, err = cli("data", "align", str(lag))
    assert code == 2 and "already exists" in err
    code, _, err = cli("data", "align", str(lag), "--out", str(lag / "meta" / "offsets.json"))
    assert code == 2 and "refusing" in err and not (lag / "meta" / "offsets.json").exists()
    (tmp_path / "x.json").write_text("{}")
    code, _, err = cli("data", "align", str(lag), "--out", str(tmp_path / "x.json"), "--overwrite")
    assert code == 2 and "not a vla-align align file" in err
    args = ["train", "--preset", "tiny", "--data.path", str(lag), "--data.align", "auto", "--train.steps", "2"]
    args += ["--train.select.every", "0", "--out", str(tmp_path / "run")]
    code, _, err = cli(*args)
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["align"] == "auto"


def test_inject_refuses_to_write_inside_its_source(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    src = write_moving(tmp_path / "clean", [0] * 4, length=30)
    code, _, err = cli("data", "inject", str(src), "--out", str(src / "copy"), "--lag-ms", "100")
    assert code == 2 and "refusing" in err
    code, _, err = cli("data", "inject", str(src), "--out", str(tmp_path / "c"))
    assert code == 2 and "no fault" in err
