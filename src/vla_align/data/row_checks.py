"""Checks of the parquet rows a dataset reads: episode index, tasks, per-frame columns and their values.

Used by :mod:`vla_align.data.lerobot`. Each check raises one :class:`DatasetError` naming the file, the
column, the episode (and frame) and what to do; nothing is clamped, cast over or dropped. Values are
checked in float64 before the float32 copy training uses, so NaN / inf and values whose square
overflows float32 (their statistics would, see :data:`MAX_ABS_VALUE`) are refused with their place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import DatasetError
from .episode import ActionSpec

REGENERATE = "regenerate the dataset"
META_INT_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index")
# sqrt(float32 max) ~ 1.8e19: beyond it a value's square is inf in float32, so the variance behind the
# normalisation statistics (and any squared error) overflows; a single such value turns training to NaN.
MAX_ABS_VALUE = float(np.sqrt(np.finfo(np.float32).max))


def int_column(table: pa.Table, name: str, file: Path, low: int | None = None) -> np.ndarray:
    """Column ``name`` of ``table`` as int64, refused unless it is integers without nulls, all >= ``low``."""
    if name not in table.column_names:
        raise DatasetError(f"{file}: column {name!r} missing (has: {', '.join(table.column_names)}); {REGENERATE}")
    col = table[name]
    if not pa.types.is_integer(col.type):
        raise DatasetError(f"{file}: column {name!r} holds {col.type}, expected integers; {REGENERATE}")
    if col.null_count:
        row = int(np.nonzero(col.is_null().to_numpy(zero_copy_only=False))[0][0])
        raise DatasetError(f"{file}: column {name!r} is empty (null) in row {row}; {REGENERATE}")
    values: np.ndarray = col.to_numpy().astype(np.int64, copy=False)
    if low is not None and len(values) and values.min() < low:
        row = int(np.argmax(values < low))
        raise DatasetError(f"{file}: column {name!r} is {values[row]} in row {row}; it must be >= {low}; {REGENERATE}")
    return values


def check_episode_file(table: pa.Table, file: Path) -> None:
    """One meta/episodes file: the columns read are integers without nulls, lengths >= 1, indices >= 0;
    ``seed`` (ours) an integer, ``success`` (ours) a bool, both without nulls, when present."""
    int_column(table, "episode_index", file, low=0)
    int_column(table, "length", file, low=1)
    for name in META_INT_COLUMNS[2:]:
        int_column(table, name, file, low=0)
    if "seed" in table.column_names:
        int_column(table, "seed", file)
    if "success" in table.column_names:
        _check_success(table, file)


def _check_success(table: pa.Table, file: Path) -> None:
    col = table["success"]
    if not pa.types.is_boolean(col.type) or col.null_count:
        raise DatasetError(f"{file}: column 'success' must be true/false in every row (is {col.type}); {REGENERATE}")


def check_extras_file(table: pa.Table, file: Path) -> np.ndarray:
    """meta/vla_align/episodes.parquet (ours): ``episode_index`` (once each), ``seed`` integers, ``success``
    booleans, ``env_task`` strings, none empty (null); returns the episode indices."""
    ids = int_column(table, "episode_index", file, low=0)
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DatasetError(f"{file}: episode_index {values[counts > 1][0]} appears more than once; {REGENERATE}")
    int_column(table, "seed", file)
    if "success" not in table.column_names:
        raise DatasetError(f"{file}: column 'success' missing (has: {', '.join(table.column_names)}); {REGENERATE}")
    _check_success(table, file)
    if "env_task" not in table.column_names:
        raise DatasetError(f"{file}: column 'env_task' missing (has: {', '.join(table.column_names)}); {REGENERATE}")
    col = table["env_task"]
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or col.null_count:
        raise DatasetError(f"{file}: column 'env_task' must be a string in every row (is {col.type}); {REGENERATE}")
    return ids


def check_episode_ids(ids: np.ndarray, where: Path) -> None:
    """The sorted episode_index values of every meta/episodes file: each episode listed once."""
    dup = np.nonzero(ids[1:] == ids[:-1])[0]
    if len(dup):
        raise DatasetError(
            f"{where}: episode {ids[dup[0]]} is duplicated, listed {int((ids == ids[dup[0]]).sum())} times; each "
            f"episode must have one row; {REGENERATE}"
        )


def check_totals(meta: pa.Table, where: Path, info: dict[str, object]) -> None:
    """meta/episodes agrees with itself (dataset_to_index - dataset_from_index == length) and with
    info.json's total_episodes / total_frames."""
    ids, lengths = meta["episode_index"].to_numpy(), meta["length"].to_numpy()
    if {"dataset_from_index", "dataset_to_index"} <= set(meta.column_names):
        span = int_column(meta, "dataset_to_index", where) - int_column(meta, "dataset_from_index", where)
        bad = np.nonzero(span != lengths)[0]
        if len(bad):
            e = bad[0]
            raise DatasetError(
                f"{where}: episode {ids[e]} has length {lengths[e]} but dataset_to_index - dataset_from_index "
                f"= {span[e]}; {REGENERATE}"
            )
    for key, have, what in (
        ("total_episodes", len(ids), "episodes"),
        ("total_frames", int(lengths.sum()), "frames (sum of 'length')"),
    ):
        want = info.get(key)
        if want is not None and want != have:
            raise DatasetError(
                f"{where}: lists {have} {what}, meta/info.json says {key} {want}; the dataset is incomplete or "
                f"was edited, {REGENERATE}"
            )


def check_split_coverage(ids: np.ndarray, splits: dict[str, tuple[int, int]], info_path: Path) -> None:
    """Every episode is in some split (reading by split would silently leave the others out)."""
    inside = np.zeros(len(ids), dtype=bool)
    for start, end in splits.values():
        inside |= (ids >= start) & (ids < end)
    if not inside.all():
        out = ids[~inside]
        shown = ", ".join(str(i) for i in out[:5]) + (", ..." if len(out) > 5 else "")
        ranges = ", ".join(f"{n} {a}:{b}" for n, (a, b) in splits.items())
        raise DatasetError(
            f"{info_path}: {len(out)} episode(s) ({shown}) are in no split ({ranges}); extend 'splits' to "
            f"cover them or {REGENERATE}"
        )


def check_tasks(ids: np.ndarray, texts: list[object], file: Path) -> list[str]:
    """meta/tasks.parquet: task_index numbers the tasks 0..N-1 once each, every task a non-empty string."""
    tasks: list[str | None] = [None] * len(ids)
    for t, text in zip(ids.tolist(), texts, strict=True):
        if not 0 <= t < len(ids):
            raise DatasetError(
                f"{file}: task_index {t} is outside 0..{len(ids) - 1}; the {len(ids)} tasks must be numbered "
                f"0..{len(ids) - 1}; {REGENERATE}"
            )
        if tasks[t] is not None:
            raise DatasetError(f"{file}: task_index {t} appears twice; each task must have one row; {REGENERATE}")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(
                f"{file}: task {t} is {text!r}; every task needs a non-empty instruction string; {REGENERATE}"
            )
        tasks[t] = text
    return [t or "" for t in tasks]


def check_task_refs(ep_task: np.ndarray, ids: np.ndarray, num_tasks: int, where: Path) -> None:
    """Each episode's task_index names a row of meta/tasks.parquet."""
    bad = np.nonzero((ep_task < 0) | (ep_task >= num_tasks))[0]
    if len(bad):
        e = bad[0]
        raise DatasetError(
            f"{where}: episode {ids[e]} has task_index {ep_task[e]}, but meta/tasks.parquet has {num_tasks} "
            f"tasks (task_index 0..{num_tasks - 1}); {REGENERATE}"
        )


def check_frame_index(frame: np.ndarray, ep: np.ndarray, starts: np.ndarray, counts: np.ndarray, file: Path) -> None:
    """Rows sorted by (episode, frame): each episode's frame_index runs 0, 1, ..., n-1."""
    want = np.arange(len(frame)) - np.repeat(starts, counts)  # (N,)
    bad = np.nonzero(frame != want)[0]
    if len(bad):
        r = bad[0]
        raise DatasetError(
            f"{file}: episode {ep[r]} has frame_index {frame[r]} where {want[r]} is due (frames must be numbered "
            f"0..n-1, each once); {REGENERATE}"
        )


class RowPlace:
    """Names row ``i`` of a data file: ``file: episode E frame F``."""

    def __init__(self, file: Path, episode: np.ndarray, frame: np.ndarray) -> None:
        self.file, self.episode, self.frame = file, episode, frame

    def __call__(self, i: int) -> str:
        return f"{self.file}: episode {self.episode[i]} frame {self.frame[i]}"


def _numbers(values: np.ndarray, column: str, place: RowPlace) -> np.ndarray:
    if values.dtype == object or not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise DatasetError(
            f"{place.file}: column {column!r} holds {values.dtype} values, expected numbers; {REGENERATE}"
        )
    return values


def check_discrete(values: np.ndarray, spec: ActionSpec | None, place: RowPlace) -> np.ndarray:
    """(N,) or (N, 1) action ids -> (N,) int64, refused unless finite integers in [0, num_actions)."""
    values = _numbers(values, "action", place)
    if values.ndim == 2 and values.shape[1] != 1:
        raise DatasetError(
            f"{place.file}: column 'action' holds {values.shape[1]} values per frame, but the action spec is "
            f"discrete (one id per frame); {REGENERATE}"
        )
    flat = values.reshape(-1)
    if np.issubdtype(flat.dtype, np.floating):
        bad = np.nonzero(~np.isfinite(flat) | (flat != np.round(flat)))[0]
        if len(bad):
            raise DatasetError(
                f"{place(bad[0])}: action is {flat[bad[0]]}, a discrete action must be an integer id; {REGENERATE}"
            )
    ids = flat.astype(np.int64)
    high = spec.num_actions if spec is not None else None
    bad = np.nonzero((ids < 0) | (ids >= high if high is not None else False))[0]
    if len(bad):
        where = f"[0, {high}) (vla_align.action_spec in meta/info.json)" if high is not None else ">= 0"
        raise DatasetError(f"{place(bad[0])}: action id {ids[bad[0]]} is outside {where}; {REGENERATE}")
    return ids


def check_real(values: np.ndarray, column: str, width: int | None, place: RowPlace) -> np.ndarray:
    """(N,) or (N, D) real values -> (N, D) float32, refused unless D == ``width`` and every value is finite
    with a magnitude <= :data:`MAX_ABS_VALUE` (checked on the stored values, before the float32 cast)."""
    values = _numbers(values, column, place)
    values = values.reshape(len(values), -1)  # (N, D)
    if width is not None and values.shape[1] != width:
        raise DatasetError(
            f"{place.file}: column {column!r} holds {values.shape[1]} values per frame, meta/info.json says "
            f"{width}; {REGENERATE}"
        )
    x = values.astype(np.float64, copy=False)
    bad = np.nonzero(~np.isfinite(x) | (np.abs(x) > MAX_ABS_VALUE))
    if len(bad[0]):
        r, d = int(bad[0][0]), int(bad[1][0])
        why = (
            "not finite"
            if not np.isfinite(x[r, d])
            else f"beyond ±{MAX_ABS_VALUE:.2g}, where float32 statistics overflow"
        )
        raise DatasetError(
            f"{place(r)}: {column!r} dimension {d} is {x[r, d]:g} ({why}); fix or drop that episode and {REGENERATE}"
        )
    result: np.ndarray = values.astype(np.float32)
    return result
