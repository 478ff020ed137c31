"""LeRobotDataset v3.0 on disk, read with pyarrow (no ``lerobot`` / ``datasets`` import).

:func:`write_dataset` (re-exported from :mod:`vla_align.data.lerobot_write`) writes it;
:func:`read_dataset` loads a split into one :class:`FrameTable` of decoded frames. Datasets written by
LeRobot itself (no ``vla_align`` key in info.json) read too: the action spec is inferred from the
``action`` feature (int dtype: discrete, else continuous), seeds are -1, success True, env_tasks "".
Cameras stored as mp4 video are not decoded yet (a clear :class:`DatasetError` says so).
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
import pyarrow.parquet as pq
from PIL import Image

from ..errors import DatasetError
from .episode import ActionSpec, Episode
from .lerobot_write import CODEBASE_VERSION, DATA_PATH, IMAGE_KEY, write_dataset

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
    """meta/info.json of the dataset at ``path``, checked to be LeRobot v3.0."""
    root = Path(path)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        what = "does not exist" if not root.exists() else "not a vla-align/LeRobot dataset (meta/info.json missing)"
        raise DatasetError(f"{root}: {what}; generate one with `vla-align data babyai --out {root}`")
    try:
        info = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetError(f"{info_path}: not valid JSON ({e}); regenerate the dataset") from None
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
    return info


def _read_parquet(file: Path, columns: list[str] | None = None, what: str = "") -> pa.Table:
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
    cams = {k: f for k, f in info["features"].items() if f.get("dtype") in ("image", "video")}
    images = [k for k, f in cams.items() if f["dtype"] == "image"]
    if not images:
        if cams:
            raise DatasetError(
                f"{info_path}: camera {next(iter(cams))!r} is stored as mp4 video; video decoding "
                "is not supported yet, re-export the dataset with images (dtype 'image')"
            )
        raise DatasetError(f"{info_path}: no image feature in 'features'; a dataset needs a camera")
    key = IMAGE_KEY if IMAGE_KEY in images else images[0]
    shape, names = list(cams[key].get("shape", [])), cams[key].get("names") or []
    if len(shape) == 3 and list(names)[:1] == ["channels"]:
        shape = shape[1:] + shape[:1]
    if len(shape) != 3 or shape[2] != 3:
        raise DatasetError(f"{info_path}: feature {key!r} has shape {shape}; expected [height, width, 3]")
    return key, (int(shape[0]), int(shape[1]), 3)


def _infer_action_spec(info: dict[str, Any], actions: np.ndarray) -> ActionSpec:
    """Our own spec from info.json's "vla_align" key, else inferred from the ``action`` feature."""
    if "vla_align" in info and "action_spec" in info["vla_align"]:
        return ActionSpec.from_dict(info["vla_align"]["action_spec"])
    feat = info["features"].get("action", {})
    if str(feat.get("dtype", "")).startswith("int"):
        return ActionSpec(kind="discrete", num_actions=max(2, int(actions.max(initial=0)) + 1))
    names = feat.get("names")
    if isinstance(names, dict):  # LeRobot sometimes nests names, e.g. {"motors": [...]}
        names = next(iter(names.values()), None)
    dim = int(actions.shape[1]) if actions.ndim == 2 else 1
    names = [str(n) for n in names] if isinstance(names, list) and len(names) == dim else []
    return ActionSpec(kind="continuous", dim=dim, names=names)


def _numeric(col: pa.ChunkedArray, file: Path, name: str) -> np.ndarray:
    """A scalar column as (N,), a list column as (N, D)."""
    arr = col.combine_chunks()
    if pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        if len(arr) and len(flat) % len(arr):
            raise DatasetError(f"{file}: column {name!r} has rows of different lengths; regenerate the dataset")
        result: np.ndarray = flat.reshape(len(arr), -1)
        return result
    column: np.ndarray = arr.to_numpy(zero_copy_only=False)
    return column


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _open_image(data: bytes) -> Image.Image:
    """Decode one encoded image to RGB.

    8-bit RGB non-interlaced PNGs (what we write) skip Pillow's Python-level chunk parsing: their IDAT
    stream goes straight to Pillow's zip decoder, ~2.5x faster for small frames. Anything else
    (JPEG, palette, RGBA, interlaced PNG) takes ``Image.open``.
    """
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        w, h, depth, color, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
        if depth == 8 and color == 2 and interlace == 0:
            pos, idat = 8, []
            while pos + 8 <= len(data):
                n, kind = struct.unpack_from(">I4s", data, pos)
                if kind == b"IDAT":
                    idat.append(data[pos + 8 : pos + 8 + n])
                pos += 12 + n  # length, type, payload, crc
            return Image.frombytes("RGB", (w, h), b"".join(idat), "zip", "RGB")
    im: Image.Image = Image.open(io.BytesIO(data))
    return im if im.mode == "RGB" else im.convert("RGB")


def _decode_into(out: np.ndarray, images: list[bytes | None], where: str) -> None:
    """Decode encoded images into ``out`` (N, H, W, 3), checking each shape."""
    shape = out.shape[1:]
    for i, data in enumerate(images):
        if data is None:
            raise DatasetError(f"{where}: frame {i} has no embedded image bytes; re-export with embedded images")
        try:
            im = _open_image(data)
        except (OSError, ValueError, struct.error) as e:
            raise DatasetError(f"{where}: frame {i} cannot be decoded ({e}); regenerate the dataset") from None
        got = (im.height, im.width, 3)
        if got != shape:
            raise DatasetError(f"{where}: frame {i} is {got}, info.json says {shape}; regenerate the dataset")
        out[i] = np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(shape)


def _select(info: dict[str, Any], root: Path, ids: np.ndarray, split: str | None) -> np.ndarray:
    """Boolean mask over ``ids`` (episode_index values) of the episodes in ``split``."""
    if split is None:
        return np.ones(len(ids), dtype=bool)
    splits = info.get("splits") or {}
    if split not in splits:
        raise DatasetError(f"split {split!r} not in {root} (has: {', '.join(splits) or 'no splits'})")
    try:
        start, end = (int(x) for x in str(splits[split]).split(":"))
    except ValueError:
        raise DatasetError(
            f"{root}/meta/info.json: split {split!r} is {splits[split]!r}, expected 'start:end'; regenerate the dataset"
        ) from None
    return (ids >= start) & (ids < end)


def _episode_index(root: Path, info: dict[str, Any], split: str | None, max_episodes: int | None) -> pa.Table:
    """The meta/episodes rows of the selected episodes, sorted by episode_index."""
    ep_files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise DatasetError(f"{root / 'meta' / 'episodes'}: no episode parquet files; regenerate the dataset")
    meta = pa.concat_tables([_read_parquet(f) for f in ep_files], promote_options="default")
    for c in ("episode_index", "length", "data/chunk_index", "data/file_index"):
        if c not in meta.column_names:
            raise DatasetError(f"{ep_files[0]}: column {c!r} missing; regenerate the dataset")
    meta = meta.sort_by("episode_index")
    keep = np.nonzero(_select(info, root, meta["episode_index"].to_numpy(), split))[0]
    if max_episodes is not None:
        keep = keep[: max(max_episodes, 0)]
    if len(keep) == 0:
        which = f"split {split!r}" if split is not None else "the dataset"
        raise DatasetError(f"{root}: {which} has no episodes; choose another split or regenerate the dataset")
    return meta.take(pa.array(keep))


def _tasks(root: Path) -> list[str]:
    """meta/tasks.parquet as a list indexed by task_index."""
    file = root / "meta" / "tasks.parquet"
    table = _read_parquet(file)
    text_col = "task" if "task" in table.column_names else "__index_level_0__"  # pandas-written index
    for c in ("task_index", text_col):
        if c not in table.column_names:
            raise DatasetError(f"{file}: column {c!r} missing; regenerate the dataset")
    ids = table["task_index"].to_pylist()
    tasks = [""] * (max(ids, default=-1) + 1)
    for t, text in zip(ids, table[text_col].to_pylist(), strict=True):
        tasks[t] = str(text)
    return tasks


def _load_rows(
    root: Path, info: dict[str, Any], meta: pa.Table, image_key: str, frames: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Decode the selected episodes' images into ``frames``; return (actions, state, task_index per episode)."""
    ids = meta["episode_index"].to_numpy()  # (E,)
    lengths = meta["length"].to_numpy()  # (E,)
    state_key = "observation.state" if "observation.state" in info["features"] else None
    columns = ["episode_index", "frame_index", "task_index", "action", *([state_key] if state_key else []), image_key]
    by_file: dict[tuple[int, int], list[int]] = {}
    for e, loc in enumerate(
        zip(meta["data/chunk_index"].to_pylist(), meta["data/file_index"].to_pylist(), strict=True)
    ):
        by_file.setdefault(loc, []).append(e)
    actions: list[np.ndarray] = [np.empty(0)] * len(ids)  # per episode, filled file by file
    state: list[np.ndarray] = [np.empty(0)] * len(ids)
    ep_task = np.zeros(len(ids), dtype=np.int64)  # (E,)
    for (chunk, file_index), eps in sorted(by_file.items()):
        file = root / info.get("data_path", DATA_PATH).format(chunk_index=chunk, file_index=file_index)
        table = _read_parquet(file, columns, what=f" (meta/episodes puts episode {ids[eps[0]]} there)")
        ep_col = table["episode_index"].to_numpy()
        rows = np.nonzero(np.isin(ep_col, ids[eps]))[0]
        rows = rows[np.lexsort((table["frame_index"].to_numpy()[rows], ep_col[rows]))]  # by (episode, frame)
        table, ep_col = table.take(pa.array(rows)), ep_col[rows]
        image_col = table[image_key].combine_chunks()
        if not pa.types.is_struct(image_col.type) or image_col.type.get_field_index("bytes") < 0:
            raise DatasetError(f"{file}: column {image_key!r} is {image_col.type}, expected struct<bytes, path>")
        images = image_col.field("bytes").to_pylist()
        file_actions = _numeric(table["action"], file, "action")  # (N,) or (N, A)
        file_state = _numeric(table[state_key], file, state_key) if state_key else None  # (N, S)
        task_col = table["task_index"].to_numpy()
        lo_hi = zip(np.searchsorted(ep_col, ids[eps], "left"), np.searchsorted(ep_col, ids[eps], "right"), strict=True)
        for e, (lo, hi) in zip(eps, lo_hi, strict=True):
            where = f"{file}: episode {ids[e]}"
            if hi - lo != lengths[e]:
                raise DatasetError(
                    f"{where} has {hi - lo} frames, meta/episodes says {lengths[e]}; regenerate the dataset"
                )
            _decode_into(frames[starts[e] : starts[e] + lengths[e]], images[lo:hi], where)
            actions[e] = file_actions[lo:hi]
            if file_state is not None:
                state[e] = file_state[lo:hi]
            ep_task[e] = task_col[lo]
    all_state = np.concatenate(state).astype(np.float32) if state_key else None  # (F, S)
    return np.concatenate(actions), all_state, ep_task


def read_dataset(path: str | Path, split: str | None = None, max_episodes: int | None = None) -> FrameTable:
    """Load the episodes of ``split`` (all when None; the first ``max_episodes`` when set) into memory."""
    root = Path(path)
    info = read_info(root)
    image_key, image_shape = _image_feature(info, root / "meta" / "info.json")
    meta = _episode_index(root, info, split, max_episodes)
    tasks = _tasks(root)
    ids = meta["episode_index"].to_numpy().astype(np.int64)  # (E,)
    lengths = meta["length"].to_numpy().astype(np.int64)  # (E,)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)  # (E,)
    frames = np.empty((int(lengths.sum()), *image_shape), dtype=np.uint8)  # (F, H, W, 3)
    actions, state, ep_task = _load_rows(root, info, meta, image_key, frames, starts)
    spec = _infer_action_spec(info, actions)
    if spec.kind == "discrete":
        actions = actions.reshape(-1).astype(np.int64)  # (F,)
    else:
        actions = actions.reshape(len(actions), -1).astype(np.float32)  # (F, A)
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
        instructions=[tasks[t] if 0 <= t < len(tasks) else "" for t in ep_task],
        task_index=ep_task,
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
