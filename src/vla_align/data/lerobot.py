"""LeRobotDataset v3.0 on disk, read with pyarrow (no ``lerobot`` / ``datasets`` import).

:func:`write_dataset` (re-exported from :mod:`vla_align.data.lerobot_write`) writes it;
:func:`read_dataset` loads a split into one :class:`FrameTable` of decoded frames. Datasets written by
LeRobot itself (no ``vla_align`` key in info.json) read too: the action spec is inferred from the
``action`` feature (int dtype: discrete, else continuous), seeds are -1, success True, env_tasks "".
Cameras stored as mp4 video are not decoded yet (a clear :class:`DatasetError` says so).

Every field read is checked before it is used (:mod:`vla_align.data.info_checks` for info.json and paths,
:mod:`vla_align.data.row_checks` for the parquet rows): a malformed dataset raises one
:class:`DatasetError` naming the file, the field, the episode and what to do; nothing is clamped or dropped.
"""

from __future__ import annotations

import io
import json
import struct
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
    action_spec_from_info,
    check_info,
    check_reachable,
    feature_width,
    parse_splits,
    resolve_inside,
)
from .lerobot_write import CODEBASE_VERSION, DATA_PATH, IMAGE_KEY, write_dataset
from .row_checks import (
    RowPlace,
    check_discrete,
    check_episode_file,
    check_episode_ids,
    check_frame_index,
    check_real,
    check_split_coverage,
    check_task_refs,
    check_tasks,
    check_totals,
    int_column,
)

__all__ = ["FrameTable", "read_dataset", "read_episodes", "read_info", "write_dataset"]


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
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise DatasetError(
            f"{info_path}: codebase_version is {version!r}, only {CODEBASE_VERSION!r} is supported; "
            "convert it with LeRobot's v3.0 conversion script or regenerate it"
        )
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


def _image_feature(info: dict[str, Any], info_path: Path) -> tuple[str, tuple[int, int, int]]:
    """The camera to read (``observation.image`` first, else the first image feature) and its (H, W, 3)."""
    cams = {k: f for k, f in info["features"].items() if f["dtype"] in ("image", "video")}
    images = [k for k, f in cams.items() if f["dtype"] == "image"]
    if not images:
        if cams:
            raise DatasetError(
                f"{info_path}: camera {next(iter(cams))!r} is stored as mp4 video; video decoding "
                "is not supported yet, re-export the dataset with images (dtype 'image')"
            )
        raise DatasetError(f"{info_path}: no image feature in 'features'; a dataset needs a camera")
    key = IMAGE_KEY if IMAGE_KEY in images else images[0]
    shape, names = list(cams[key]["shape"]), cams[key].get("names") or []
    if len(shape) == 3 and list(names)[:1] == ["channels"]:
        shape = shape[1:] + shape[:1]
    if len(shape) != 3 or shape[2] != 3:
        raise DatasetError(f"{info_path}: feature {key!r} has shape {shape}; expected [height, width, 3]")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and shape[0] * shape[1] > limit:
        raise DatasetError(
            f"{info_path}: feature {key!r} has shape {shape}, {shape[0] * shape[1]:,} pixels per frame, more than "
            f"Pillow's limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); fix the shape or downscale the images"
        )
    return key, (int(shape[0]), int(shape[1]), 3)


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
    if actions.ndim == 1:  # discrete ids, checked to be >= 0
        return ActionSpec(kind="discrete", num_actions=max(2, int(actions.max(initial=0)) + 1))
    names = feat.get("names")
    if isinstance(names, dict):  # LeRobot sometimes nests names, e.g. {"motors": [...]}
        names = next(iter(names.values()), None)
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


def _decode_into(out: np.ndarray, images: list[bytes | None], where: str) -> None:
    """Decode encoded images into ``out`` (N, H, W, 3), checking each shape."""
    shape = out.shape[1:]
    for i, data in enumerate(images):
        if data is None:
            raise DatasetError(f"{where}: frame {i} has no embedded image bytes; re-export with embedded images")
        try:
            im = _open_image(data, shape, f"{where}: frame {i}")
        except (OSError, ValueError, struct.error, Image.DecompressionBombError) as e:
            raise DatasetError(f"{where}: frame {i} cannot be decoded ({e}); regenerate the dataset") from None
        out[i] = np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(shape)


def _episode_index(
    root: Path, info: dict[str, Any], split: str | None, max_episodes: int | None
) -> tuple[pa.Table, pa.Table]:
    """All meta/episodes rows and those of the selected episodes, both sorted by episode_index and checked."""
    ep_dir = root / "meta" / "episodes"
    check_reachable(ep_dir)
    ep_files = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise DatasetError(f"{ep_dir}: no episode parquet files; regenerate the dataset")
    tables = []
    for f in ep_files:
        tables.append(_read_parquet(root, f.relative_to(root)))
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
        if split not in splits:
            raise DatasetError(f"split {split!r} not in {root} (has: {', '.join(splits) or 'no splits'})")
        check_split_coverage(ids, splits, info_path)
        start, end = splits[split]
        keep = np.nonzero((ids >= start) & (ids < end))[0]
    if max_episodes is not None:
        keep = keep[: max(max_episodes, 0)]
    if len(keep) == 0:
        which = f"split {split!r}" if split is not None else "the dataset"
        raise DatasetError(f"{root}: {which} has no episodes; choose another split or regenerate the dataset")
    return meta, meta.take(pa.array(keep))


def _tasks(root: Path) -> list[str]:
    """meta/tasks.parquet as a list indexed by task_index."""
    rel = Path("meta") / "tasks.parquet"
    table, file = _read_parquet(root, rel), root / rel
    text_col = "task" if "task" in table.column_names else "__index_level_0__"  # pandas-written index
    if text_col not in table.column_names:
        raise DatasetError(f"{file}: column 'task' missing; regenerate the dataset")
    ids = int_column(table, "task_index", file)
    texts = table[text_col]
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise DatasetError(f"{file}: column {text_col!r} holds {texts.type}, expected strings; regenerate the dataset")
    return check_tasks(ids, texts.to_pylist(), file)


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


def _load_rows(
    root: Path, info: dict[str, Any], meta: pa.Table, image_key: str, frames: np.ndarray, starts: np.ndarray
) -> _Rows:
    """Decode the selected episodes' images into ``frames``; read and check their actions, state and task."""
    ids, lengths = meta["episode_index"].to_numpy(), meta["length"].to_numpy()  # (E,), (E,)
    kind, spec, action_width = _action_hint(info, root / "meta" / "info.json")
    state_key = "observation.state" if "observation.state" in info["features"] else None
    columns = ["episode_index", "frame_index", "task_index", "action", *([state_key] if state_key else []), image_key]
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
        images = _image_bytes(table, image_key, file)
        for e, first in zip(eps, lo, strict=True):
            rows = slice(first, first + lengths[e])
            _decode_into(frames[starts[e] : starts[e] + lengths[e]], images[rows], f"{file}: episode {ids[e]}")
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


def read_dataset(path: str | Path, split: str | None = None, max_episodes: int | None = None) -> FrameTable:
    """Load the episodes of ``split`` (all when None; the first ``max_episodes`` when set) into memory.

    Every field read is checked (see :mod:`vla_align.data.info_checks`, :mod:`vla_align.data.row_checks`):
    a malformed dataset raises one :class:`DatasetError` naming the file, field, episode and fix."""
    root = Path(path)
    info = read_info(root)
    image_key, image_shape = _image_feature(info, root / "meta" / "info.json")
    all_meta, meta = _episode_index(root, info, split, max_episodes)
    tasks = _tasks(root)
    ids = meta["episode_index"].to_numpy().astype(np.int64)  # (E,)
    lengths = meta["length"].to_numpy().astype(np.int64)  # (E,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (E,)
    frames = _allocate_frames(int(lengths.sum()), image_shape, root)  # (F, H, W, 3)
    rows = _load_rows(root, info, meta, image_key, frames, starts)
    check_task_refs(rows.task, ids, len(tasks), root / "data")
    check_totals(all_meta, root / "meta" / "episodes", info)
    actions = np.concatenate(rows.actions)  # (F,) int64 or (F, A) float32
    spec = _infer_action_spec(info, action_spec_from_info(info, root / "meta" / "info.json"), actions)
    state = np.concatenate(rows.state) if "observation.state" in info["features"] else None  # (F, S)
    if "vla_align" not in info:
        info = {**info, "vla_align": {"action_spec": spec.to_dict(), "source": "lerobot"}}
    n, col = len(ids), meta.column_names
    return FrameTable(
        root=root,
        frames=frames,
        actions=actions,
        state=state,
        episode_start=starts,
        episode_length=lengths,
        episode_ids=ids,
        instructions=[tasks[t] for t in rows.task],
        task_index=rows.task,
        tasks=tasks,
        seeds=meta["seed"].to_numpy().astype(np.int64) if "seed" in col else np.full(n, -1, dtype=np.int64),
        success=meta["success"].to_numpy(zero_copy_only=False).astype(bool)
        if "success" in col
        else np.ones(n, dtype=bool),
        env_tasks=[str(x or "") for x in meta["env_task"].to_pylist()] if "env_task" in col else [""] * n,
        fps=float(info["fps"]),
        action_spec=spec,
        info=info,
    )


def read_episodes(path: str | Path, split: str | None = None) -> list[Episode]:
    """The episodes of ``split`` as :class:`Episode` objects (round-trip tests, small datasets)."""
    t = read_dataset(path, split)
    out = []
    for e in range(t.num_episodes):
        rows = slice(int(t.episode_start[e]), int(t.episode_start[e] + t.episode_length[e]))
        out.append(
            Episode(
                frames=t.frames[rows],
                actions=t.actions[rows],
                instruction=t.instructions[e],
                task=t.env_tasks[e],
                fps=t.fps,
                seed=int(t.seeds[e]),
                success=bool(t.success[e]),
                state=None if t.state is None else t.state[rows],
            )
        )
    return out
