"""LeRobot v3.0 datasets whose cameras are mp4 video (as LeRobot's writer stores them) read into a FrameTable:
frames at each row's timestamp, camera choice and tiling, resizing, state / action with their names, and a
one-line DatasetError for each way such a dataset can be unusable."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from tests.lerobot_video import av, make_dataset, pattern, write_mp4

from vla_align.data.lerobot import read_dataset
from vla_align.errors import DatasetError

TOP, WRIST = "observation.images.top", "observation.images.wrist"
LENGTHS = [6, 9, 5]


def edit_info(root: Path, change: Callable[[dict[str, Any]], object]) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


@pytest.fixture
def two_cams(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    frames = make_dataset(tmp_path / "ds", LENGTHS, {TOP: (24, 32), WRIST: (24, 32)})
    return tmp_path / "ds", frames


def test_two_video_cameras_tile_side_by_side_exactly(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, frames = two_cams
    t = read_dataset(root, split="train", cameras=(WRIST, TOP))
    assert t.cameras == (WRIST, TOP) and t.frames.shape == (20, 24, 64, 3)
    assert np.array_equal(t.frames[:, :, :32], frames[WRIST]) and np.array_equal(t.frames[:, :, 32:], frames[TOP])
    assert t.fps == 10 and t.episode_length.tolist() == LENGTHS
    assert t.instructions == ["pick the red cube", "open the drawer", "pick the red cube"]
    assert t.state is not None and t.state.dtype == np.float32 and t.state[:, 0].tolist() == list(range(20))
    assert t.action_spec.kind == "continuous" and t.action_spec.names == ["a", "b", "c"]
    assert t.actions.shape == (20, 3)


def test_default_reads_the_first_camera_and_warns_about_the_others(
    two_cams: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, frames = two_cams
    with pytest.warns(UserWarning, match=r"reading camera 'observation.images.top' only, not 'observation.images.wr"):
        t = read_dataset(root)
    assert t.cameras == (TOP,) and np.array_equal(t.frames, frames[TOP])


def test_only_camera_reads_without_warning(tmp_path: Path) -> None:
    frames = make_dataset(tmp_path / "ds", LENGTHS, {TOP: (24, 32)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = read_dataset(tmp_path / "ds", max_episodes=2)
    assert np.array_equal(t.frames, frames[TOP][:15])


def test_image_size_box_resamples_every_camera(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, frames = two_cams
    t = read_dataset(root, cameras=(TOP, WRIST), image_size=16)
    assert t.frames.shape == (20, 16, 32, 3)
    box = [np.asarray(Image.fromarray(f).resize((16, 16), Image.Resampling.BOX)) for f in frames[WRIST]]
    assert np.array_equal(t.frames[:, :, 16:], np.stack(box))


def test_av1_dataset_reads_within_a_psnr_bound(tmp_path: Path) -> None:
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("PyAV's FFmpeg has no AV1 encoder (libsvtav1) to make the fixture")
    frames = make_dataset(tmp_path / "ds", LENGTHS, {TOP: (64, 64)}, codec="av1")
    t = read_dataset(tmp_path / "ds")
    mse = np.mean((t.frames.astype(np.float64) - frames[TOP]) ** 2, axis=(1, 2, 3))
    assert (10 * np.log10(255**2 / np.maximum(mse, 1e-9)) > 30).all()


def test_discrete_vocabulary_from_action_names(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds", LENGTHS, {TOP: (24, 32)}, discrete=True)
    t = read_dataset(tmp_path / "ds")
    assert t.action_spec.kind == "discrete" and t.action_spec.num_actions == 3
    assert t.action_spec.names == ["left", "right", "forward"] and t.actions.dtype == np.int64


def test_missing_camera_lists_the_available_ones(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    with pytest.raises(
        DatasetError, match=r"camera 'observation.images.front' is not in the dataset \(has: observation.images.top, "
    ):
        read_dataset(two_cams[0], cameras=("observation.images.front",))


def test_v21_dataset_names_lerobots_converter(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    edit_info(two_cams[0], lambda i: i.update(codebase_version="v2.1"))
    with pytest.raises(
        DatasetError, match=r"codebase_version is 'v2.1'.*python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo"
    ):
        read_dataset(two_cams[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f["info"].update({"video.is_depth_map": True}), r"camera 'observation.images.wrist' is a depth map"),
        (lambda f: f.update(shape=[24, 32, 4]), r"has shape \[24, 32, 4\]; only colour cameras"),
        (lambda f: f["info"].update({"video.channels": 1}), r"has shape \[24, 32, 3\] and video.channels 1; only"),
        (lambda f: f.update(shape=[24, 32, 1]), r"has shape \[24, 32, 1\].*not depth, grey or RGBA"),
        (lambda f: f.update(shape=[24, 32]), r"has shape \[24, 32\]"),
        (lambda f: f.update(shape=[24, 40, 3]), r"cameras 'observation.images.top' \(24x32\) and 'observation.im"),
    ],
)
def test_unusable_camera_is_one_line(
    two_cams: tuple[Path, dict[str, np.ndarray]], change: Callable[[dict[str, Any]], object], message: str
) -> None:
    edit_info(two_cams[0], lambda i: change(i["features"][WRIST]))
    with pytest.raises(DatasetError, match=message) as e:
        read_dataset(two_cams[0], cameras=(TOP, WRIST))
    assert "\n" not in str(e.value)


def test_mixed_sizes_read_once_resized(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    root = two_cams[0]
    write_mp4(root / f"videos/{WRIST}/chunk-000/file-000.mp4", pattern(20, 48, 40), 10)
    edit_info(root, lambda i: i["features"][WRIST].update(shape=[48, 40, 3]))
    assert read_dataset(root, cameras=(TOP, WRIST), image_size=28).frames.shape == (20, 28, 56, 3)


def test_video_shorter_than_its_timestamps(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    root = two_cams[0]
    write_mp4(root / f"videos/{TOP}/chunk-000/file-000.mp4", pattern(17, 24, 32), 10)  # 20 frames in the parquet
    with pytest.raises(
        DatasetError, match=r"file-000.mp4: episode 2, camera 'observation.images.top': no frame at timestamp 1.7000 s"
    ):
        read_dataset(root, cameras=(TOP, WRIST))


def test_truncated_mp4(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    file = two_cams[0] / f"videos/{WRIST}/chunk-000/file-000.mp4"
    file.write_bytes(file.read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"observation.images.wrist/chunk-000/file-000.mp4: ") as e:
        read_dataset(two_cams[0], cameras=(WRIST,))
    assert "\n" not in str(e.value)


def test_missing_video_file_and_columns(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    root = two_cams[0]
    episodes = root / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(episodes).drop_columns([f"videos/{TOP}/from_timestamp"]), episodes)
    with pytest.raises(DatasetError, match=r"column 'videos/observation.images.top/from_timestamp' missing"):
        read_dataset(root, cameras=(TOP,))
    (root / f"videos/{WRIST}/chunk-000/file-000.mp4").unlink()
    with pytest.raises(DatasetError, match=r"file-000.mp4: missing \(meta/episodes puts episode 0 of camera 'obs"):
        read_dataset(root, cameras=(WRIST,))


def test_dataset_is_not_modified(two_cams: tuple[Path, dict[str, np.ndarray]]) -> None:
    root = two_cams[0]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    read_dataset(root, cameras=(TOP, WRIST), image_size=16)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


@pytest.mark.filterwarnings("ignore:.*reading camera")  # two cameras, the default reads one
def test_cli_train_on_a_damaged_video_dataset_is_one_line(
    two_cams: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    root = two_cams[0]
    file = root / f"videos/{TOP}/chunk-000/file-000.mp4"
    file.write_bytes(file.read_bytes()[:300])
    code, _, err = cli("train", "--preset", "tiny", "--data", str(root), "--out", str(tmp_path / "run"))
    assert code == 2 and "observation.images.top/chunk-000/file-000.mp4: " in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_data_cameras_config_field() -> None:
    from vla_align.errors import ConfigError
    from vla_align.sim.base import DataConfig

    assert DataConfig().cameras == () and DataConfig(cameras=(TOP, WRIST)).cameras == (TOP, WRIST)
    with pytest.raises(ConfigError, match=r"data.cameras .* must name each camera once"):
        DataConfig(cameras=(TOP, TOP))


@pytest.mark.parametrize("value", [float("nan"), -1.0])
def test_bad_timestamp_is_one_line(two_cams: tuple[Path, dict[str, np.ndarray]], value: float) -> None:
    file = two_cams[0] / "data/chunk-000/file-000.parquet"
    table = pq.read_table(file)
    stamps = table["timestamp"].to_numpy().copy()
    stamps[8] = value  # episode 1, frame 2
    pq.write_table(table.set_column(table.column_names.index("timestamp"), "timestamp", pa.array(stamps)), file)
    with pytest.raises(DatasetError, match=r"file-000.parquet: episode 1 frame 2: 'timestamp' is (nan|-1.0); it must"):
        read_dataset(two_cams[0], cameras=(TOP,))
