"""LeRobotDataset v3.0 writer/reader: round trip, on-disk layout, atomicity and error messages."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from vla_align.data.episode import ActionSpec, Episode
from vla_align.data.lerobot import read_dataset, read_episodes, read_info, write_dataset
from vla_align.errors import DatasetError

DISCRETE = ActionSpec(kind="discrete", num_actions=5, names=["a", "b", "c", "d", "e"])
CONTINUOUS = ActionSpec(kind="continuous", dim=3, names=["x", "y", "z"])
INSTRUCTIONS = ["pick the cube", "open the drawer", "push the red button"]
SPLITS = {"train": (0, 6), "val": (6, 8), "test": (8, 10)}


def make_episode(i: int, continuous: bool, size: int = 16) -> Episode:
    rng = np.random.default_rng(i)
    n = int(rng.integers(2, 9))
    return Episode(
        frames=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8),
        actions=rng.normal(size=(n, 3)).astype(np.float32) if continuous else rng.integers(0, 5, size=n),
        instruction=INSTRUCTIONS[i % 3 if i < 6 else (i + 1) % 3],
        task=f"Toy-{i % 2}-v0",
        fps=5.0,
        seed=1000 + i,
        success=i % 4 != 3,
        state=rng.normal(size=(n, 4)).astype(np.float32) if continuous else None,
    )


def episodes(continuous: bool, n: int = 10) -> list[Episode]:
    return [make_episode(i, continuous) for i in range(n)]


def write(path: Path, continuous: bool = False, **kw: object) -> Path:
    eps = episodes(continuous)
    kw.setdefault("splits", SPLITS)
    return write_dataset(
        path,
        iter(eps),
        action_spec=CONTINUOUS if continuous else DISCRETE,
        fps=5.0,
        extra={"source": "toy"},
        total_episodes=len(eps),
        **kw,
    )  # type: ignore[arg-type]


@pytest.fixture(params=[False, True], ids=["discrete", "continuous"])
def continuous(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write(tmp_path / "ds", continuous=True)


def assert_same(got: Episode, want: Episode) -> None:
    assert got.frames.tobytes() == want.frames.tobytes()
    np.testing.assert_array_equal(got.actions, want.actions)
    assert got.actions.dtype == (np.float32 if want.actions.ndim == 2 else np.int64)
    assert (got.instruction, got.task, got.seed, got.success) == (want.instruction, want.task, want.seed, want.success)
    if want.state is None:
        assert got.state is None
    else:
        assert got.state is not None
        np.testing.assert_array_equal(got.state, want.state)


# ----------------------------------------------------------------------------------------------- round trip


def test_round_trip_is_identical(tmp_path: Path, continuous: bool) -> None:
    path = write(tmp_path / "ds", continuous)
    want = episodes(continuous)
    got = read_episodes(path)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    for split, (start, end) in SPLITS.items():
        table = read_dataset(path, split=split)
        assert table.episode_ids.tolist() == list(range(start, end))
        for g, w in zip(read_episodes(path, split), want[start:end], strict=True):
            assert_same(g, w)
        assert table.fps == 5.0 and table.image_shape == (16, 16, 3)
        assert table.action_spec == (CONTINUOUS if continuous else DISCRETE)
        assert table.episode_start.tolist() == np.concatenate([[0], np.cumsum(table.episode_length)[:-1]]).tolist()
        assert [table.tasks[t] for t in table.task_index] == table.instructions


def test_max_episodes_takes_the_first_of_the_split(tmp_path: Path) -> None:
    table = read_dataset(write(tmp_path / "ds"), split="train", max_episodes=2)
    assert table.episode_ids.tolist() == [0, 1]
    assert table.num_frames == sum(len(e) for e in episodes(False)[:2])


def test_small_file_limit_rolls_files_without_splitting_episodes(tmp_path: Path, continuous: bool) -> None:
    path = write(tmp_path / "ds", continuous, data_file_size_mb=0.002)  # ~2 kB: every episode or two
    files = sorted((path / "data").glob("chunk-*/file-*.parquet"))
    assert len(files) > 2
    meta = pq.read_table(path / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for row in meta:
        file = path / f"data/chunk-{row['data/chunk_index']:03d}/file-{row['data/file_index']:03d}.parquet"
        ep = pq.read_table(file, columns=["episode_index"])["episode_index"].to_numpy()
        assert (ep == row["episode_index"]).sum() == row["length"]
    for g, w in zip(read_episodes(path), episodes(continuous), strict=True):
        assert_same(g, w)


# --------------------------------------------------------------------------------------------------- layout


def test_layout_matches_lerobot_v3(tmp_path: Path) -> None:
    path = write(tmp_path / "ds", continuous=True)
    eps = episodes(True)
    info = read_info(path)
    for key in (
        "codebase_version",
        "fps",
        "robot_type",
        "features",
        "total_episodes",
        "total_frames",
        "total_tasks",
        "chunks_size",
        "data_files_size_in_mb",
        "video_files_size_in_mb",
        "data_path",
        "video_path",
        "splits",
    ):
        assert key in info, key
    assert info["codebase_version"] == "v3.0" and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["splits"] == {"train": "0:6", "val": "6:8", "test": "8:10"}
    assert info["total_episodes"] == 10 and info["total_frames"] == sum(map(len, eps))
    feats = info["features"]
    assert feats["observation.image"] == {
        "dtype": "image",
        "shape": [16, 16, 3],
        "names": ["height", "width", "channels"],
    }
    assert feats["action"] == {
        "dtype": "float32",
        "shape": [3],
        "names": ["x", "y", "z"],
        "info": {"vla_align.action_spec": CONTINUOUS.to_dict()},  # kept by LeRobot's tools, unlike "vla_align"
    }
    assert feats["observation.state"]["shape"] == [4]
    for key in ("frame_index", "episode_index", "index", "task_index"):
        assert feats[key]["dtype"] == "int64" and feats[key]["shape"] == [1]
    assert info["vla_align"] == {"action_spec": CONTINUOUS.to_dict(), "source": "toy"}

    # Episode index: contiguous ranges that match the data rows.
    meta = pq.read_table(path / "meta/episodes/chunk-000/file-000.parquet")
    data = pq.read_table(path / "data/chunk-000/file-000.parquet")
    assert data["observation.image"].type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert pa.types.is_fixed_size_list(data["action"].type)
    rows = meta.to_pylist()
    assert [r["episode_index"] for r in rows] == list(range(10))
    assert rows[0]["dataset_from_index"] == 0 and rows[-1]["dataset_to_index"] == data.num_rows
    for prev, row in itertools.pairwise(rows):
        assert row["dataset_from_index"] == prev["dataset_to_index"]
    index = data["index"].to_numpy()
    assert index.tolist() == list(range(data.num_rows))
    extras = pq.read_table(path / "meta/vla_align/episodes.parquet").to_pylist()  # ours, beside LeRobot's files
    for row, extra, ep in zip(rows, extras, eps, strict=True):
        sel = data["episode_index"].to_numpy() == row["episode_index"]
        assert index[sel].tolist() == list(range(row["dataset_from_index"], row["dataset_to_index"]))
        assert row["length"] == len(ep) and row["tasks"] == [ep.instruction]
        want = {"episode_index": row["episode_index"], "seed": ep.seed, "success": ep.success, "env_task": ep.task}
        assert extra == want
        assert data["frame_index"].to_numpy()[sel].tolist() == list(range(len(ep)))
        np.testing.assert_allclose(data["timestamp"].to_numpy()[sel], np.arange(len(ep)) / 5.0, rtol=1e-6)

    # Tasks: distinct strings in first-seen order, consistent with every frame's task_index.
    tasks = pq.read_table(path / "meta/tasks.parquet").to_pylist()
    texts = [t["task"] for t in tasks]
    assert texts == list(dict.fromkeys(e.instruction for e in eps)) and len(set(texts)) == len(texts)
    assert [t["task_index"] for t in tasks] == list(range(len(tasks))) and info["total_tasks"] == len(tasks)
    frame_task = data["task_index"].to_numpy()
    want = np.concatenate([[texts.index(e.instruction)] * len(e) for e in eps])
    np.testing.assert_array_equal(frame_task, want)

    # Stats: mean/std/min/max/count per numeric feature, images per channel in [0, 1] as (3, 1, 1).
    stats = json.loads((path / "meta/stats.json").read_text())
    actions = np.concatenate([e.actions for e in eps])
    for key in (
        "action",
        "observation.state",
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
        "observation.image",
    ):
        assert {"mean", "std", "min", "max", "count"} <= set(stats[key]), key
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["action"]["min"], actions.min(0))
    assert stats["action"]["count"] == [len(actions)]
    frames = np.concatenate([e.frames for e in eps]).reshape(-1, 3) / 255.0
    img = stats["observation.image"]
    assert np.asarray(img["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.asarray(img["mean"]).ravel(), frames.mean(0), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(img["std"]).ravel(), frames.std(0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(img["max"]).ravel(), frames.max(0))


# ------------------------------------------------------------------------------------- atomicity, overwrite


def exploding(eps: list[Episode], at: int) -> Iterator[Episode]:
    for i, ep in enumerate(eps):
        if i == at:
            raise RuntimeError("killed midway")
        yield ep


def test_failure_midway_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="midway"):
        write_dataset(path, exploding(episodes(False), 5), action_spec=DISCRETE, fps=5.0, splits=SPLITS)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_keeps_existing_dataset(tmp_path: Path) -> None:
    path = write(tmp_path / "ds")
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="midway"):
        write_dataset(
            path, exploding(episodes(True), 5), action_spec=CONTINUOUS, fps=5.0, splits=SPLITS, overwrite=True
        )
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_overwrite_semantics(tmp_path: Path) -> None:
    path = write(tmp_path / "ds")
    with pytest.raises(DatasetError, match="already exists; pass --overwrite"):
        write(path, continuous=True)
    assert read_dataset(path).action_spec.kind == "discrete"
    write(path, continuous=True, overwrite=True)
    assert read_dataset(path).action_spec.kind == "continuous"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_writer_rejects_bad_episodes(tmp_path: Path) -> None:
    eps = episodes(False, 3)
    eps[2] = make_episode(2, False, size=8)
    with pytest.raises(DatasetError, match=r"episode 2 .*frames are \(8, 8, 3\)"):
        write_dataset(tmp_path / "a", eps, action_spec=DISCRETE, fps=5.0, splits={})
    bad = make_episode(0, False)
    bad.actions = np.full(len(bad), 7)
    with pytest.raises(DatasetError, match=r"action ids must be in \[0, 5\)"):
        write_dataset(tmp_path / "b", [bad], action_spec=DISCRETE, fps=5.0, splits={})
    with pytest.raises(DatasetError, match="no episodes"):
        write_dataset(tmp_path / "c", [], action_spec=DISCRETE, fps=5.0, splits={})
    with pytest.raises(DatasetError, match="split 'test' = 8:12"):
        write_dataset(tmp_path / "d", episodes(False), action_spec=DISCRETE, fps=5.0, splits={"test": (8, 12)})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------- errors


def edit_json(file: Path, fn: object) -> None:
    obj = json.loads(file.read_text())
    fn(obj)  # type: ignore[operator]
    file.write_text(json.dumps(obj))


def test_missing_dataset_and_info(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope: does not exist; generate one with `vla-align data babyai"):
        read_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: not a vla-align/LeRobot dataset \(meta/info.json missing\)"):
        read_dataset(tmp_path / "empty")


def test_wrong_version(dataset: Path) -> None:
    edit_json(dataset / "meta/info.json", lambda o: o.update(codebase_version="v2.1"))
    with pytest.raises(DatasetError, match=r"meta/info.json: codebase_version is 'v2.1', only 'v3.0'"):
        read_dataset(dataset)


def test_corrupt_parquet_names_the_file(dataset: Path) -> None:
    file = dataset / "data/chunk-000/file-000.parquet"
    file.write_bytes(b"not a parquet file at all")
    with pytest.raises(DatasetError, match=r"file-000.parquet: cannot be read as parquet .*regenerate"):
        read_dataset(dataset)


def test_missing_data_file(dataset: Path) -> None:
    (dataset / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(DatasetError, match=r"file-000.parquet: missing \(meta/episodes puts episode 0 there\)"):
        read_dataset(dataset)


def test_unknown_split(dataset: Path) -> None:
    with pytest.raises(DatasetError, match=r"split 'foo' not in .*ds \(has: train, val, test\)"):
        read_dataset(dataset, split="foo")


def test_missing_column(dataset: Path) -> None:
    file = dataset / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(file).drop_columns(["action"]), file)
    with pytest.raises(DatasetError, match=r"file-000.parquet: column 'action' missing"):
        read_dataset(dataset)


def test_frame_count_mismatch_names_the_episode(dataset: Path) -> None:
    file = dataset / "meta/episodes/chunk-000/file-000.parquet"
    meta = pq.read_table(file)
    length = pc.if_else(pc.equal(meta["episode_index"], 3), pc.add(meta["length"], 1), meta["length"])
    pq.write_table(meta.set_column(meta.column_names.index("length"), "length", length), file)
    with pytest.raises(DatasetError, match=r"episode 3 has \d+ frames, meta/episodes says \d+"):
        read_dataset(dataset)


def test_image_shape_mismatch_names_the_episode(dataset: Path) -> None:
    edit_json(dataset / "meta/info.json", lambda o: o["features"]["observation.image"].update(shape=[20, 20, 3]))
    with pytest.raises(DatasetError, match=r"episode 0: frame 0 is \(16, 16, 3\), info.json says \(20, 20, 3\)"):
        read_dataset(dataset)


def test_video_dataset_is_refused_clearly(dataset: Path) -> None:
    edit_json(dataset / "meta/info.json", lambda o: o["features"]["observation.image"].update(dtype="video"))
    with pytest.raises(
        DatasetError,
        match=r"info.json: camera 'observation.image' is stored as mp4 video but 'video_path' is None; set it",
    ):
        read_dataset(dataset)


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_dataset_written_by_lerobot_itself_reads(tmp_path: Path, kind: str) -> None:
    path = write(tmp_path / "ds", continuous=kind == "continuous")
    edit_json(path / "meta/info.json", lambda o: (o.pop("vla_align"), o["features"]["action"].pop("info")))
    (path / "meta/vla_align/episodes.parquet").unlink()  # LeRobot knows nothing of ours
    table = read_dataset(path, split="val")
    assert table.num_episodes == 2
    assert table.seeds.tolist() == [-1, -1] and table.success.all() and table.env_tasks == ["", ""]
    assert table.action_spec.kind == kind
    if kind == "continuous":
        assert table.action_spec.dim == 3 and table.action_spec.names == ["x", "y", "z"]
        assert table.actions.dtype == np.float32 and table.actions.shape[1] == 3
    else:
        assert table.actions.dtype == np.int64 and table.action_spec.num_actions >= 2
    assert table.info["vla_align"]["action_spec"] == table.action_spec.to_dict()


def test_other_png_flavours_decode_through_pillow(dataset: Path) -> None:
    """RGBA PNGs (not what we write) take the general Pillow path and give the same pixels."""
    import io

    from PIL import Image

    file = dataset / "data/chunk-000/file-000.parquet"
    table = pq.read_table(file)
    col = table["observation.image"].combine_chunks()
    recoded = []
    for i, png in enumerate(col.field("bytes").to_pylist()):
        im = Image.open(io.BytesIO(png))
        buf = io.BytesIO()
        (im.convert("RGBA") if i % 2 else im).save(buf, format="PNG", compress_level=9)
        recoded.append(buf.getvalue())
    struct = pa.StructArray.from_arrays([pa.array(recoded, pa.binary()), col.field("path")], fields=list(col.type))
    pq.write_table(table.set_column(table.column_names.index("observation.image"), "observation.image", struct), file)
    for g, w in zip(read_episodes(dataset), episodes(True), strict=True):
        assert g.frames.tobytes() == w.frames.tobytes()
