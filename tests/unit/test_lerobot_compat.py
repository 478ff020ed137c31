"""What LeRobot reads: meta/tasks.parquet as pandas writes it, per-episode ``stats/<feature>/<stat>``
columns, quantiles in stats.json, our extra episode fields in a side file, the action spec in ``features``.

The expected layouts are those of LeRobot 0.6.1 (``write_tasks``: ``DataFrame.to_parquet`` of a frame
indexed by task; ``compute_episode_stats`` + ``flatten_dict``; ``aggregate_stats``), checked with pandas
and numpy here; LeRobot itself is not imported.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vla_align.data.episode import ActionSpec, Episode
from vla_align.data.lerobot import read_dataset, write_dataset
from vla_align.data.lerobot_stats import QUANTILE_KEYS, QUANTILES, STAT_KEYS
from vla_align.data.lerobot_write import EXTRAS_PATH
from vla_align.errors import DatasetError

VOCAB = ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
DISCRETE = ActionSpec(kind="discrete", num_actions=7, names=VOCAB)
CONTINUOUS = ActionSpec(kind="continuous", dim=2, names=["dx", "dy"])
INSTRUCTIONS = ["go to the red ball", "open the door", "pick up the key"]
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
FEATURES = ("observation.image", "action", "timestamp", "frame_index", "episode_index", "index", "task_index")


def make_episodes(n: int = 6, continuous: bool = False) -> list[Episode]:
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        length = int(rng.integers(3, 12))
        out.append(
            Episode(
                frames=rng.integers(0, 256, size=(length, 8, 8, 3), dtype=np.uint8),
                actions=rng.normal(size=(length, 2)).astype(np.float32) if continuous else rng.integers(0, 7, length),
                instruction=INSTRUCTIONS[i % 3],
                task=f"BabyAI-Toy{i % 2}-v0",
                fps=10.0,
                seed=500 + i,
                success=i != 2,
                state=rng.normal(size=(length, 3)).astype(np.float32) if continuous else None,
            )
        )
    return out


def write(path: Path, continuous: bool = False, n: int = 6) -> tuple[Path, list[Episode]]:
    eps = make_episodes(n, continuous)
    spec = CONTINUOUS if continuous else DISCRETE
    write_dataset(path, iter(eps), action_spec=spec, fps=10.0, splits={"train": (0, n - 2), "val": (n - 2, n)})
    return path, eps


@pytest.fixture
def discrete(tmp_path: Path) -> tuple[Path, list[Episode]]:
    return write(tmp_path / "ds")


def pandas_metadata(file: Path) -> dict[str, object]:
    meta = pq.read_schema(file).metadata
    assert meta is not None and b"pandas" in meta
    out: dict[str, object] = json.loads(meta[b"pandas"])
    return out


# ------------------------------------------------------------------------------------- meta/tasks.parquet


def test_tasks_parquet_has_the_schema_and_pandas_metadata_lerobot_writes(discrete: tuple[Path, list[Episode]]) -> None:
    path, _ = discrete
    file = path / "meta/tasks.parquet"
    # What LeRobot 0.6.1's save_episode_tasks + write_tasks produce, under the pandas installed here.
    want_df = pd.DataFrame({"task_index": range(3)}, index=pd.Index(INSTRUCTIONS, name="task"))
    ref = path.parent / "reference.parquet"
    want_df.to_parquet(ref)
    got, want = pq.read_schema(file), pq.read_schema(ref)
    assert got.names == want.names == ["task_index", "task"]
    assert got.field("task_index").type == pa.int64()
    assert pa.types.is_string(got.field("task").type) or pa.types.is_large_string(got.field("task").type)
    got_meta, want_meta = pandas_metadata(file), pandas_metadata(ref)
    assert got_meta["index_columns"] == want_meta["index_columns"] == ["task"]
    strip = ("numpy_type",)  # "object" under pandas 2 (LeRobot's pin), "str" under pandas 3
    for key in ("columns", "column_indexes"):
        got_cols = [{k: v for k, v in c.items() if k not in strip} for c in got_meta[key]]  # type: ignore[attr-defined]
        want_cols = [{k: v for k, v in c.items() if k not in strip} for c in want_meta[key]]  # type: ignore[attr-defined]
        if key == "columns":  # pandas 3 names a str index "object", pandas 2 "unicode"
            for c in (*got_cols, *want_cols):
                c["pandas_type"] = "unicode" if c["pandas_type"] == "object" else c["pandas_type"]
        assert got_cols == want_cols, key
    assert set(got_meta) == set(want_meta)

    # Read back the way LeRobot's load_tasks does: the frame is indexed by the task string.
    tasks = pd.read_parquet(file)
    tasks.index.name = "task"
    assert list(tasks.index) == INSTRUCTIONS and list(tasks.columns) == ["task_index"]
    assert int(tasks.loc["open the door"].task_index) == 1
    assert tasks.iloc[2].name == "pick up the key"  # LeRobot: self.meta.tasks.iloc[task_idx].name


# What pandas 2.3.3 + pyarrow 26 write for LeRobot 0.6.1's task frame (LeRobot pins pandas < 3), recorded
# from ``pd.DataFrame({"task_index": range(3)}, index=pd.Index(tasks, name="task")).to_parquet(path)``.
PANDAS2_METADATA = {
    "index_columns": ["task"],
    "column_indexes": [
        {
            "name": None,
            "field_name": None,
            "pandas_type": "unicode",
            "numpy_type": "object",
            "metadata": {"encoding": "UTF-8"},
        }
    ],
    "columns": [
        {
            "name": "task_index",
            "field_name": "task_index",
            "pandas_type": "int64",
            "numpy_type": "int64",
            "metadata": None,
        },
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
    ],
    "attributes": {},
    "pandas_version": "2.3.3",
}


def test_tasks_parquet_metadata_is_what_pandas_2_writes(discrete: tuple[Path, list[Episode]]) -> None:
    schema = pq.read_schema(discrete[0] / "meta/tasks.parquet")
    assert schema.remove_metadata() == pa.schema([("task_index", pa.int64()), ("task", pa.string())])
    got = pandas_metadata(discrete[0] / "meta/tasks.parquet")
    assert got.pop("creator") == {"library": "pyarrow", "version": pa.__version__}
    assert got == PANDAS2_METADATA


def test_tasks_parquet_pandas_appends_and_rewrites_it(discrete: tuple[Path, list[Episode]]) -> None:
    """LeRobot adds a task with ``tasks.loc[task] = i`` and rewrites the file: our reader reads the result."""
    path, _ = discrete
    file = path / "meta/tasks.parquet"
    tasks = pd.read_parquet(file)
    tasks.loc["a new task"] = 3
    tasks.to_parquet(file)
    assert read_dataset(path).tasks == [*INSTRUCTIONS, "a new task"]


@pytest.mark.parametrize("layout", ["plain-columns", "index-level-0"])
def test_older_tasks_layouts_still_read(discrete: tuple[Path, list[Episode]], layout: str) -> None:
    path, eps = discrete
    file = path / "meta/tasks.parquet"
    if layout == "plain-columns":  # what vla-align wrote before
        table = pa.table({"task_index": pa.array([0, 1, 2], pa.int64()), "task": INSTRUCTIONS})
    else:  # an unnamed pandas index
        table = pa.table({"task_index": pa.array([0, 1, 2], pa.int64()), "__index_level_0__": INSTRUCTIONS})
    pq.write_table(table, file)
    got = read_dataset(path)
    assert got.instructions == [e.instruction for e in eps]


# --------------------------------------------------------------------------------- per-episode statistics


def episode_values(ep: Episode, key: str, i: int, start: int, task_index: int) -> np.ndarray:
    """What LeRobot computes statistics over for feature ``key`` of episode ``i``, as (N, D)."""
    n = len(ep)
    col: dict[str, np.ndarray] = {
        "action": np.asarray(ep.actions, dtype=np.float64).reshape(n, -1),
        "timestamp": (np.arange(n, dtype=np.float64) / 10.0).astype(np.float32).reshape(n, 1),
        "frame_index": np.arange(n).reshape(n, 1),
        "episode_index": np.full((n, 1), i),
        "index": np.arange(start, start + n).reshape(n, 1),
        "task_index": np.full((n, 1), task_index),
    }
    if key == "observation.state":
        assert ep.state is not None
        return ep.state.astype(np.float64)
    out: np.ndarray = col[key].astype(np.float64)
    return out


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
def test_every_episode_has_lerobots_stats_columns_with_exact_values(tmp_path: Path, continuous: bool) -> None:
    path, eps = write(tmp_path / "ds", continuous)
    meta = pq.read_table(path / EPISODES)
    features = FEATURES + (("observation.state",) if continuous else ())
    want_cols = {f"stats/{f}/{k}" for f in features for k in STAT_KEYS}
    assert want_cols <= set(meta.column_names)
    assert not {"seed", "success", "env_task"} & set(meta.column_names)
    for f in features:  # LeRobot's types: list<double> values, list<int64> count, images (3, 1, 1)
        assert meta.schema.field(f"stats/{f}/count").type == pa.list_(pa.int64())
        depth = 3 if f == "observation.image" else 1
        want_type: pa.DataType = pa.float64()
        for _ in range(depth):
            want_type = pa.list_(want_type)
        for k in STAT_KEYS:
            if k != "count":
                assert meta.schema.field(f"stats/{f}/{k}").type == want_type, (f, k)
    rows, start = meta.to_pylist(), 0
    for i, (row, ep) in enumerate(zip(rows, eps, strict=True)):
        for f in features:
            if f == "observation.image":
                x = ep.frames.reshape(-1, 3) / 255.0  # per channel in [0, 1]
                shape: tuple[int, ...] = (3, 1, 1)
            else:
                x = episode_values(ep, f, i, start, INSTRUCTIONS.index(ep.instruction))
                shape = (x.shape[1],)
            assert row[f"stats/{f}/count"] == [len(ep)]
            want = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
            want.update(zip(QUANTILE_KEYS, np.quantile(x, QUANTILES, axis=0), strict=True))
            for k, v in want.items():
                got = np.asarray(row[f"stats/{f}/{k}"])
                assert got.shape == shape, (f, k)
                np.testing.assert_allclose(got.ravel(), v, rtol=1e-6, atol=1e-9, err_msg=f"episode {i} {f} {k}")
        start += len(ep)


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
def test_stats_json_has_exact_quantiles_over_all_frames(tmp_path: Path, continuous: bool) -> None:
    """Our global quantiles are numpy.quantile of every frame (exact), not LeRobot's count-weighted mean
    of per-episode quantiles; mean / std / min / max / count agree with LeRobot's aggregate_stats."""
    path, eps = write(tmp_path / "ds", continuous)
    stats = json.loads((path / "meta/stats.json").read_text())
    features = FEATURES + (("observation.state",) if continuous else ())
    assert set(stats) == set(features)
    for f in features:
        assert list(stats[f]) == list(STAT_KEYS), f
    actions = np.concatenate([np.asarray(e.actions, np.float64).reshape(len(e), -1) for e in eps])
    frames = np.concatenate([e.frames for e in eps]).reshape(-1, 3) / 255.0
    for key, x in (("action", actions), ("observation.image", frames)):
        got_q = np.array([np.asarray(stats[key][q]).ravel() for q in QUANTILE_KEYS])
        np.testing.assert_allclose(got_q, np.quantile(x, QUANTILES, axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.asarray(stats[key]["std"]).ravel(), x.std(0), rtol=1e-9)
        assert stats[key]["count"] == [len(actions)]
    # aggregate_stats (LeRobot) of our per-episode columns gives the same mean / std / min / max.
    rows = pq.read_table(path / EPISODES).to_pylist()
    counts = np.array([r["stats/action/count"][0] for r in rows], dtype=np.float64)[:, None]
    means = np.array([r["stats/action/mean"] for r in rows])
    var = np.array([r["stats/action/std"] for r in rows]) ** 2
    mean = (means * counts).sum(0) / counts.sum()
    std = np.sqrt(((var + (means - mean) ** 2) * counts).sum(0) / counts.sum())
    np.testing.assert_allclose(stats["action"]["mean"], mean, rtol=1e-9)
    np.testing.assert_allclose(stats["action"]["std"], std, rtol=1e-9)


def test_image_quantiles_match_numpy_for_skewed_and_constant_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    frames = np.zeros((5, 6, 6, 3), np.uint8)
    frames[..., 0] = rng.integers(0, 256, (5, 6, 6))
    frames[..., 1] = np.where(rng.random((5, 6, 6)) < 0.97, 7, 250)  # almost constant, a few outliers
    frames[..., 2] = 42  # constant
    ep = Episode(frames, np.array([0, 1, 0, 1, 0]), "go", "T", 10.0, 0, True)
    write_dataset(tmp_path / "ds", [ep], action_spec=DISCRETE, fps=10.0, splits={})
    row = pq.read_table(tmp_path / "ds" / EPISODES).to_pylist()[0]
    x = frames.reshape(-1, 3) / 255.0
    for q, key in zip(QUANTILES, QUANTILE_KEYS, strict=True):
        np.testing.assert_allclose(np.ravel(row[f"stats/observation.image/{key}"]), np.quantile(x, q, axis=0))


# ------------------------------------------------------------------------------- our extra episode fields


def test_extras_live_in_a_side_file_keyed_by_episode(discrete: tuple[Path, list[Episode]]) -> None:
    path, eps = discrete
    side = pq.read_table(path / EXTRAS_PATH)
    assert side.schema == pa.schema(
        [("episode_index", pa.int64()), ("seed", pa.int64()), ("success", pa.bool_()), ("env_task", pa.string())]
    )
    assert side.to_pylist() == [
        {"episode_index": i, "seed": e.seed, "success": e.success, "env_task": e.task} for i, e in enumerate(eps)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_dataset(path, split="val")
    assert got.seeds.tolist() == [e.seed for e in eps[4:]]
    assert got.success.tolist() == [e.success for e in eps[4:]]
    assert got.env_tasks == [e.task for e in eps[4:]]


def test_side_file_rows_in_any_order_match_by_episode_index(discrete: tuple[Path, list[Episode]]) -> None:
    path, eps = discrete
    file = path / EXTRAS_PATH
    table = pq.read_table(file)
    pq.write_table(table.take(pa.array([5, 3, 1, 0, 2, 4])), file)
    got = read_dataset(path)
    assert got.seeds.tolist() == [e.seed for e in eps]


def drop_info_key(path: Path) -> None:
    """What LeRobot's tools do to info.json: unknown keys such as "vla_align" are dropped."""
    info = json.loads((path / "meta/info.json").read_text())
    info.pop("vla_align")
    (path / "meta/info.json").write_text(json.dumps(info))


@pytest.mark.parametrize("damage", ["missing", "other-episodes"])
def test_a_dropped_or_outdated_side_file_gives_one_warning(
    discrete: tuple[Path, list[Episode]], damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, eps = discrete
    file = path / EXTRAS_PATH
    drop_info_key(path)
    if damage == "missing":
        file.unlink()
    else:  # an episode was appended by LeRobot: the side file does not know it
        pq.write_table(pq.read_table(file).slice(0, 5), file)
    with pytest.warns(UserWarning) as record:
        got = read_dataset(path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "meta/vla_align/episodes.parquet" in message and "seeds" in message
    assert ("missing" in message) == (damage == "missing")
    assert got.seeds.tolist() == [-1] * len(eps) and got.success.all() and got.env_tasks == [""] * len(eps)
    assert got.instructions == [e.instruction for e in eps]  # the rest reads as before


def test_old_datasets_with_the_fields_in_meta_episodes_still_read(discrete: tuple[Path, list[Episode]]) -> None:
    path, eps = discrete
    (path / EXTRAS_PATH).unlink()
    file = path / EPISODES
    meta = pq.read_table(file)
    meta = meta.append_column("seed", pa.array([e.seed for e in eps], pa.int64()))
    meta = meta.append_column("success", pa.array([e.success for e in eps]))
    meta = meta.append_column("env_task", pa.array([e.task for e in eps]))
    pq.write_table(meta, file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_dataset(path)
    assert got.seeds.tolist() == [e.seed for e in eps] and got.env_tasks == [e.task for e in eps]
    assert got.success.tolist() == [e.success for e in eps]


def test_a_dataset_lerobot_wrote_reads_silently_without_fields(discrete: tuple[Path, list[Episode]]) -> None:
    path, _ = discrete
    (path / EXTRAS_PATH).unlink()
    info = json.loads((path / "meta/info.json").read_text())
    info.pop("vla_align")
    info["features"]["action"].pop("info")
    (path / "meta/info.json").write_text(json.dumps(info))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_dataset(path)
    assert (got.seeds == -1).all()


@pytest.mark.parametrize(
    ("column", "values", "words"),
    [
        ("seed", pa.array([None, 1, 2, 3, 4, 5], pa.int64()), "column 'seed' is empty (null) in row 0"),
        ("success", pa.array([1, 0, 1, 1, 1, 1], pa.int64()), "column 'success' must be true/false"),
        ("env_task", pa.array([1, 2, 3, 4, 5, 6], pa.int64()), "column 'env_task' must be a string"),
        ("episode_index", pa.array([0, 1, 2, 3, 4, 4], pa.int64()), "episode_index 4 appears more than once"),
    ],
)
def test_a_damaged_side_file_is_refused(
    discrete: tuple[Path, list[Episode]], column: str, values: pa.Array, words: str
) -> None:
    path, _ = discrete
    file = path / EXTRAS_PATH
    table = pq.read_table(file)
    table = table.set_column(table.schema.get_field_index(column), column, values)
    pq.write_table(table, file)
    with pytest.raises(DatasetError, match="episodes.parquet: " + words.replace("(", r"\(").replace(")", r"\)")):
        read_dataset(path)


# ------------------------------------------------------------------------------------- action vocabulary


def test_action_spec_is_kept_in_features_and_read_when_info_key_is_gone(
    discrete: tuple[Path, list[Episode]],
) -> None:
    path, eps = discrete
    info = json.loads((path / "meta/info.json").read_text())
    action = info["features"]["action"]
    assert action["dtype"] == "int64" and action["shape"] == [1] and action["names"] == ["action_id"]
    assert action["info"]["vla_align.action_spec"] == DISCRETE.to_dict()
    drop_info_key(path)
    with warnings.catch_warnings():  # the side file still matches meta/episodes: no warning
        warnings.simplefilter("error")
        got = read_dataset(path)
    assert got.action_spec == DISCRETE  # not num_actions = max(action) + 1
    assert got.action_spec.names == VOCAB
    assert got.seeds.tolist() == [e.seed for e in eps]


def test_continuous_spec_is_kept_in_features_too(tmp_path: Path) -> None:
    path, _ = write(tmp_path / "ds", continuous=True)
    drop_info_key(path)
    got = read_dataset(path)
    assert got.action_spec == CONTINUOUS


def test_a_damaged_spec_in_features_is_refused(discrete: tuple[Path, list[Episode]]) -> None:
    path, _ = discrete
    drop_info_key(path)
    info = json.loads((path / "meta/info.json").read_text())
    info["features"]["action"]["info"]["vla_align.action_spec"]["num_actions"] = "seven"
    (path / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"features.action.info.vla_align.action_spec .*'num_actions' must be"):
        read_dataset(path)


def test_meta_episodes_files_whose_stats_types_differ_still_read(discrete: tuple[Path, list[Episode]]) -> None:
    """LeRobot 0.4.4 appends an episode with integer ``stats/action/min``; ours are floats (as 0.6 writes):
    the reader skips the stats columns, as LeRobot's load_episodes does, so the files still concatenate."""
    path, eps = discrete
    file = path / EPISODES
    meta = pq.read_table(file)
    late = meta.slice(3)
    for stat in ("min", "max"):
        name = f"stats/action/{stat}"
        late = late.set_column(late.schema.get_field_index(name), name, late[name].cast(pa.list_(pa.int64())))
    pq.write_table(meta.slice(0, 3), file)
    pq.write_table(late, file.with_name("file-001.parquet"))
    got = read_dataset(path)
    assert got.episode_ids.tolist() == list(range(len(eps))) and got.seeds.tolist() == [e.seed for e in eps]
