"""Writing LeRobotDataset v3.0 directories with pyarrow (reading: :mod:`vla_align.data.lerobot`).

Layout (see DESIGN.md section 4)::

    meta/info.json  meta/stats.json  meta/tasks.parquet
    meta/episodes/chunk-000/file-000.parquet   one row per episode (+ our seed / success / env_task)
    data/chunk-XXX/file-XXX.parquet            one row per frame; images as PNG bytes in a struct

Many episodes share one data file; a file is closed once it passes ``data_files_size_in_mb`` and an
episode never straddles two files. Image columns are ``struct<bytes: binary, path: string>`` like
Hugging Face ``datasets.Image``; an HF ``huggingface`` schema entry is written for LeRobot's loader.
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
from .row_checks import MAX_ABS_VALUE

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
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


class _Stats:
    """Streaming mean / std / min / max / count of one (N, D) feature (Chan's parallel update)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, np.zeros(0), np.zeros(0)
        self.lo, self.hi = np.zeros(0), np.zeros(0)

    def add(self, x: np.ndarray) -> None:
        x = x.reshape(len(x), -1).astype(np.float64)  # (N, D)
        n, mean, m2 = len(x), x.mean(0), ((x - x.mean(0)) ** 2).sum(0)
        if self.n == 0:
            self.n, self.mean, self.m2, self.lo, self.hi = n, mean, m2, x.min(0), x.max(0)
            return
        total, delta = self.n + n, mean - self.mean
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / total
        self.mean = self.mean + delta * n / total
        self.n, self.lo, self.hi = total, np.minimum(self.lo, x.min(0)), np.maximum(self.hi, x.max(0))

    def to_dict(self, shape: tuple[int, ...] = (-1,)) -> dict[str, list[Any]]:
        std = np.sqrt(self.m2 / max(self.n, 1))
        out = {
            k: v.reshape(shape).tolist()
            for k, v in {"mean": self.mean, "std": std, "min": self.lo, "max": self.hi}.items()
        }
        return {**out, "count": [self.n]}


class _ImageStats:
    """Exact per-channel statistics in [0, 1] from 256-bin histograms (LeRobot's (3, 1, 1) shape)."""

    def __init__(self) -> None:
        self.hist = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:  # (N, H, W, 3) uint8
        for c in range(3):
            self.hist[c] += np.bincount(frames[..., c].ravel(), minlength=256)
        self.frames += len(frames)

    def to_dict(self) -> dict[str, list[Any]]:
        v = np.arange(256) / 255.0
        n = self.hist.sum(1)  # (3,)
        mean = (self.hist * v).sum(1) / n
        std = np.sqrt(np.maximum((self.hist * v**2).sum(1) / n - mean**2, 0.0))
        lo = np.array([v[np.nonzero(h)[0][0]] for h in self.hist])
        hi = np.array([v[np.nonzero(h)[0][-1]] for h in self.hist])
        out = {k: x.reshape(3, 1, 1).tolist() for k, x in {"mean": mean, "std": std, "min": lo, "max": hi}.items()}
        return {**out, "count": [self.frames]}


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


def _episode_row(ep: Episode, i: int, index: int, chunk: int, file: int) -> dict[str, Any]:
    """The meta/episodes row of episode ``i``, whose frames are ``index`` onwards in data file (chunk, file)."""
    n = len(ep)
    return {
        "episode_index": i,
        "tasks": [ep.instruction],
        "length": n,
        "dataset_from_index": index,
        "dataset_to_index": index + n,
        "data/chunk_index": chunk,
        "data/file_index": file,
        "meta/episodes/chunk_index": 0,
        "meta/episodes/file_index": 0,
        "seed": int(ep.seed),
        "success": bool(ep.success),
        "env_task": ep.task,
    }


class _EpisodeSink:
    """Checks and appends episodes to the data files, collecting the tasks, meta/episodes rows and stats."""

    def __init__(self, root: Path, spec: ActionSpec, fps: float, data_file_size_mb: float) -> None:
        self.root, self.spec, self.fps, self.data_file_size_mb = root, spec, fps, data_file_size_mb
        self.tasks: dict[str, int] = {}
        self.rows: list[dict[str, Any]] = []  # meta/episodes rows
        self.stats: dict[str, _Stats] = {k: _Stats() for k in ("timestamp", *INDEX_KEYS, "action")}
        self.image_stats = _ImageStats()
        self.files: _DataFiles | None = None
        self.first: Episode | None = None
        self.index = 0  # global index of the next frame

    def _start(self, ep: Episode) -> None:
        """The first episode fixes the schema (state or not) and opens the data files."""
        self.first = ep
        state_dim = None if ep.state is None else int(ep.state.shape[1])
        self.files = _DataFiles(self.root, _schema(self.spec, state_dim), int(self.data_file_size_mb * 2**20))
        if ep.state is not None:
            self.stats["observation.state"] = _Stats()

    def add(self, i: int, ep: Episode) -> None:
        """Check and append episode ``i``."""
        _check_episode(ep, i, self.spec, self.first)
        if self.first is None:
            self._start(ep)
        assert self.files is not None
        n = len(ep)
        task_index = self.tasks.setdefault(ep.instruction, len(self.tasks))
        cols = _columns(ep, i, self.index, task_index, self.fps, self.spec)
        chunk, file = self.files.append(_episode_table(ep, cols, self.files.schema))
        for k, v in cols.items():
            self.stats[k].add(v)
        self.image_stats.add(ep.frames)
        self.rows.append(_episode_row(ep, i, self.index, chunk, file))
        self.index += n


def _features(first: Episode, spec: ActionSpec) -> dict[str, Any]:
    """info.json's ``features``, shapes taken from the first episode."""
    features = {
        IMAGE_KEY: _feature("image", list(first.frames.shape[1:]), ["height", "width", "channels"]),
        "action": _feature("int64", [1], ["action_id"])
        if spec.kind == "discrete"
        else _feature("float32", [spec.dim], list(spec.names) or None),
    }
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
        "fps": fps,
        "splits": {name: f"{start}:{end}" for name, (start, end) in splits.items()},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": _features(first, sink.spec),
        "vla_align": {"action_spec": sink.spec.to_dict(), **(extra or {})},
    }


def _write_meta(root: Path, sink: _EpisodeSink, info: dict[str, Any]) -> None:
    """meta/episodes, meta/tasks.parquet, meta/stats.json and meta/info.json under ``root``."""
    pq.write_table(pa.Table.from_pylist(sink.rows), _mkparent(root / EPISODES_PATH))
    pq.write_table(
        pa.table(
            {
                "task_index": pa.array(list(sink.tasks.values()), pa.int64()),
                "task": pa.array(list(sink.tasks), pa.string()),
            }
        ),
        root / "meta" / "tasks.parquet",
    )
    all_stats = {k: s.to_dict() for k, s in sink.stats.items()}
    write_json(root / "meta" / "stats.json", {IMAGE_KEY: sink.image_stats.to_dict(), **all_stats})
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
