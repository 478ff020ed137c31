"""A dataset written by LeRobot's own writer (video cameras, only a train split; the committed fixture
made by interop/make_fixtures.py) goes through `vla-align data split` and `vla-align pipeline` from
the command line: training, retrieval and trajectory metrics, and the report, with the source
dataset left byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot" / "video_default"
Cli = Callable[..., tuple[int, str, str]]


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def lerobot_video(tmp_path: Path) -> Path:
    pytest.importorskip("av")
    data = tmp_path / "recording"
    shutil.copytree(FIXTURE, data)
    info = json.loads((data / "meta" / "info.json").read_text())
    assert set(info["splits"]) == {"train"}  # as LeRobot leaves every dataset
    assert {f["dtype"] for k, f in info["features"].items() if k.startswith("observation.images")} == {"video"}
    return data


def test_split_then_pipeline_on_a_lerobot_video_dataset(lerobot_video: Path, tmp_path: Path, cli: Cli) -> None:
    before = _digest(lerobot_video)
    code, _, err = cli("data", "split", str(lerobot_video), "--val", "0.25", "--test", "0.25", "--seed", "0")
    assert code == 0, err
    split_file = lerobot_video.parent / "recording.splits.json"
    assert split_file.is_file()
    run = tmp_path / "run"
    cameras = ["observation.images.front", "observation.images.wrist"]
    code, _, err = cli(
        "pipeline", "--preset", "tiny", "--data", str(lerobot_video), "--out", str(run),
        "--train.select.every", "0", "--model.policy.enabled", "true", "--data.cameras", *cameras,
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["retrieval/image_to_text/queries"] >= 1
    assert {"traj/ade", "traj/fde", "traj/dtw"} <= set(metrics)
    assert all(metrics[k] == metrics[k] for k in ("traj/ade", "traj/fde", "traj/dtw"))  # finite, not NaN
    assert "sim/success_rate" not in metrics  # no simulator behind a recording: no closed loop
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["cameras"] == cameras
    assert (run / "report.html").stat().st_size > 10_000
    assert _digest(lerobot_video) == before  # the user's dataset is never modified
