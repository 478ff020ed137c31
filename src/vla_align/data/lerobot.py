"""LeRobotDataset v3.0 on disk, read with pyarrow (no ``lerobot`` / ``datasets`` import).

:func:`write_dataset` (re-exported from :mod:`vla_align.data.lerobot_write`) writes it;
:func:`read_dataset` loads a split into one :class:`FrameTable` of decoded frames. Datasets written by
LeRobot itself (no ``vla_align`` key in info.json) read too: the action spec is inferred from the
``action`` feature (int dtype: discrete, else continuous), seeds are -1, success True, env_tasks "".
Cameras stored as mp4 video (LeRobot's default) are decoded with PyAV (:mod:`vla_align.data.video`, the
``video`` extra); several cameras are tiled side by side into one frame (see :func:`read_dataset`).

Every field read is checked before it is used (:mod:`vla_align.data.info_checks` for info.json and paths,
:mod:`vla_align.data.row_checks` for the parquet rows): a malformed dataset raises one
:class:`DatasetError` naming the file, the field, the episode and what to do; nothing is clamped or dropped.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from ..errors import DatasetError
from .episode import ActionSpec, Episode
from .info_checks import (
    ACTION_SPEC_KEY,
    Camera,
    action_spec_from_info,
    check_info,
    check_reachable,
    check_version,
    feature_width,
    is_int,
    parse_splits,
    resolve_inside,
    select_cameras,
)
from .lerobot_write import CODEBASE_VERSION, DATA_PATH, EXTRAS_PATH, TASKS_PATH, write_dataset
from .row_checks import (
    RowPlace,
    check_discrete,
    check_episode_file,
    check_episode_ids,
    check_extras_file,
    check_frame_index,
    check_real,
    check_split_coverage,
    check_task_refs,
    check_tasks,
    check_totals,
    int_column,
)
from .split_file import episodes_of_split
from .video import VideoReader

__all__ = ["FrameTable", "episode_at", "read_dataset", "read_episodes", "read_info", "write_dataset"]


@dataclass
class FrameTable:
    """All frames of the selected episodes, concatenated, plus per-episode metadata."""

    root: Path
    frames: np.ndarray  # (F, H, W, 3) uint8
    actions: np.ndarray  # (F,) int64 or (F, A) float32
    state: np.ndarray | None  # (F, S) float32
    episode_start: np.ndarray  # (E,) int64 row offset of each episode in the arrays above
    episode_length: np.ndarray  # (E,) int64
    episode_ids: np.ndarray  # (E,) int64 original episode_index values
    instructions: list[str]  # (E,) task string of each episode
    task_index: np.ndarray  # (E,) int64 index into ``tasks``
    tasks: list[str]  # every distinct task string of the whole dataset, by task_index
    seeds: np.ndarray  # (E,) int64 (-1 when unknown)
    success: np.ndarray  # (E,) bool
    env_tasks: list[str]  # (E,) e.g. "BabyAI-GoToLocal-v0" ("" when unknown)
    fps: float
    action_spec: ActionSpec
    info: dict[str, Any]  # meta/info.json; a foreign dataset gets an inferred "vla_align" entry
    cameras: tuple[str, ...] = ()  # the camera features read, tiled left to right in ``frames``
    row_weight: np.ndarray | None = None  # (F,) sampling weight of each row for training; None = uniform

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ids)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.frames.shape[1:]
        return int(h), int(w), int(c)


def read_info(path: str | Path) -> dict[str, Any]:
    """meta/info.json of the dataset at ``path``, checked to be LeRobot v3.0 with well-typed keys."""
    root = Path(path)
    info_path = root / "meta" / "info.json"
    check_reachable(root)
    check_reachable(info_path)
    if not info_path.is_file():
        what = "does not exist" if not root.exists() else "not a vla-align/LeRobot dataset (meta/info.json missing)"
        raise DatasetError(f"{root}: {what}; generate one with `vla-align data babyai --out {root}`")
    resolve_inside(root, "meta/info.json", "meta/info.json")
    try:
        info = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise DatasetError(f"{info_path}: not valid JSON ({e}); regenerate the dataset") from None
    except OSError as e:
        raise DatasetError(f"{info_path}: cannot be read ({e.strerror or e}); check its permissions") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{info_path}: expected a JSON object; regenerate the dataset")
    check_version(info, info_path, CODEBASE_VERSION)
    for key in ("fps", "features"):
        if key not in info:
            raise DatasetError(f"{info_path}: key {key!r} missing; regenerate the dataset")
    check_info(info, info_path)
    return info


def _read_parquet(root: Path, rel: str | Path, columns: list[str] | None = None, what: str = "") -> pa.Table:
    """The parquet file ``root / rel`` (confined to ``root``), with ``columns`` when given."""
    file = resolve_inside(root, rel, "this parquet file")
    if not file.is_file():
        raise DatasetError(f"{file}: missing{what}; regenerate the dataset")
    try:
        schema = pq.read_schema(file)
        if columns is not None:
            for c in columns:
                if c not in schema.names:
                    raise DatasetError(
                        f"{file}: column {c!r} missing (has: {', '.join(schema.names)}); regenerate the dataset"
                    )
        return pq.read_table(file, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{file}: cannot be read as parquet ({e}); regenerate the dataset") from None


@dataclass
class _Canvas:
    """Where decoded frames go: ``frames`` (F, h, n*w, 3); camera ``c`` fills columns [c*w, (c+1)*w)."""

    cams: list[Camera]
    frames: np.ndarray  # (F, h, n*w, 3) uint8
    size: tuple[int, int]  # (h, w) of one camera's tile

    def tile(self, c: int, start: int, n: int) -> np.ndarray:
        """The (n, h, w, 3) view of camera ``c`` for rows [start, start + n)."""
        w = self.size[1]
        view: np.ndarray = self.frames[start : start + n, :, c * w : (c + 1) * w]
        return view


def _tile_size(cams: list[Camera], image_size: int | None, info_path: Path) -> tuple[int, int]:
    """(h, w) of one camera's tile: ``image_size`` square when given, else the cameras' own (equal) size."""
    if image_size is not None:
        return image_size, image_size
    for cam in cams[1:]:
        if cam.shape != cams[0].shape:
            raise DatasetError(
                f"{info_path}: cameras {cams[0].key!r} ({cams[0].shape[0]}x{cams[0].shape[1]}) and {cam.key!r} "
                f"({cam.shape[0]}x{cam.shape[1]}) differ in size; tiling them needs one size: set data.image_size "
                "(every camera is resized to it) or choose cameras of one size"
            )
    return cams[0].shape


def _action_hint(info: dict[str, Any], info_path: Path) -> tuple[str, ActionSpec | None, int | None]:
    """Before reading rows: the action kind, our stored spec (None for LeRobot's datasets) and the
    number of values per frame info.json promises (None when it says nothing)."""
    spec = action_spec_from_info(info, info_path)
    width = feature_width(info, "action")
    if spec is None:
        dtype = str(info["features"].get("action", {}).get("dtype", ""))
        return ("discrete" if dtype.startswith("int") else "continuous"), None, width
    if spec.kind == "continuous" and width is not None and width != spec.dim:
        raise DatasetError(
            f"{info_path}: features['action'] has {width} values per frame, vla_align.action_spec has dim "
            f"{spec.dim}; fix meta/info.json or regenerate the dataset"
        )
    return spec.kind, spec, spec.dim if spec.kind == "continuous" else width


def _infer_action_spec(info: dict[str, Any], spec: ActionSpec | None, actions: np.ndarray) -> ActionSpec:
    """Our own spec from info.json's "vla_align" key, else inferred from the ``action`` feature."""
    if spec is not None:
        return spec
    feat = info["features"].get("action", {})
    names = feat.get("names")
    if isinstance(names, dict):  # LeRobot sometimes nests names, e.g. {"motors": [...]}
        names = next(iter(names.values()), None)
    if actions.ndim == 1:  # discrete ids, checked to be >= 0; the vocabulary from features.action.names
        vocab = [str(n) for n in names] if isinstance(names, list) and len(names) > actions.max(initial=0) else []
        count = max(2, len(vocab), int(actions.max(initial=0)) + 1)
        return ActionSpec(kind="discrete", num_actions=count, names=vocab if len(vocab) == count else [])
    dim = int(actions.shape[1])
    names = [str(n) for n in names] if isinstance(names, list) and len(names) == dim else []
    return ActionSpec(kind="continuous", dim=dim, names=names)


def _numeric(col: pa.ChunkedArray, file: Path, name: str) -> np.ndarray:
    """A scalar column as (N,), a list column as (N, D); null rows and ragged lists are refused."""
    arr = col.combine_chunks()
    if arr.null_count:
        row = int(np.nonzero(arr.is_null().to_numpy(zero_copy_only=False))[0][0])
        raise DatasetError(f"{file}: column {name!r} is empty (null) in row {row}; regenerate the dataset")
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        if pa.types.is_fixed_size_list(arr.type):
            width = arr.type.list_size
        else:
            sizes = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
            if len(sizes) and (sizes != sizes[0]).any():
                row = int(np.argmax(sizes != sizes[0]))
                raise DatasetError(
                    f"{file}: column {name!r} has {sizes[row]} values in row {row} but {sizes[0]} in row 0; "
                    "every row needs the same number; regenerate the dataset"
                )
            width = int(sizes[0]) if len(sizes) else 0
        result: np.ndarray = arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), width)
        return result
    column: np.ndarray = arr.to_numpy(zero_copy_only=False)
    return column


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _open_image(data: bytes, shape: tuple[int, ...], where: str) -> Image.Image:
    """Decode one encoded image to RGB, after checking that its header's size is ``shape`` (H, W, 3):
    a header claiming a huge size is refused before any pixel is decompressed.

    8-bit RGB non-interlaced PNGs (what we write) skip Pillow's Python-level chunk parsing: their IDAT
    stream goes straight to Pillow's zip decoder, ~2.5x faster for small frames. Anything else
    (JPEG, palette, RGBA, interlaced PNG) takes ``Image.open``.
    """
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        w, h, depth, color, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
        _check_size((h, w, 3), shape, where)
        if depth == 8 and color == 2 and interlace == 0:
            pos, idat = 8, []
            while pos + 8 <= len(data):
                n, kind = struct.unpack_from(">I4s", data, pos)
                if kind == b"IDAT":
                    idat.append(data[pos + 8 : pos + 8 + n])
                pos += 12 + n  # length, type, payload, crc
            return Image.frombytes("RGB", (w, h), b"".join(idat), "zip", "RGB")
    im: Image.Image = Image.open(io.BytesIO(data))  # reads the header only
    _check_size((im.height, im.width, 3), shape, where)
    return im if im.mode == "RGB" else im.convert("RGB")


def _check_size(got: tuple[int, ...], shape: tuple[int, ...], where: str) -> None:
    if got != shape:
        raise DatasetError(f"{where} is {got}, info.json says {shape}; regenerate the dataset")


def _decode_into(out: np.ndarray, images: list[bytes | None], where: str, shape: tuple[int, ...]) -> None:
    """Decode encoded images of ``shape`` (H, W, 3), checked, into ``out`` (N, h, w, 3): box-resampled
    with Pillow when (h, w) differs from (H, W)."""
    size = (out.shape[2], out.shape[1])  # Pillow's (width, height)
    for i, data in enumerate(images):
        if data is None:
            raise DatasetError(f"{where}: frame {i} has no embedded image bytes; re-export with embedded images")
        try:
            im = _open_image(data, shape, f"{where}: frame {i}")
            if im.size != size:
                im = im.resize(size, Image.Resampling.BOX)
            pixels = im.tobytes()
        except (OSError, ValueError, struct.error, Image.DecompressionBombError) as e:
            raise DatasetError(f"{where}: frame {i} cannot be decoded ({e}); regenerate the dataset") from None
        out[i] = np.frombuffer(pixels, dtype=np.uint8).reshape(out.shape[1:])


def _episode_index(
    root: Path, info: dict[str, Any], split: str | None, max_episodes: int | None, splits_file: str = ""
) -> tuple[pa.Table, pa.Table]:
    """All meta/episodes rows and those of the selected episodes, both sorted by episode_index and checked."""
    ep_dir = root / "meta" / "episodes"
    check_reachable(ep_dir)
    ep_files = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise DatasetError(f"{ep_dir}: no episode parquet files; regenerate the dataset")
    tables = []
    for f in ep_files:
        table = _read_parquet(root, f.relative_to(root))
        # Like LeRobot's load_episodes, leave out the stats/<feature>/<stat> columns: unused here, and their
        # types differ between LeRobot releases (integer or float min / max), so the files would not concat.
        tables.append(table.select([c for c in table.column_names if not c.startswith("stats/")]))
        check_episode_file(tables[-1], f)
    try:
        meta = pa.concat_tables(tables, promote_options="default").sort_by("episode_index")
    except pa.ArrowException as e:
        raise DatasetError(f"{ep_dir}: its files have conflicting columns ({e}); regenerate the dataset") from None
    ids = meta["episode_index"].to_numpy()
    check_episode_ids(ids, ep_dir)
    keep = np.arange(len(ids))
    if split is not None:
        info_path = root / "meta" / "info.json"
        splits = parse_splits(info, info_path)
        check_split_coverage(ids, splits, info_path)
        keep = episodes_of_split(root, splits, split, ids, splits_file)  # a split file beside it, else info.json
    if max_episodes is not None:
        keep = keep[: max(max_episodes, 0)]
    if len(keep) == 0:
        which = f"split {split!r}" if split is not None else "the dataset"
        raise DatasetError(f"{root}: {which} has no episodes; choose another split or regenerate the dataset")
    return meta, meta.take(pa.array(keep))


def _tasks(root: Path) -> list[str]:
    """meta/tasks.parquet as a list indexed by task_index. The task string is the pandas index: a ``task``
    column (pandas-indexed as LeRobot 0.6 writes, or a plain column as we wrote before), or an unnamed index
    stored as ``__index_level_0__``."""
    table, file = _read_parquet(root, TASKS_PATH), root / TASKS_PATH
    text_col = "task" if "task" in table.column_names else "__index_level_0__"  # pandas-written index
    if text_col not in table.column_names:
        raise DatasetError(f"{file}: column 'task' missing; regenerate the dataset")
    ids = int_column(table, "task_index", file)
    texts = table[text_col]
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise DatasetError(f"{file}: column {text_col!r} holds {texts.type}, expected strings; regenerate the dataset")
    return check_tasks(ids, texts.to_pylist(), file)


@dataclass
class _Extras:
    """Our per-episode fields of the episodes read."""

    seeds: np.ndarray  # (E,) int64, -1 when unknown
    success: np.ndarray  # (E,) bool, True when unknown
    env_tasks: list[str]  # (E,) "" when unknown


def _episode_extras(root: Path, info: dict[str, Any], all_meta: pa.Table, meta: pa.Table) -> _Extras:
    """Seed, success and env_task of the episodes of ``meta``: from meta/vla_align/episodes.parquet, else
    from the meta/episodes columns of datasets written before it existed. LeRobot's own datasets have none
    (unknown, silently); a dataset of ours whose side file a LeRobot tool dropped or outdated (its episodes
    differ from meta/episodes) gets one warning and carries on without them."""
    ids = meta["episode_index"].to_numpy()  # (E,)
    n, file = len(ids), root / EXTRAS_PATH
    unknown = _Extras(np.full(n, -1, dtype=np.int64), np.ones(n, dtype=bool), [""] * n)
    check_reachable(file)
    if file.exists() or file.is_symlink():
        table = _read_parquet(root, EXTRAS_PATH)
        side = check_extras_file(table, file)  # (K,)
        everyone = all_meta["episode_index"].to_numpy()
        if len(side) == len(everyone) and np.array_equal(np.sort(side), np.sort(everyone)):
            order = np.argsort(side)
            rows = table.take(pa.array(order[np.searchsorted(side[order], ids)]))
            success = rows["success"].to_numpy(zero_copy_only=False).astype(bool)
            return _Extras(int_column(rows, "seed", file), success, [str(x) for x in rows["env_task"].to_pylist()])
        why = f"its {len(side)} episodes are not the {len(everyone)} of meta/episodes"
    elif "seed" in meta.column_names:  # written before the side file: the columns sit in meta/episodes
        col = meta.column_names
        return _Extras(
            meta["seed"].to_numpy().astype(np.int64),
            meta["success"].to_numpy(zero_copy_only=False).astype(bool) if "success" in col else unknown.success,
            [str(x or "") for x in meta["env_task"].to_pylist()] if "env_task" in col else unknown.env_tasks,
        )
    elif "vla_align" in info or ACTION_SPEC_KEY in (info["features"].get("action", {}).get("info") or {}):
        why = "it is missing"
    else:
        return unknown  # a dataset LeRobot wrote: it never had them
    warnings.warn(
        f"{file}: {why} (a LeRobot tool edited this dataset?); episode seeds, success and env names are "
        "unknown, so closed-loop evaluation cannot replay these episodes",
        stacklevel=3,
    )
    return unknown


def _file_rows(table: pa.Table, file: Path, ids: np.ndarray, lengths: np.ndarray) -> tuple[pa.Table, np.ndarray]:
    """The rows of episodes ``ids`` (sorted) in one data file, ordered by (episode, frame) and checked
    against meta/episodes' ``lengths``; returns them and each episode's first row."""
    ep_col = int_column(table, "episode_index", file, low=0)
    frame_col = int_column(table, "frame_index", file)
    rows = np.nonzero(np.isin(ep_col, ids))[0]
    rows = rows[np.lexsort((frame_col[rows], ep_col[rows]))]  # by (episode, frame)
    table, ep_col = table.take(pa.array(rows)), ep_col[rows]
    lo, hi = np.searchsorted(ep_col, ids, "left"), np.searchsorted(ep_col, ids, "right")  # (E,)
    bad = np.nonzero(hi - lo != lengths)[0]
    if len(bad):
        e = bad[0]
        raise DatasetError(
            f"{file}: episode {ids[e]} has {hi[e] - lo[e]} frames, meta/episodes says {lengths[e]}; "
            "regenerate the dataset"
        )
    check_frame_index(frame_col[rows], ep_col, lo, lengths, file)
    return table, lo


def _image_bytes(table: pa.Table, key: str, file: Path) -> list[bytes | None]:
    """The encoded images of column ``key`` (Hugging Face ``Image``: struct<bytes, path>)."""
    col = table[key].combine_chunks()
    index = col.type.get_field_index("bytes") if pa.types.is_struct(col.type) else -1
    if index < 0 or not (pa.types.is_binary(col.type[index].type) or pa.types.is_large_binary(col.type[index].type)):
        raise DatasetError(f"{file}: column {key!r} is {col.type}, expected struct<bytes: binary, path: string>")
    images: list[bytes | None] = col.field("bytes").to_pylist()
    return images


@dataclass
class _Rows:
    """What :func:`_load_rows` reads besides the frames: per selected episode."""

    actions: list[np.ndarray]  # (n,) int64 ids or (n, A) float32 each
    state: list[np.ndarray]  # (n, S) float32 each (empty when the dataset has no state)
    task: np.ndarray  # (E,) int64 task_index of each episode's first frame


def _seconds(meta: pa.Table, name: str, ep_dir: Path) -> np.ndarray:
    """Column ``name`` of meta/episodes as (E,) float64 seconds, refused unless it holds numbers."""
    col = meta[name]
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise DatasetError(f"{ep_dir}: column {name!r} holds {col.type}, expected seconds as numbers; regenerate it")
    seconds: np.ndarray = _numeric(col, ep_dir, name).astype(np.float64).reshape(-1)
    return seconds


def _video_meta(meta: pa.Table, cams: list[Camera], root: Path) -> dict[str, list[tuple[int, int, float, float]]]:
    """Per video camera: each selected episode's (chunk_index, file_index, from_timestamp, to_timestamp) in
    meta/episodes (to_timestamp inf when the column is absent)."""
    ep_dir, out = root / "meta" / "episodes", {}
    for cam in (c for c in cams if c.video):
        cols = [f"videos/{cam.key}/{k}" for k in ("chunk_index", "file_index", "from_timestamp")]
        chunk, file = (int_column(meta, c, ep_dir, low=0) for c in cols[:2])
        if cols[2] not in meta.column_names:
            raise DatasetError(
                f"{ep_dir}: column {cols[2]!r} missing (camera {cam.key!r} is stored as video); regenerate the dataset"
            )
        start = _seconds(meta, cols[2], ep_dir)  # (E,)
        bad = np.nonzero(~np.isfinite(start) | (start < 0))[0]
        if len(bad):
            raise DatasetError(
                f"{ep_dir}: {cols[2]!r} of episode {meta['episode_index'][int(bad[0])]} is {start[bad[0]]}; "
                "it must be a time >= 0 in seconds; regenerate the dataset"
            )
        end_col = f"videos/{cam.key}/to_timestamp"
        end = np.full(len(start), np.inf)
        if end_col in meta.column_names:
            end = np.nan_to_num(_seconds(meta, end_col, ep_dir), nan=np.inf)
        out[cam.key] = list(zip(chunk.tolist(), file.tolist(), start.tolist(), end.tolist(), strict=True))
    return out


@dataclass
class _Source:
    """What :func:`_episode_frames` needs to fill one episode's rows of the canvas."""

    root: Path
    info: dict[str, Any]
    canvas: _Canvas
    videos: dict[str, list[tuple[int, int, float, float]]]  # see :func:`_video_meta`
    reader: VideoReader | None  # None when no chosen camera is stored as video


def _timestamps(table: pa.Table, rows: slice, file: Path, eid: int, fps: float) -> np.ndarray:
    """The ``timestamp`` column of ``rows`` as (n,) float64 seconds, refused unless finite numbers >= 0 that
    step by one frame period (1 / ``fps``, within half a period; LeRobot's own check is stricter)."""
    col = table["timestamp"]
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise DatasetError(f"{file}: column 'timestamp' holds {col.type}, expected seconds as numbers; regenerate it")
    stamps = _numeric(col.slice(rows.start, rows.stop - rows.start), file, "timestamp").astype(np.float64)
    bad = np.nonzero(~np.isfinite(stamps) | (stamps < 0))[0]
    if len(bad):
        raise DatasetError(
            f"{file}: episode {eid} frame {bad[0]}: 'timestamp' is {stamps[bad[0]]}; it must be seconds >= 0 from "
            "the episode start; regenerate the dataset"
        )
    period = 1.0 / fps
    off = np.nonzero(np.abs(np.diff(stamps) - period) > period / 2)[0]
    if len(off):
        i = int(off[0])
        raise DatasetError(
            f"{file}: episode {eid} frames {i}..{i + 1}: 'timestamp' goes from {stamps[i]:.4f} to "
            f"{stamps[i + 1]:.4f} s, not one frame period later (1/fps = {period:.4f} s with 'fps' {fps:g} in "
            "meta/info.json); fix 'fps' or regenerate the dataset"
        )
    return stamps


def _episode_frames(src: _Source, table: pa.Table, file: Path, e: int, eid: int, rows: slice, start: int) -> None:
    """Every chosen camera's frames of episode ``eid`` (rows ``rows`` of ``table``) into the canvas."""
    n, cams = rows.stop - rows.start, src.canvas.cams
    for c, cam in enumerate(cams):
        out, named = src.canvas.tile(c, start, n), f", camera {cam.key!r}" if len(cams) > 1 else ""
        if not cam.video:
            images = _image_bytes(table.slice(rows.start, n), cam.key, file)
            _decode_into(out, images, f"{file}: episode {eid}{named}", (*cam.shape, 3))
            continue
        chunk, file_index, t0, t1 = src.videos[cam.key][e]
        rel = str(src.info["video_path"]).format(video_key=cam.key, chunk_index=chunk, file_index=file_index)
        mp4 = resolve_inside(src.root, rel, "this video file")
        if not mp4.is_file():
            raise DatasetError(
                f"{mp4}: missing (meta/episodes puts episode {eid} of camera {cam.key!r} there); regenerate the dataset"
            )
        stamps = _timestamps(table, rows, file, eid, float(src.info["fps"]))
        where = f"episode {eid}, camera {cam.key!r}"
        assert src.reader is not None  # set whenever a camera is stored as video
        if len(stamps) and t0 + stamps[-1] > t1 + src.reader.tol:
            raise DatasetError(
                f"{file}: {where}: its last frame's 'timestamp' {stamps[-1]:.4f} s lies past the episode's end in the "
                f"video (videos/{cam.key}/to_timestamp - from_timestamp = {t1 - t0:.4f} s in meta/episodes); "
                "regenerate the dataset"
            )
        src.reader.read(mp4, t0 + stamps, out, cam.shape, where)


def _load_rows(root: Path, info: dict[str, Any], meta: pa.Table, canvas: _Canvas, starts: np.ndarray) -> _Rows:
    """Decode the selected episodes' camera frames into ``canvas``; read and check their actions, state, task."""
    videos = _video_meta(meta, canvas.cams, root)
    with VideoReader(float(info["fps"])) if videos else contextlib.nullcontext() as reader:
        return _read_files(_Source(root, info, canvas, videos, reader), meta, starts)


def _read_files(src: _Source, meta: pa.Table, starts: np.ndarray) -> _Rows:
    """:func:`_load_rows` for each data file in turn."""
    root, info, canvas = src.root, src.info, src.canvas
    ids, lengths = meta["episode_index"].to_numpy(), meta["length"].to_numpy()  # (E,), (E,)
    kind, spec, action_width = _action_hint(info, root / "meta" / "info.json")
    state_key = "observation.state" if "observation.state" in info["features"] else None
    columns = ["episode_index", "frame_index", "task_index", "action", *([state_key] if state_key else [])]
    columns += [c.key for c in canvas.cams if not c.video] + (["timestamp"] if src.videos else [])
    by_file: dict[tuple[int, int], list[int]] = {}
    for e, loc in enumerate(
        zip(meta["data/chunk_index"].to_pylist(), meta["data/file_index"].to_pylist(), strict=True)
    ):
        by_file.setdefault(loc, []).append(e)
    out = _Rows([np.empty(0)] * len(ids), [np.empty(0)] * len(ids), np.zeros(len(ids), dtype=np.int64))
    for (chunk, file_index), eps in sorted(by_file.items()):
        rel = info.get("data_path", DATA_PATH).format(chunk_index=chunk, file_index=file_index)
        table = _read_parquet(root, rel, columns, what=f" (meta/episodes puts episode {ids[eps[0]]} there)")
        file = root / rel
        table, lo = _file_rows(table, file, ids[eps], lengths[eps])
        place = RowPlace(file, table["episode_index"].to_numpy(), table["frame_index"].to_numpy())
        raw = _numeric(table["action"], file, "action")  # (N,) or (N, A)
        acts = (
            check_discrete(raw, spec, place) if kind == "discrete" else check_real(raw, "action", action_width, place)
        )
        states = None
        if state_key is not None:
            raw_state = _numeric(table[state_key], file, state_key)
            states = check_real(raw_state, state_key, feature_width(info, state_key), place)  # (N, S)
        task_col = int_column(table, "task_index", file)
        for e, first in zip(eps, lo, strict=True):
            rows = slice(int(first), int(first + lengths[e]))
            _episode_frames(src, table, file, e, int(ids[e]), rows, int(starts[e]))
            out.actions[e] = acts[rows]
            if states is not None:
                out.state[e] = states[rows]
            out.task[e] = task_col[first]
    return out


def _allocate_frames(count: int, shape: tuple[int, int, int], root: Path) -> np.ndarray:
    """An uninitialised (count, H, W, 3) uint8 array, or a clear error when memory does not allow it."""
    try:
        return np.empty((count, *shape), dtype=np.uint8)
    except MemoryError:
        gib = count * shape[0] * shape[1] * 3 / 2**30
        raise DatasetError(
            f"{root}: meta/episodes gives the episodes read {count} frames of {shape}, {gib:.1f} GiB, more memory "
            "than is available; if their 'length' is wrong regenerate the dataset, else read fewer episodes "
            "(--max-episodes) or downscale the images"
        ) from None


def _make_canvas(
    root: Path, info: dict[str, Any], cameras: Sequence[str], image_size: int | None, count: int
) -> _Canvas:
    """The chosen cameras (checked) and an uninitialised frame array for ``count`` rows of their tiles."""
    info_path = root / "meta" / "info.json"
    if image_size is not None and not (is_int(image_size) and image_size >= 1):
        raise DatasetError(f"image_size is {image_size!r}; it must be a positive number of pixels per side")
    cams, ignored = select_cameras(info, info_path, cameras)
    if ignored and not cameras:
        warnings.warn(
            f"{root}: reading camera {cams[0].key!r} only, not {', '.join(map(repr, ignored))}; "
            "set data.cameras to choose or tile several",
            stacklevel=3,
        )
    h, w = _tile_size(cams, image_size, info_path)
    return _Canvas(cams, _allocate_frames(count, (h, w * len(cams), 3), root), (h, w))


def read_dataset(
    path: str | Path,
    split: str | None = None,
    max_episodes: int | None = None,
    splits: str = "",
    cameras: Sequence[str] = (),
    image_size: int | None = None,
) -> FrameTable:
    """Load the episodes of ``split`` (all when None; the first ``max_episodes`` when set) into memory;
    ``splits`` names the split file that defines the splits (see :mod:`vla_align.data.split_file`).

    ``cameras`` are the image / video features to read (empty: the first camera in info.json order, with a
    warning naming any others); several are tiled side by side, left to right in the given order, into one
    frame of (h, n * w). ``image_size`` box-resamples every camera to ``image_size`` x ``image_size`` while
    decoding (aspect ratio not kept), so memory is that of the frames at training resolution; None keeps the
    stored size (then the cameras must share one size).

    Every field read is checked (see :mod:`vla_align.data.info_checks`, :mod:`vla_align.data.row_checks`):
    a malformed dataset raises one :class:`DatasetError` naming the file, field, episode and fix."""
    root = Path(path)
    info = read_info(root)
    all_meta, meta = _episode_index(root, info, split, max_episodes, splits)
    tasks = _tasks(root)
    ids = meta["episode_index"].to_numpy().astype(np.int64)  # (E,)
    lengths = meta["length"].to_numpy().astype(np.int64)  # (E,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (E,)
    canvas = _make_canvas(root, info, cameras, image_size, int(lengths.sum()))  # frames (F, h, n*w, 3)
    rows = _load_rows(root, info, meta, canvas, starts)
    check_task_refs(rows.task, ids, len(tasks), root / "data")
    check_totals(all_meta, root / "meta" / "episodes", info)
    actions = np.concatenate(rows.actions)  # (F,) int64 or (F, A) float32
    spec = _infer_action_spec(info, action_spec_from_info(info, root / "meta" / "info.json"), actions)
    state = np.concatenate(rows.state) if "observation.state" in info["features"] else None  # (F, S)
    extras = _episode_extras(root, info, all_meta, meta)
    if "vla_align" not in info:
        info = {**info, "vla_align": {"action_spec": spec.to_dict(), "source": "lerobot"}}
    return FrameTable(
        root=root,
        frames=canvas.frames,
        actions=actions,
        state=state,
        episode_start=starts,
        episode_length=lengths,
        episode_ids=ids,
        instructions=[tasks[t] for t in rows.task],
        task_index=rows.task,
        tasks=tasks,
        seeds=extras.seeds,
        success=extras.success,
        env_tasks=extras.env_tasks,
        fps=float(info["fps"]),
        action_spec=spec,
        info=info,
        cameras=tuple(c.key for c in canvas.cams),
    )


def episode_at(t: FrameTable, e: int) -> Episode:
    """Episode ``e`` (a position) of ``t`` as an :class:`Episode` (views of the table's arrays, no copy)."""
    rows = slice(int(t.episode_start[e]), int(t.episode_start[e] + t.episode_length[e]))
    return Episode(
        frames=t.frames[rows],
        actions=t.actions[rows],
        instruction=t.instructions[e],
        task=t.env_tasks[e],
        fps=t.fps,
        seed=int(t.seeds[e]),
        success=bool(t.success[e]),
        state=None if t.state is None else t.state[rows],
    )


def read_episodes(path: str | Path, split: str | None = None) -> list[Episode]:
    """The episodes of ``split`` as :class:`Episode` objects (round-trip tests, small datasets)."""
    t = read_dataset(path, split)
    return [episode_at(t, e) for e in range(t.num_episodes)]
