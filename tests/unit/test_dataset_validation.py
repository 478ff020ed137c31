"""Every dataset field read from disk is validated: a damaged dataset raises one DatasetError that names
the file, the field (key / column / episode / frame) and what to do, and the dataset is left untouched.

Each test builds a small valid dataset, damages one field, and checks the message's key words and that
every file under the dataset (and next to it) is byte-identical after the read.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tests.synthetic import write_synthetic

from vla_align.data.episode import ActionSpec, Episode
from vla_align.data.lerobot import read_dataset, read_episodes, read_info, write_dataset
from vla_align.data.normalizer import ActionNormalizer
from vla_align.errors import DatasetError

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
TASKS = "meta/tasks.parquet"
INFO = "meta/info.json"


# ------------------------------------------------------------------------------------------------ helpers


def make(path: Path, continuous: bool = False) -> Path:
    """8 episodes (train 0:4, val 4:6, test 6:8) of 12x12 frames, 4 tasks."""
    return write_synthetic(path, n_train=4, n_val=2, n_test=2, continuous=continuous, size=12)


@pytest.fixture
def discrete(tmp_path: Path) -> Path:
    return make(tmp_path / "ds")


@pytest.fixture
def continuous(tmp_path: Path) -> Path:
    return make(tmp_path / "ds", continuous=True)


def snapshot(root: Path) -> dict[str, Any]:
    """Every file (bytes) and link (target) under ``root``, links not followed."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            key = str(p.relative_to(root))
            out[key] = ("link", os.readlink(p)) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


def refused(root: Path, *words: str, split: str | None = None, read: Callable[..., Any] = read_dataset) -> str:
    """``read(root, split)`` raises one DatasetError whose one-line message holds every word; nothing under
    root's parent changes. Returns the message."""
    before = snapshot(root.parent)
    with pytest.raises(DatasetError) as info:
        read(root, split) if split is not None else read(root)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in {msg!r}"
    assert snapshot(root.parent) == before
    return msg


def edit_info(root: Path, fn: Callable[[dict[str, Any]], object]) -> None:
    file = root / INFO
    obj = json.loads(file.read_text())
    fn(obj)
    file.write_text(json.dumps(obj))


def set_column(file: Path, name: str, values: pa.Array | pa.ChunkedArray) -> None:
    table = pq.read_table(file)
    pq.write_table(table.set_column(table.column_names.index(name), name, values), file)


def column(file: Path, name: str) -> np.ndarray:
    result: np.ndarray = pq.read_table(file)[name].to_numpy()
    return result


def place(root: Path, row: int) -> tuple[int, int]:
    """(episode_index, frame_index) of data row ``row``."""
    return int(column(root / DATA, "episode_index")[row]), int(column(root / DATA, "frame_index")[row])


def set_value(file: Path, name: str, row: int, value: int) -> None:
    values = column(file, name).copy()
    values[row] = value
    set_column(file, name, pa.array(values, pa.int64()))


# ----------------------------------------------------------------------------------------- meta/info.json


@pytest.mark.parametrize(
    ("fps", "shown"),
    [
        ("10", "'10'"),
        (0, "0"),
        (-5, "-5"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (True, "True"),
        (None, "None"),
    ],
)
def test_fps_must_be_a_positive_finite_number(continuous: Path, fps: object, shown: str) -> None:
    edit_info(continuous, lambda o: o.update(fps=fps))
    refused(continuous, "info.json", "'fps'", shown, "positive number")
    refused(continuous, "'fps'", read=read_info)


@pytest.mark.parametrize(
    ("features", "words"),
    [
        (["observation.image", "action"], ("'features'", "list", "expected an object")),
        ({}, ("'features'", "empty")),
        ({"action": "float32"}, ("features['action']", "expected an object")),
    ],
)
def test_features_must_be_an_object_of_objects(discrete: Path, features: object, words: tuple[str, ...]) -> None:
    edit_info(discrete, lambda o: o.update(features=features))
    refused(discrete, "info.json", *words)


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("action", ["a"]),
        ("action", [-3]),
        ("action", [0]),
        ("observation.image", [12, "twelve", 3]),
        ("observation.image", [-12, 12, 3]),
        ("observation.image", "12x12x3"),
        ("observation.image", [12.0, 12, 3]),
    ],
)
def test_shapes_must_be_positive_integers(discrete: Path, key: str, shape: object) -> None:
    edit_info(discrete, lambda o: o["features"][key].update(shape=shape))
    refused(discrete, "info.json", f"features[{key!r}]['shape']", "positive integers")


def test_robot_type_must_be_a_string(discrete: Path) -> None:
    edit_info(discrete, lambda o: o.update(robot_type=42))
    refused(discrete, "info.json", "'robot_type' is 42", "string")


def test_feature_dtype_must_be_a_string(discrete: Path) -> None:
    edit_info(discrete, lambda o: o["features"]["action"].update(dtype=7))
    refused(discrete, "features['action']['dtype']", "string")


@pytest.mark.parametrize(
    ("key", "value"),
    [("total_episodes", "8"), ("total_frames", -1), ("total_tasks", 1.5), ("chunks_size", 0), ("total_episodes", None)],
)
def test_totals_must_be_integers(discrete: Path, key: str, value: object) -> None:
    edit_info(discrete, lambda o: o.update({key: value}))
    refused(discrete, "info.json", repr(key), "integer")


def test_totals_must_match_the_episode_index(discrete: Path) -> None:
    edit_info(discrete, lambda o: o.update(total_frames=o["total_frames"] + 1))
    refused(discrete, "meta/episodes", "total_frames", "frames")


@pytest.mark.parametrize(
    ("splits", "words"),
    [
        ({"train": "a:b", "val": "4:6", "test": "6:8"}, ("splits['train']", "'a:b'", "start:end")),
        ({"train": "0:4", "val": "4:6", "test": "6:80"}, ("splits['test']", "beyond the 8 episodes")),
        ({"train": "0:5", "val": "4:6", "test": "6:8"}, ("'train' (0:5)", "'val' (4:6)", "overlap")),
        ({"train": "4:0"}, ("splits['train']", "start is after its end")),
        ({"train": 4}, ("splits['train']", "start:end")),
        (["0:8"], ("'splits'", "expected an object")),
        ({"train": "-1:4"}, ("splits['train']", "start:end")),
    ],
)
def test_splits_are_checked(discrete: Path, splits: object, words: tuple[str, ...]) -> None:
    edit_info(discrete, lambda o: o.update(splits=splits))
    refused(discrete, "info.json", *words, split="train")
    refused(discrete, *words)  # malformed splits are refused whatever is read


def test_episodes_outside_every_split_are_reported(discrete: Path) -> None:
    edit_info(discrete, lambda o: o.update(splits={"train": "0:4", "val": "4:6"}))
    refused(discrete, "info.json", "2 episode(s) (6, 7)", "in no split", split="train")
    assert read_dataset(discrete).num_episodes == 8  # reading everything drops nothing


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "discrete"},
        {"kind": "banana", "dim": 1},
        {"kind": "continuous", "dim": "2"},
        {"kind": "discrete", "num_actions": 4, "names": "lrud"},
        ["discrete", 4],
    ],
)
def test_action_spec_is_checked(discrete: Path, spec: object) -> None:
    edit_info(discrete, lambda o: o["vla_align"].update(action_spec=spec))
    refused(discrete, "info.json", "vla_align.action_spec")


def test_action_width_must_match_the_spec(continuous: Path) -> None:
    edit_info(continuous, lambda o: o["features"]["action"].update(shape=[3]))
    refused(continuous, "features['action'] has 3 values per frame", "dim 2")


def test_info_json_that_is_too_deep_is_not_a_traceback(discrete: Path) -> None:
    (discrete / INFO).write_text("[" * 100_000)
    refused(discrete, "info.json", "not valid JSON")


# ------------------------------------------------------------------------------ data_path and video_path


@pytest.fixture
def outside(tmp_path: Path, discrete: Path) -> Path:
    """A valid data file outside the dataset (what a hostile data_path would make us read)."""
    target = tmp_path / "outside" / "file-000.parquet"
    target.parent.mkdir()
    shutil.copy(discrete / DATA, target)
    return target


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("../outside/file-{file_index:03d}.parquet", ("no '..'",)),
        ("data/../../outside/file-{file_index:03d}.parquet", ("no '..'",)),
        ("/etc/passwd", ("no absolute path",)),
        ("{0}", ("{0} is not allowed", "{chunk_index}, {file_index}")),
        ("{}", ("{} is not allowed",)),
        ("data/{nosuch}.parquet", ("{nosuch} is not allowed",)),
        ("data/{chunk_index.__class__}.parquet", ("{chunk_index.__class__} is not allowed",)),
        ("data/{chunk_index[0]}.parquet", ("is not allowed",)),
        ("data/{chunk_index!r}.parquet", ("{chunk_index!r} is not allowed",)),
        ("data/{chunk_index:>999999999d}.parquet", ("is not allowed",)),
        ("data/{chunk_index:{file_index}}.parquet", ("is not allowed",)),
        ("data/{video_key}.parquet", ("{video_key} is not allowed",)),
        ("data/{chunk_index", ("not a valid template",)),
        (["data"], ("'data_path' is ['data']",)),
        (None, ("'data_path' is None",)),
        ("", ("must name a file",)),
        ("data/", ("must name a file",)),
    ],
)
def test_data_path_template_is_confined(
    discrete: Path, outside: Path, template: object, words: tuple[str, ...]
) -> None:
    edit_info(discrete, lambda o: o.update(data_path=template))
    refused(discrete, "info.json", "'data_path'", *words)


def test_default_data_path_formats_still_read(discrete: Path) -> None:
    edit_info(discrete, lambda o: o.update(data_path="data/chunk-{chunk_index:03}/file-{file_index:3d}.parquet"))
    refused(discrete, "file-  0.parquet", "missing")  # the format is applied; the file is just not there
    edit_info(discrete, lambda o: o.update(data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"))
    assert read_dataset(discrete).num_episodes == 8


@pytest.mark.parametrize("template", ["{nosuch}/x.mp4", "videos/{video_key:d}.mp4", "../{video_key}.mp4", 3])
def test_video_path_template_is_confined(discrete: Path, template: object) -> None:
    edit_info(discrete, lambda o: o.update(video_path=template))
    refused(discrete, "info.json", "'video_path'")


def test_data_file_symlinked_outside_is_refused(discrete: Path, outside: Path) -> None:
    (discrete / DATA).unlink()
    (discrete / DATA).symlink_to(outside)
    refused(discrete, "file-000.parquet", "outside the dataset folder", str(outside.parent.resolve()))


def test_data_folder_symlinked_outside_is_refused(discrete: Path, outside: Path) -> None:
    shutil.rmtree(discrete / "data" / "chunk-000")
    (discrete / "data" / "chunk-000").symlink_to(outside.parent, target_is_directory=True)
    refused(discrete, "outside the dataset folder")


def test_symlinks_inside_the_dataset_are_fine(discrete: Path) -> None:
    real = discrete / "data" / "real.parquet"
    (discrete / DATA).rename(real)
    (discrete / DATA).symlink_to(Path("..") / "real.parquet")
    assert read_dataset(discrete).num_episodes == 8


def test_symlink_loops_are_reported_as_loops(discrete: Path, tmp_path: Path) -> None:
    (discrete / DATA).unlink()
    (discrete / DATA).symlink_to(discrete / DATA)
    refused(discrete, "file-000.parquet", "symbolic link loop")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    refused(loop, "loop", "symbolic link loop")


def test_info_json_symlinked_outside_is_refused(discrete: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.json"
    shutil.copy(discrete / INFO, foreign)
    (discrete / INFO).unlink()
    (discrete / INFO).symlink_to(foreign)
    refused(discrete, "info.json", "outside the dataset folder", read=read_info)


# ----------------------------------------------------------------------------------------------- images


def png_with_header(width: int, height: int, color: int = 2) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` but whose IDAT holds one tiny row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def replace_image(root: Path, row: int, data: bytes) -> None:
    file = root / DATA
    col = pq.read_table(file)["observation.image"].combine_chunks()
    images = col.field("bytes").to_pylist()
    images[row] = data
    new = pa.StructArray.from_arrays([pa.array(images, pa.binary()), col.field("path")], fields=list(col.type))
    set_column(file, "observation.image", new)


@pytest.mark.parametrize("color", [2, 6], ids=["rgb-fast-path", "rgba-pillow-path"])
def test_png_claiming_a_huge_size_is_refused_before_decoding(discrete: Path, color: int) -> None:
    import resource

    replace_image(discrete, 3, png_with_header(50_000, 50_000, color))
    ep, frame = place(discrete, 3)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    refused(discrete, f"episode {ep}: frame {frame} is (50000, 50000, 3)", "info.json says (12, 12, 3)")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start < 500_000  # no 7.5 GB frame buffer


def test_info_shape_beyond_pillows_pixel_limit_is_refused(discrete: Path) -> None:
    edit_info(discrete, lambda o: o["features"]["observation.image"].update(shape=[50_000, 50_000, 3]))
    refused(discrete, "info.json", "feature 'observation.image'", "MAX_IMAGE_PIXELS")


def test_image_bytes_of_the_wrong_type_are_refused(discrete: Path) -> None:
    file = discrete / DATA
    n = pq.read_metadata(file).num_rows
    images = pa.StructArray.from_arrays(
        [pa.array(["x"] * n, pa.string()), pa.nulls(n, pa.string())], names=["bytes", "path"]
    )
    set_column(file, "observation.image", images)
    refused(discrete, "column 'observation.image'", "struct<bytes: binary")


# ------------------------------------------------------------------------------------- discrete actions


@pytest.mark.parametrize(("value", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"), (1.5, "1.5")])
def test_discrete_action_that_is_not_an_integer_id_is_refused(discrete: Path, value: float, shown: str) -> None:
    file = discrete / DATA
    actions = column(file, "action").astype(np.float64)
    actions[5] = value
    set_column(file, "action", pa.array(actions))
    ep, frame = place(discrete, 5)
    refused(discrete, "file-000.parquet", f"episode {ep} frame {frame}", f"action is {shown}", "integer id")


@pytest.mark.parametrize("value", [-1, 4, 1_000_000])
def test_discrete_action_id_outside_the_spec_is_refused(discrete: Path, value: int) -> None:
    set_value(discrete / DATA, "action", 5, value)
    ep, frame = place(discrete, 5)
    refused(discrete, f"episode {ep} frame {frame}", f"action id {value} is outside [0, 4)", "action_spec")


def test_negative_id_in_a_lerobot_dataset_is_refused(discrete: Path) -> None:
    edit_info(discrete, lambda o: (o.pop("vla_align"), o["features"]["action"].pop("info")))  # no spec anywhere
    set_value(discrete / DATA, "action", 2, -3)
    refused(discrete, "action id -3 is outside >= 0")


def test_discrete_action_with_several_values_per_frame_is_refused(discrete: Path) -> None:
    file = discrete / DATA
    n = pq.read_metadata(file).num_rows
    set_column(file, "action", pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(2 * n, np.int64)), 2))
    refused(discrete, "column 'action' holds 2 values per frame", "discrete")


def test_action_column_of_strings_is_refused(discrete: Path) -> None:
    file = discrete / DATA
    n = pq.read_metadata(file).num_rows
    set_column(file, "action", pa.array(["left"] * n))
    refused(discrete, "column 'action'", "expected numbers")


def test_null_action_is_refused(discrete: Path) -> None:
    file = discrete / DATA
    actions = column(file, "action").tolist()
    actions[4] = None
    set_column(file, "action", pa.array(actions, pa.int64()))
    refused(discrete, "column 'action'", "null", "row 4")


# ---------------------------------------------------------------------------- continuous actions, state


def set_vector(file: Path, name: str, row: int, dim: int, value: float, dtype: Any = np.float32) -> None:
    values = np.stack(list(column(file, name))).astype(dtype)
    values[row, dim] = value
    pa_type = pa.float64() if dtype == np.float64 else pa.float32()
    set_column(file, name, pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa_type), values.shape[1]))


@pytest.mark.parametrize("key", ["action", "observation.state"])
@pytest.mark.parametrize(("value", "why"), [(np.nan, "not finite"), (-np.inf, "not finite"), (3e38, "beyond")])
def test_bad_real_values_are_refused_with_their_column(continuous: Path, key: str, value: float, why: str) -> None:
    set_vector(continuous / DATA, key, 6, 1, value)
    ep, frame = place(continuous, 6)
    msg = refused(continuous, f"episode {ep} frame {frame}", f"{key!r} dimension 1", why)
    if key == "observation.state":
        assert "'action'" not in msg


def test_float64_value_that_overflows_float32_is_refused(continuous: Path) -> None:
    set_vector(continuous / DATA, "action", 2, 0, 1e300, dtype=np.float64)
    refused(continuous, "'action' dimension 0 is 1e+300", "beyond")


def test_large_but_safe_values_still_read(continuous: Path) -> None:
    set_vector(continuous / DATA, "action", 2, 0, 1e18)
    assert read_dataset(continuous).actions[2, 0] == np.float32(1e18)


def test_state_width_must_match_info(continuous: Path) -> None:
    edit_info(continuous, lambda o: o["features"]["observation.state"].update(shape=[4]))
    refused(continuous, "column 'observation.state' holds 3 values per frame", "says 4")


def test_ragged_list_column_is_refused(continuous: Path) -> None:
    file = continuous / DATA
    rows = [list(map(float, r)) for r in column(file, "observation.state")]
    rows[3] = rows[3][:2]
    set_column(file, "observation.state", pa.array(rows, pa.list_(pa.float32())))
    refused(continuous, "column 'observation.state'", "2 values in row 3", "3 in row 0")


# ----------------------------------------------------------------------------------------------- episodes


def test_task_index_out_of_range_is_reported_as_such(discrete: Path) -> None:
    file = discrete / DATA
    row = int(np.nonzero(column(file, "episode_index") == 2)[0][0])
    set_value(file, "task_index", row, 99)
    msg = refused(discrete, "episode 2 has task_index 99", "meta/tasks.parquet has 4 tasks")
    assert "instruction is empty" not in msg
    refused(discrete, "task_index 99", read=read_episodes)


@pytest.mark.parametrize(
    ("ids", "texts", "words"),
    [
        ([0, 1, 1, 3], None, ("task_index 1 appears twice",)),
        ([0, 1, 2, 7], None, ("task_index 7 is outside 0..3",)),
        (None, ["a", "", "c", "d"], ("task 1 is ''", "non-empty")),
        (None, ["a", None, "c", "d"], ("task 1 is None",)),
    ],
)
def test_tasks_table_is_checked(
    discrete: Path, ids: list[int] | None, texts: list[str | None] | None, words: tuple[str, ...]
) -> None:
    file = discrete / TASKS
    if ids is not None:
        set_column(file, "task_index", pa.array(ids, pa.int64()))
    if texts is not None:
        set_column(file, "task", pa.array(texts, pa.string()))
    refused(discrete, "tasks.parquet", *words)


def test_task_text_must_be_strings(discrete: Path) -> None:
    set_column(discrete / TASKS, "task", pa.array([1, 2, 3, 4], pa.int64()))
    refused(discrete, "tasks.parquet", "column 'task' holds int64", "strings")


def test_duplicated_episode_rows_are_refused(discrete: Path) -> None:
    file = discrete / EPISODES
    table = pq.read_table(file)
    pq.write_table(pa.concat_tables([table, table.slice(3, 1)]), file)
    refused(discrete, "meta/episodes", "episode 3 is duplicated, listed 2 times")


def test_duplicated_episode_rows_across_files_are_refused(discrete: Path) -> None:
    table = pq.read_table(discrete / EPISODES)
    pq.write_table(table.slice(3, 1), discrete / "meta/episodes/chunk-000/file-001.parquet")
    refused(discrete, "episode 3 is duplicated, listed 2 times")


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [("length", 0, ">= 1"), ("length", -4, ">= 1"), ("episode_index", -1, ">= 0"), ("data/file_index", -1, ">= 0")],
)
def test_episode_index_values_are_checked(discrete: Path, name: str, value: int, words: str) -> None:
    set_value(discrete / EPISODES, name, 2, value)
    refused(discrete, "file-000.parquet", f"column {name!r} is {value} in row 2", words)


def test_episode_index_types_are_checked(discrete: Path) -> None:
    file = discrete / EPISODES
    set_column(file, "length", pa.array(column(file, "length").astype(np.float64)))
    refused(discrete, "column 'length' holds double", "expected integers")
    lengths = column(file, "length").astype(np.int64).tolist()
    lengths[1] = None
    set_column(file, "length", pa.array(lengths, pa.int64()))
    refused(discrete, "column 'length' is empty (null) in row 1")


def test_episode_length_must_match_the_data_rows(discrete: Path) -> None:
    file = discrete / EPISODES
    lengths = column(file, "length")
    set_value(file, "length", 4, int(lengths[4]) - 1)
    refused(discrete, "data", "episode 4 has", f"frames, meta/episodes says {lengths[4] - 1}")


def test_index_span_must_match_the_length(discrete: Path) -> None:
    file = discrete / EPISODES
    set_value(file, "dataset_to_index", 5, int(column(file, "dataset_to_index")[5]) + 2)
    refused(discrete, "meta/episodes", "episode 5", "dataset_to_index - dataset_from_index")


def test_frame_index_must_number_the_frames(discrete: Path) -> None:
    file = discrete / DATA
    first = int(np.nonzero(column(file, "episode_index") == 1)[0][0])
    set_value(file, "frame_index", first + 1, 0)
    refused(discrete, "episode 1 has frame_index", "0..n-1")


def test_meta_seed_and_success_are_checked(discrete: Path) -> None:
    file = discrete / "meta/vla_align/episodes.parquet"  # our per-episode fields, beside meta/episodes
    seeds = column(file, "seed").tolist()
    seeds[0] = None
    set_column(file, "seed", pa.array(seeds, pa.int64()))
    refused(discrete, "column 'seed' is empty (null) in row 0")


# ------------------------------------------------------------------------------------ writer, normaliser


def test_writer_refuses_what_the_reader_refuses(tmp_path: Path) -> None:
    spec = ActionSpec(kind="continuous", dim=2)
    ep = Episode(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((3, 2), np.float32), "go", "T", 10.0, 0, True)
    bad = Episode(ep.frames, np.array([[0, 0], [np.nan, 0], [0, 0]], np.float32), "go", "T", 10.0, 0, True)
    with pytest.raises(DatasetError, match=r"actions\[1, 0\] is nan"):
        write_dataset(tmp_path / "a", [bad], action_spec=spec, fps=10.0, splits={})
    huge = Episode(ep.frames, ep.actions, "go", "T", 10.0, 0, True, state=np.full((3, 1), 3e38, np.float32))
    with pytest.raises(DatasetError, match=r"state\[0, 0\] is 3e\+38"):
        write_dataset(tmp_path / "b", [huge], action_spec=spec, fps=10.0, splits={})
    for fps in (0.0, float("nan"), -1.0):
        with pytest.raises(DatasetError, match="fps must be a positive"):
            write_dataset(tmp_path / "c", [ep], action_spec=spec, fps=fps, splits={})
    with pytest.raises(DatasetError, match="fps must be a positive finite"):
        Episode(ep.frames, ep.actions, "go", "T", float("nan"), 0, True)
    assert list(tmp_path.iterdir()) == []


def test_normalizer_refuses_values_whose_statistics_overflow() -> None:
    x = np.zeros((10, 2))
    x[7, 1] = 3e38
    with pytest.raises(DatasetError, match=r"observation.state row 7 dimension 1 is 3e\+38, beyond"):
        ActionNormalizer.fit(x, what="observation.state")
    x[7, 1] = np.nan
    with pytest.raises(DatasetError, match="actions row 7 dimension 1 is nan"):
        ActionNormalizer.fit(x)


def test_normalizer_fits_in_float64() -> None:
    x = np.array([[1.5e19], [-1.5e19]], np.float32)  # float32 squares sum to inf; float64 does not
    norm = ActionNormalizer.fit(torch.from_numpy(x))
    assert torch.isfinite(norm.std).all() and float(norm.std[0]) == pytest.approx(1.5e19, rel=1e-6)
    assert torch.isfinite(norm.normalize(torch.from_numpy(x))).all()


def test_normalizer_stats_that_overflow_float32_are_refused() -> None:
    norm = ActionNormalizer(1)
    with pytest.raises(DatasetError, match=r"stats\['max'\].*overflows torch.float32"):
        norm.set_stats({"max": [1e300]})
    assert float(norm.max[0]) == 1.0
    with pytest.raises(DatasetError, match=r"stats\['action'\]\['mean'\] is 'abc'"):
        ActionNormalizer.from_stats({"action": {"mean": "abc", "std": [1], "min": [0], "max": [1]}})


# ----------------------------------------------------------------------------------- valid data still reads


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_valid_datasets_read_as_written(tmp_path: Path, kind: str) -> None:
    from tests.synthetic import episode

    path = make(tmp_path / "ds", continuous=kind == "continuous")
    for split, ids in (("train", range(0, 4)), ("val", range(4, 6)), ("test", range(6, 8))):
        for got, i in zip(read_episodes(path, split), ids, strict=True):
            want = episode(i, 12, kind == "continuous")
            assert got.frames.tobytes() == want.frames.tobytes()
            assert got.actions.tobytes() == want.actions.tobytes() and got.instruction == want.instruction
            assert (got.state is None) == (want.state is None)
            if want.state is not None and got.state is not None:
                assert got.state.tobytes() == want.state.tobytes()
