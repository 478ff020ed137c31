"""Tiny LeRobot v3.0 datasets with mp4 cameras, written here with PyAV and pyarrow (no LeRobot import).

The layout follows LeRobot's writer: one mp4 per camera holding every episode back to back
(videos/<key>/chunk-000/file-000.mp4), per-episode ``videos/<key>/from_timestamp`` / ``to_timestamp`` /
``chunk_index`` / ``file_index`` in meta/episodes, per-frame ``timestamp`` (seconds from the episode start)
in the data parquet, the task string in meta/tasks.parquet. Frames are smooth gradients whose brightness
steps by :data:`STEP` per frame, so a lossy codec keeps them apart and a frame-off-by-one is caught.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

av = pytest.importorskip("av")

STEP = 9  # brightness step between consecutive frames
# codec name -> (PyAV encoder, pixel format, options); h264 here is lossless (exact RGB round trip)
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264rgb", "rgb24", {"qp": "0"}),
    "h264-lossy": ("libx264", "yuv420p", {"crf": "18", "g": "10"}),
    "av1": ("libsvtav1", "yuv420p", {"preset": "12", "crf": "20"}),
}


def pattern(n: int, h: int, w: int, offset: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8: a smooth gradient plus STEP * frame brightness (distinct per frame)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 40 // max(w - 1, 1), y * 40 // max(h - 1, 1), (x + y) * 20 // max(h + w - 2, 1)], -1)
    k = (np.arange(n) + offset)[:, None, None, None]
    return (base[None] + (k * STEP) % 200 + 10).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray, fps: int, codec: str = "h264") -> None:
    """Encode (n, h, w, 3) uint8 frames at ``fps`` with one of :data:`CODECS`."""
    encoder, pix_fmt, options = CODECS[codec]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def _feature(dtype: str, shape: list[int], names: object = None, **extra: object) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "names": names, **extra}


def _camera_feature(h: int, w: int, fps: int, codec: str) -> dict[str, object]:
    info = {"video.height": h, "video.width": w, "video.codec": codec, "video.pix_fmt": "yuv420p", "video.fps": fps}
    info |= {"video.channels": 3, "video.is_depth_map": False, "has_audio": False}
    return _feature("video", [h, w, 3], ["height", "width", "channels"], info=info)


def make_dataset(
    root: Path,
    lengths: list[int],
    cameras: dict[str, tuple[int, int]],
    fps: int = 10,
    codec: str = "h264",
    discrete: bool = False,
) -> dict[str, np.ndarray]:
    """A LeRobot-v3-shaped dataset at ``root``; returns each camera's encoded frames, (F, h, w, 3)."""
    total, starts = sum(lengths), np.cumsum([0, *lengths])
    frames = {}
    for c, (key, (h, w)) in enumerate(cameras.items()):
        frames[key] = pattern(total, h, w, offset=3 * c)
        write_mp4(root / f"videos/{key}/chunk-000/file-000.mp4", frames[key], fps, codec)
    ep = np.repeat(np.arange(len(lengths)), lengths)
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    state = np.stack([np.arange(total), -np.arange(total)], 1).astype(np.float64)  # (F, 2) float64
    if discrete:
        action = pa.array((np.arange(total) % 3).astype(np.int64))
    else:
        action = pa.array(
            list(np.arange(total * 3, dtype=np.float32).reshape(total, 3) / 10), pa.list_(pa.float32(), 3)
        )
    data = pa.table(
        {
            "observation.state": pa.array(list(state), pa.list_(pa.float64(), 2)),
            "action": action,
            "timestamp": pa.array((frame_index / fps).astype(np.float32)),
            "frame_index": pa.array(frame_index.astype(np.int64)),
            "episode_index": pa.array(ep.astype(np.int64)),
            "index": pa.array(np.arange(total, dtype=np.int64)),
            "task_index": pa.array((ep % 2).astype(np.int64)),
        }
    )
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(data, root / "data/chunk-000/file-000.parquet")
    _write_meta(root, lengths, starts, cameras, fps)
    features = {
        **{k: _camera_feature(h, w, fps, codec) for k, (h, w) in cameras.items()},
        "observation.state": _feature("float64", [2], ["x", "y"]),
        "action": _feature("int64", [1], ["left", "right", "forward"])
        if discrete
        else _feature("float32", [3], ["a", "b", "c"]),
        **{k: _feature("int64", [1]) for k in ("frame_index", "episode_index", "index", "task_index")},
        "timestamp": _feature("float32", [1]),
    }
    info = {
        "codebase_version": "v3.0",
        "robot_type": "toy",
        "total_episodes": len(lengths),
        "total_frames": total,
        "total_tasks": 2,
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=2))
    return frames


def _write_meta(root: Path, lengths: list[int], starts: np.ndarray, cameras: dict[str, object], fps: int) -> None:
    """meta/episodes (with the per-camera video columns) and meta/tasks.parquet."""
    n = len(lengths)
    cols: dict[str, object] = {
        "episode_index": np.arange(n, dtype=np.int64),
        "tasks": [["pick the red cube" if i % 2 == 0 else "open the drawer"] for i in range(n)],
        "length": np.array(lengths, dtype=np.int64),
        "data/chunk_index": np.zeros(n, dtype=np.int64),
        "data/file_index": np.zeros(n, dtype=np.int64),
        "dataset_from_index": starts[:-1].astype(np.int64),
        "dataset_to_index": starts[1:].astype(np.int64),
    }
    for key in cameras:
        cols[f"videos/{key}/chunk_index"] = np.zeros(n, dtype=np.int64)
        cols[f"videos/{key}/file_index"] = np.zeros(n, dtype=np.int64)
        cols[f"videos/{key}/from_timestamp"] = starts[:-1] / fps
        cols[f"videos/{key}/to_timestamp"] = starts[1:] / fps
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(cols), root / "meta/episodes/chunk-000/file-000.parquet")
    tasks = pa.table({"task_index": pa.array([0, 1], pa.int64()), "task": ["pick the red cube", "open the drawer"]})
    pq.write_table(tasks, root / "meta/tasks.parquet")
