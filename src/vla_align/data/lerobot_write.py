"""Writing LeRobotDataset v3.0 directories with pyarrow (reading: :mod:`vla_align.data.lerobot`).

Layout (see DESIGN.md section 4), written so that LeRobot's own reader and tools take it as theirs::

    meta/info.json  meta/stats.json  meta/tasks.parquet
    meta/episodes/chunk-000/file-000.parquet   one row per episode, with LeRobot's stats/<feature>/<stat>
    meta/vla_align/episodes.parquet            ours: seed / success / env_task per episode_index
    data/chunk-XXX/file-XXX.parquet            one row per frame; images as PNG bytes in a struct

Many episodes share one data file; a file is closed once it passes ``data_files_size_in_mb`` and an
episode never straddles two files. Image columns are ``struct<bytes: binary, path: string>`` like
Hugging Face ``datasets.Image``; an HF ``huggingface`` schema entry is written for LeRobot's loader.

``meta/tasks.parquet`` is what pandas 2 writes for LeRobot's task table (a ``task_index`` column, the task
string as the pandas index), so ``pandas.read_parquet`` gives LeRobot a frame indexed by task. Our extra
episode fields live in a side file LeRobot never reads: its tools neither choke on them nor carry them, and
the reader notices when they are gone. The action spec is stored twice: in info.json's ``vla_align`` key
(LeRobot's tools drop unknown info.json keys) and in ``features.action.info`` (they copy ``features``).
Statistics: :mod:`vla_align.data.lerobot_stats`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ..atomic import atomic_directory, write_json
from ..errors import DatasetError
from ..progress import progress_bar
from .episode import ActionSpec, Episode
from .info_checks import ACTION_SPEC_KEY
from .lerobot_stats import ChannelHistogram, to_lists, vector_stats
from .row_checks import MAX_ABS_VALUE

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
EXTRAS_PATH = "meta/vla_align/episodes.parquet"  # our per-episode seed / success / env_task
TASKS_PATH = "meta/tasks.parquet"
# The pandas release whose ``DataFrame.to_parquet`` layout meta/tasks.parquet mirrors (LeRobot 0.6.1 pins
# pandas < 3); pandas reads the layout from the metadata, never this number.
PANDAS_LAYOUT_VERSION = "2.3.3"
IMAGE_KEY = "observation.image"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
ROW_GROUP_BYTES = 16 * 2**20  # flush buffered episodes to the open parquet file at this size
INDEX_KEYS = ("frame_index", "episode_index", "index", "task_index")


def _feature(dtype: str, shape: list[int], names: Any = None) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "names": names}


def _encode_png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class _DataFiles:
    """Appends per-episode arrow tables to data/chunk-XXX/file-XXX.parquet, rolling files by size."""

    def __init__(self, root: Path, schema: pa.Schema, max_bytes: int) -> None:
        self.root, self.schema, self.max_bytes = root, schema, max_bytes
        self.chunk, self.file = 0, 0
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []
        self.pending_bytes = self.file_bytes = 0

    def append(self, table: pa.Table) -> tuple[int, int]:
        """Add one episode; returns the (chunk_index, file_index) it lands in."""
        if self.file_bytes >= self.max_bytes:  # the open file passed the limit: start the next one
            self.close()
            self.chunk, self.file = (self.chunk + 1, 0) if self.file == CHUNKS_SIZE - 1 else (self.chunk, self.file + 1)
        self.pending.append(table)
        self.pending_bytes += table.nbytes
        self.file_bytes += table.nbytes
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()
        return self.chunk, self.file

    def _flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, self.schema)
        self.writer.write_table(pa.concat_tables(self.pending), row_group_size=1 << 30)
        self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
        self.writer, self.file_bytes = None, 0


def _hf_feature(name: str, t: pa.DataType) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature description LeRobot's loader expects for a column."""
    if name == IMAGE_KEY:
        return {"_type": "Image"}
    if isinstance(t, pa.FixedSizeListType):
        return {"feature": {"dtype": "float32", "_type": "Value"}, "length": t.list_size, "_type": "Sequence"}
    return {"dtype": "float32" if t == pa.float32() else "int64", "_type": "Value"}


def _schema(spec: ActionSpec, state_dim: int | None) -> pa.Schema:
    action = pa.int64() if spec.kind == "discrete" else pa.list_(pa.float32(), spec.dim)
    fields = [("timestamp", pa.float32()), *[(k, pa.int64()) for k in INDEX_KEYS], ("action", action)]
    if state_dim is not None:
        fields.append(("observation.state", pa.list_(pa.float32(), state_dim)))
    fields.append((IMAGE_KEY, IMAGE_TYPE))
    hf = {name: _hf_feature(name, t) for name, t in fields}
    return pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf}})})


def _check_episode(ep: Episode, i: int, spec: ActionSpec, first: Episode | None) -> None:
    where = f"episode {i} (task {ep.task!r}, seed {ep.seed})"
    if spec.kind == "discrete":
        a = np.asarray(ep.actions)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise DatasetError(f"{where}: discrete actions must be a 1-D integer array, got {a.dtype} {a.shape}")
        if a.min() < 0 or a.max() >= spec.num_actions:
            raise DatasetError(f"{where}: action ids must be in [0, {spec.num_actions}), got {a.min()}..{a.max()}")
    elif np.asarray(ep.actions).shape[1:] != (spec.dim,):
        raise DatasetError(f"{where}: continuous actions must be (N, {spec.dim}), got {np.shape(ep.actions)}")
    else:
        _check_values(np.asarray(ep.actions), "actions", where)
    if ep.state is not None:
        _check_values(np.asarray(ep.state), "state", where)
    if first is not None:
        if ep.frames.shape[1:] != first.frames.shape[1:]:
            raise DatasetError(f"{where}: frames are {ep.frames.shape[1:]}, episode 0's are {first.frames.shape[1:]}")
        if (ep.state is None) != (first.state is None) or (
            ep.state is not None and first.state is not None and ep.state.shape[1:] != first.state.shape[1:]
        ):
            raise DatasetError(f"{where}: state shape differs from episode 0's; all episodes need the same state")


def _check_values(x: np.ndarray, what: str, where: str) -> None:
    """Real-valued ``x`` is numeric, finite and within ±MAX_ABS_VALUE (what the reader accepts)."""
    if not np.issubdtype(x.dtype, np.number):
        raise DatasetError(f"{where}: {what} must be numbers, got {x.dtype}")
    x = x.astype(np.float64, copy=False)
    bad = np.argwhere(~np.isfinite(x) | (np.abs(x) > MAX_ABS_VALUE))
    if len(bad):
        i = tuple(int(j) for j in bad[0])
        raise DatasetError(
            f"{where}: {what}{list(i)} is {x[i]:g}; values must be finite and within ±{MAX_ABS_VALUE:.2g} "
            "(beyond it float32 statistics overflow)"
        )


def _columns(ep: Episode, i: int, index: int, task_index: int, fps: float, spec: ActionSpec) -> dict[str, np.ndarray]:
    """The numeric per-frame columns of episode ``i``, whose first frame has global ``index``."""
    n = len(ep)
    cols: dict[str, np.ndarray] = {
        "timestamp": (np.arange(n, dtype=np.float64) / fps).astype(np.float32),  # (N,)
        "frame_index": np.arange(n, dtype=np.int64),  # (N,)
        "episode_index": np.full(n, i, dtype=np.int64),  # (N,)
        "index": np.arange(index, index + n, dtype=np.int64),  # (N,)
        "task_index": np.full(n, task_index, dtype=np.int64),  # (N,)
        "action": np.asarray(ep.actions, dtype=np.int64 if spec.kind == "discrete" else np.float32),  # (N,) | (N, A)
    }
    if ep.state is not None:
        cols["observation.state"] = np.asarray(ep.state, dtype=np.float32)  # (N, S)
    return cols


def _episode_table(ep: Episode, cols: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """Episode ``ep``'s rows: the numeric ``cols`` then its frames as PNG image structs."""
    pngs = pa.array([_encode_png(f) for f in ep.frames], pa.binary())
    arrays = [
        pa.array(v) if v.ndim == 1 else pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), v.shape[1])
        for v in cols.values()
    ]
    arrays.append(pa.StructArray.from_arrays([pngs, pa.nulls(len(ep), pa.string())], fields=list(IMAGE_TYPE)))
    return pa.Table.from_arrays(arrays, schema=schema)


def _episode_row(
    ep: Episode, i: int, index: int, place: tuple[int, int], stats: dict[str, dict[str, np.ndarray]]
) -> dict[str, Any]:
    """The meta/episodes row of episode ``i``, whose frames are ``index`` onwards in data file ``place``
    (chunk, file), with LeRobot's ``stats/<feature>/<stat>`` columns from ``stats``."""
    n = len(ep)
    row: dict[str, Any] = {
        "episode_index": i,
        "tasks": [ep.instruction],
        "length": n,
        "data/chunk_index": place[0],
        "data/file_index": place[1],
        "dataset_from_index": index,
        "dataset_to_index": index + n,
    }
    for key, values in stats.items():
        row.update({f"stats/{key}/{k}": v for k, v in to_lists(values).items()})
    return {**row, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}


class _EpisodeSink:
    """Checks and appends episodes to the data files, collecting the tasks, meta/episodes rows and stats."""

    def __init__(self, root: Path, spec: ActionSpec, fps: float, data_file_size_mb: float) -> None:
        self.root, self.spec, self.fps, self.data_file_size_mb = root, spec, fps, data_file_size_mb
        self.tasks: dict[str, int] = {}
        self.rows: list[dict[str, Any]] = []  # meta/episodes rows
        self.extras: list[dict[str, Any]] = []  # meta/vla_align/episodes.parquet rows
        self.values: dict[str, list[np.ndarray]] = {}  # every frame's numeric columns, for exact global stats
        self.image_hist = ChannelHistogram()
        self.files: _DataFiles | None = None
        self.first: Episode | None = None
        self.index = 0  # global index of the next frame

    def _start(self, ep: Episode) -> None:
        """The first episode fixes the schema (state or not) and opens the data files."""
        self.first = ep
        state_dim = None if ep.state is None else int(ep.state.shape[1])
        self.files = _DataFiles(self.root, _schema(self.spec, state_dim), int(self.data_file_size_mb * 2**20))

    def add(self, i: int, ep: Episode) -> None:
        """Check and append episode ``i``."""
        _check_episode(ep, i, self.spec, self.first)
        if self.first is None:
            self._start(ep)
        assert self.files is not None
        task_index = self.tasks.setdefault(ep.instruction, len(self.tasks))
        cols = _columns(ep, i, self.index, task_index, self.fps, self.spec)
        place = self.files.append(_episode_table(ep, cols, self.files.schema))
        hist = ChannelHistogram()
        hist.add(ep.frames)
        self.image_hist.merge(hist)
        stats = {IMAGE_KEY: hist.stats()}
        for k, v in cols.items():
            self.values.setdefault(k, []).append(v)
            stats[k] = vector_stats(v)
        self.rows.append(_episode_row(ep, i, self.index, place, stats))
        self.extras.append({"episode_index": i, "seed": int(ep.seed), "success": bool(ep.success), "env_task": ep.task})
        self.index += len(ep)

    def global_stats(self) -> dict[str, dict[str, list[Any]]]:
        """meta/stats.json: exact statistics over every frame written."""
        out = {IMAGE_KEY: to_lists(self.image_hist.stats())}
        out.update({k: to_lists(vector_stats(np.concatenate(v))) for k, v in self.values.items()})
        return out


def _features(first: Episode, spec: ActionSpec) -> dict[str, Any]:
    """info.json's ``features``, shapes taken from the first episode."""
    action = (
        _feature("int64", [1], ["action_id"])
        if spec.kind == "discrete"
        else _feature("float32", [spec.dim], list(spec.names) or None)
    )
    # The spec (with a discrete vocabulary's names) again where LeRobot's tools keep it: they copy
    # ``features`` untouched but drop info.json keys they do not know, such as "vla_align".
    action["info"] = {ACTION_SPEC_KEY: spec.to_dict()}
    features = {IMAGE_KEY: _feature("image", list(first.frames.shape[1:]), ["height", "width", "channels"])}
    features["action"] = action
    if first.state is not None:
        features["observation.state"] = _feature("float32", [int(first.state.shape[1])])
    features["timestamp"] = _feature("float32", [1])
    features.update({k: _feature("int64", [1]) for k in INDEX_KEYS})
    return features


def _info(
    sink: _EpisodeSink,
    first: Episode,
    fps: float,
    splits: dict[str, tuple[int, int]],
    robot_type: str,
    extra: dict[str, Any] | None,
    data_file_size_mb: float,
) -> dict[str, Any]:
    """meta/info.json for the episodes ``sink`` took, ``first`` among them."""
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(sink.rows),
        "total_frames": sink.index,
        "total_tasks": len(sink.tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": int(data_file_size_mb) if float(data_file_size_mb).is_integer() else data_file_size_mb,
        "video_files_size_in_mb": 200,
        "fps": int(fps) if float(fps).is_integer() else fps,  # LeRobot writes an integer
        "splits": {name: f"{start}:{end}" for name, (start, end) in splits.items()},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": _features(first, sink.spec),
        "vla_align": {"action_spec": sink.spec.to_dict(), **(extra or {})},
    }


def _tasks_table(tasks: dict[str, int]) -> pa.Table:
    """meta/tasks.parquet as pandas 2 writes LeRobot's ``DataFrame({"task_index": ...}, index=Index(tasks,
    name="task"))``: a ``task_index`` int64 column, then the index as a ``task`` string column, and the pandas
    metadata that makes ``pandas.read_parquet`` index the frame by task (what LeRobot's loader looks up)."""
    column = {"pandas_type": "int64", "numpy_type": "int64", "metadata": None}
    text = {"pandas_type": "unicode", "numpy_type": "object", "metadata": None}
    utf8 = {"metadata": {"encoding": "UTF-8"}}
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", **utf8},
        ],
        "columns": [
            {"name": "task_index", "field_name": "task_index", **column},
            {"name": "task", "field_name": "task", **text},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": PANDAS_LAYOUT_VERSION,
    }
    schema = pa.schema(
        [("task_index", pa.int64()), ("task", pa.string())], metadata={"pandas": json.dumps(pandas_meta)}
    )
    return pa.table([pa.array(list(tasks.values()), pa.int64()), pa.array(list(tasks), pa.string())], schema=schema)


def _extras_table(rows: list[dict[str, Any]]) -> pa.Table:
    """meta/vla_align/episodes.parquet: our per-episode fields, keyed by episode_index."""
    schema = pa.schema(
        [("episode_index", pa.int64()), ("seed", pa.int64()), ("success", pa.bool_()), ("env_task", pa.string())]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _write_meta(root: Path, sink: _EpisodeSink, info: dict[str, Any]) -> None:
    """meta/episodes, meta/tasks.parquet, our side file, meta/stats.json and meta/info.json under ``root``."""
    pq.write_table(pa.Table.from_pylist(sink.rows), _mkparent(root / EPISODES_PATH))
    pq.write_table(_tasks_table(sink.tasks), root / TASKS_PATH)
    pq.write_table(_extras_table(sink.extras), _mkparent(root / EXTRAS_PATH))
    write_json(root / "meta" / "stats.json", sink.global_stats())
    write_json(root / "meta" / "info.json", info)


def write_dataset(
    path: str | Path,
    episodes: Iterable[Episode],
    *,
    action_spec: ActionSpec,
    fps: float,
    splits: dict[str, tuple[int, int]],
    robot_type: str = "unknown",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    total_episodes: int | None = None,
    description: str = "writing",
    data_file_size_mb: float = 100.0,
) -> Path:
    """Stream ``episodes`` into a LeRobotDataset v3.0 directory at ``path``; returns ``path``.

    ``splits`` maps a name to a half-open episode range ``(start, end)``. Everything is written in a
    temporary sibling directory renamed into place at the end, so a crash leaves nothing at ``path``.
    """
    path = Path(path)
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
        raise DatasetError(f"fps must be a positive number of frames per second, got {fps!r}")
    if path.exists() and not overwrite:
        raise DatasetError(f"{path} already exists; pass --overwrite or choose another --out")
    bar_cm = progress_bar(description, total_episodes) if total_episodes else contextlib.nullcontext()
    with atomic_directory(path, overwrite=True) as root, bar_cm as bar:
        sink = _EpisodeSink(root, action_spec, fps, data_file_size_mb)
        for i, ep in enumerate(episodes):
            sink.add(i, ep)
            if bar is not None:
                bar.advance(1, info=f"{sink.index} frames")
        if sink.files is None or sink.first is None:
            raise DatasetError(f"{path}: no episodes to write; a dataset needs at least one episode")
        sink.files.close()
        for name, (start, end) in splits.items():
            if not 0 <= start <= end <= len(sink.rows):
                raise DatasetError(f"split {name!r} = {start}:{end} is outside the {len(sink.rows)} episodes written")
        info = _info(sink, sink.first, fps, splits, robot_type, extra, data_file_size_mb)
        _write_meta(root, sink, info)
    return path


def _mkparent(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
