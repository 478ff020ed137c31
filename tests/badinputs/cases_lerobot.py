"""LeRobot v3.0 datasets with mp4 cameras, and split files beside a dataset.

Each case copies one of the LeRobot-written fixtures of ``tests/fixtures/lerobot`` (never the originals)
to ``ds`` in the case directory, damages the copy or writes a split file beside it (``ds.splits.json``),
and runs ``train`` / ``data split`` on it. Besides the usual promise (exit 2, one line naming the file or
field and the fix, every pre-existing file byte-identical) no new file may appear inside ``ds``
(``Case.sealed``): a command that reads a dataset never writes into it.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa

from .case import Case, Ctx
from .damage import (
    DATA_FILE,
    EPISODES_FILE,
    TASKS_FILE,
    edit_table,
    garbage,
    info_set,
    truncate,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot"
FRONT = "observation.images.front"
WRIST = "observation.images.wrist"
MP4 = f"videos/{FRONT}/chunk-000/file-000.mp4"
TRAIN = ("train", "--preset", "tiny", "--data", "{ds}", "--out", "{out}", "--train.steps", "3")
SPLIT = ("data", "split", "{ds}")
SPLIT_FILE = "ds.splits.json"  # the default split file of BASE/case/ds, beside it
REGEN = "regenerate|re-encode|fix"


def case(
    id: str,
    keywords: tuple[str, ...],
    damage: Callable[[Path], object],
    fixture: str = "video_h264",
    argv: tuple[str, ...] = TRAIN,
    why: str = "",
    **kwargs: Any,
) -> Case:
    """Copy ``tests/fixtures/lerobot/<fixture>`` to ``ds``, damage it, run ``argv`` (``{ds}`` = the copy)."""

    def setup(ctx: Ctx) -> None:
        ds = ctx.root / "ds"
        shutil.copytree(FIXTURES / fixture, ds)
        ctx.values["ds"] = str(ds)
        damage(ds)

    return Case(f"dataset/lerobot-{id}", "dataset", argv, keywords, setup, why, sealed=("ds",), **kwargs)


def _both(*steps: Callable[[Path], object]) -> Callable[[Path], None]:
    def go(ds: Path) -> None:
        for step in steps:
            step(ds)

    return go


def _column(
    rel: str, column: str, edit: Callable[[list[Any]], list[Any]], type_: pa.DataType | None = None
) -> Callable[[Path], None]:
    """Replace ``column`` of the parquet file ``rel`` by ``edit(its values)`` (same type unless ``type_``)."""

    def go(ds: Path) -> None:
        def change(t: pa.Table) -> pa.Table:
            i = t.schema.get_field_index(column)
            values = pa.array(edit(t[column].to_pylist()), type=type_ or t.schema.field(column).type)
            return t.set_column(i, pa.field(column, values.type), values)

        edit_table(ds / rel, change)

    return go


# --- the mp4 files ---------------------------------------------------------------------------------


def _shorter_video(ds: Path, drop: int = 6) -> None:
    """Re-encode the camera's mp4 without its last ``drop`` frames (an interrupted encode): meta/episodes
    and the data's timestamps still promise them."""
    with av.open(str(ds / MP4)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    kept = np.stack(frames[:-drop])
    (ds / MP4).unlink()
    with av.open(str(ds / MP4), "w") as out:
        stream = out.add_stream("libx264rgb", rate=10, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = kept.shape[2], kept.shape[1], "rgb24"
        for f in kept:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def _last_episode(column: str, value: float) -> Callable[[Path], object]:
    return _column(EPISODES_FILE, column, lambda v: [*v[:-1], value])


def _outside_copy(ds: Path) -> None:
    """A valid copy of the videos beside the dataset, where a '..' template would find them."""
    shutil.copytree(ds / "videos", ds.parent / "outside")


def _video_cases() -> list[Case]:
    mp4 = ("file-000.mp4", REGEN)
    start = f"videos/{FRONT}/from_timestamp"
    end = f"videos/{FRONT}/to_timestamp"

    def symlink_out(ds: Path) -> None:
        _outside_copy(ds)
        (ds / MP4).unlink()
        (ds / MP4).symlink_to(ds.parent / "outside" / FRONT / "chunk-000" / "file-000.mp4")

    return [
        case("mp4-truncated", mp4, lambda ds: truncate(ds / MP4), why="an interrupted download: half the mp4"),
        case("mp4-tail-cut", mp4, lambda ds: truncate(ds / MP4, 0.9), why="the last 10% of the mp4 missing"),
        case("mp4-garbage", mp4, lambda ds: garbage(ds / MP4), why="the mp4 replaced by text"),
        case("mp4-empty", mp4, lambda ds: truncate(ds / MP4, 0.0), why="a zero-byte mp4"),
        case(
            "mp4-av1-garbage",
            mp4,
            lambda ds: garbage(ds / f"videos/{WRIST}/chunk-000/file-000.mp4", b"\x00" * 4096),
            "video_default",
            (*TRAIN, "--data.cameras", FRONT, WRIST),
            why="the second of two tiled cameras is zeros",
        ),
        case("mp4-missing", ("file-000.mp4", "missing"), lambda ds: (ds / MP4).unlink()),
        case("mp4-a-directory", ("file-000.mp4",), _mp4_dir),
        case(
            "video-shorter-than-timestamps",
            ("file-000.mp4", "timestamp"),
            _shorter_video,
            why="the mp4 lacks the last 6 frames meta/episodes and the data's timestamps promise",
        ),
        case(
            "episode-beyond-the-file",
            ("file-000.mp4", "timestamp"),
            _both(_last_episode(start, 30.0), _last_episode(end, 31.1)),
            why="from_timestamp / to_timestamp of the last episode 25 s past the end of the video",
        ),
        case("from-timestamp-nan", ("from_timestamp",), _last_episode(start, math.nan)),
        case(
            "from-timestamp-strings",
            ("from_timestamp",),
            _column(EPISODES_FILE, start, lambda v: [str(x) for x in v], pa.string()),
        ),
        case(
            "to-timestamp-strings",
            ("to_timestamp",),
            _column(EPISODES_FILE, end, lambda v: [str(x) for x in v], pa.string()),
        ),
        case(
            "to-timestamp-before-frames",
            ("to_timestamp", "timestamp"),
            _column(EPISODES_FILE, end, lambda v: [v[0] - 1.0, *v[1:]]),
            why="episode 0 ends at 0.8 s in the video, its data has frames up to 1.7 s (episode 1's frames)",
        ),
        case(
            "timestamps-offset",
            ("to_timestamp", "timestamp"),
            _column(DATA_FILE, "timestamp", lambda v: [x + 1.0 for x in v[:18]] + v[18:]),
            why="episode 0's timestamps shifted 1 s: its last frames would come from episode 1's part of the video",
        ),
        case("from-timestamp-negative", ("from_timestamp",), _last_episode(start, -3.0)),
        case(
            "frame-size-differs",
            ("info.json", "32x48|64x64"),
            info_set(f"features/{FRONT}/shape", [64, 64, 3]),
            why="info.json says 64x64, the video holds 32x48 frames",
        ),
        case(
            "video-path-dotdot",
            ("video_path",),
            _both(
                _outside_copy, _video_path("../outside/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
            ),
            why="reads mp4 files outside the dataset",
        ),
        case("video-path-absolute", ("video_path",), _abs_video_path, why="an absolute template outside the dataset"),
        case(
            "video-path-v21-template",
            ("video_path",),
            _video_path("videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"),
            why="LeRobot v2.1's per-episode template left in a v3.0 info.json",
        ),
        case("video-path-null", ("video_path",), _video_path(None), why="a video camera and no template"),
        case("mp4-symlink-outside", ("outside",), symlink_out, why="the mp4 is a link to a file outside the dataset"),
    ]


def _mp4_dir(ds: Path) -> None:
    (ds / MP4).unlink()
    (ds / MP4).mkdir()


def _video_path(value: object) -> Callable[[Path], None]:
    return info_set("video_path", value)


def _abs_video_path(ds: Path) -> None:
    _outside_copy(ds)
    info_set("video_path", str(ds.parent / "outside/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"))(ds)


# --- cameras, fps, timestamps, version ---------------------------------------------------------------


def _camera_cases() -> list[Case]:
    depth = f"features/{WRIST}/info/video.is_depth_map"
    cams = "--data.cameras"
    return [
        case(
            "camera-unknown",
            ("observation.images.nope", "data.cameras"),
            lambda ds: None,
            argv=(*TRAIN, cams, "observation.images.nope"),
        ),
        case(
            "camera-not-an-image",
            ("observation.state", "data.cameras"),
            lambda ds: None,
            argv=(*TRAIN, cams, "observation.state"),
        ),
        case("camera-twice", ("data.cameras", "once"), lambda ds: None, "video_default", (*TRAIN, cams, FRONT, FRONT)),
        case(
            "camera-depth-chosen",
            ("depth", WRIST),
            info_set(depth, True),
            "video_default",
            (*TRAIN, cams, WRIST),
            why="a depth map as the camera",
        ),
        case(
            "camera-depth-first",
            ("depth", FRONT),
            info_set(f"features/{FRONT}/info/video.is_depth_map", True),
            "video_default",
            why="the default (first) camera is a depth map",
        ),
        case(
            "camera-grey",
            ("video.channels|shape", WRIST),
            info_set(f"features/{WRIST}/info/video.channels", 1),
            "video_default",
            (*TRAIN, cams, WRIST),
        ),
    ]


def _fps_cases() -> list[Case]:
    stamps = "timestamp"
    return [
        case(
            "video-fps-differs",
            ("fps", "info.json"),
            info_set(f"features/{FRONT}/info/video.fps", 30),
            why="info.json says fps 10, the camera's video.fps 30: one of them is wrong",
        ),
        case(
            "info-fps-differs-from-video",
            ("fps",),
            _both(info_set("fps", 5), info_set(f"features/{FRONT}/info/video.fps", 5)),
            why="info.json says fps 5 (and video.fps 5) for 10 fps data and video: timestamps step 0.1 s",
        ),
        case(
            "timestamps-twice-the-period",
            ("timestamp", "fps"),
            _column(DATA_FILE, stamps, lambda v: [2 * x for x in v]),
            why="timestamps step 0.2 s at fps 10: frames are read from the next episode's part of the video",
        ),
        case(
            "timestamps-nan",
            ("timestamp", "file-000.parquet"),
            _column(DATA_FILE, stamps, lambda v: [math.nan if i == 3 else x for i, x in enumerate(v)]),
        ),
        case(
            "timestamps-decreasing",
            ("timestamp", "file-000.parquet"),
            _column(DATA_FILE, stamps, lambda v: [v[2] if i == 3 else v[3] if i == 2 else x for i, x in enumerate(v)]),
            why="frames 2 and 3 swapped",
        ),
        case(
            "timestamps-null",
            ("timestamp", "file-000.parquet"),
            _column(DATA_FILE, stamps, lambda v: [None if i == 3 else x for i, x in enumerate(v)]),
        ),
        case(
            "timestamps-strings",
            ("timestamp", "file-000.parquet"),
            _column(DATA_FILE, stamps, lambda v: [str(x) for x in v], pa.string()),
        ),
        case(
            "codebase-v21",
            ("codebase_version", "convert"),
            info_set("codebase_version", "v2.1"),
            why="a LeRobot v2.1 dataset",
        ),
        case("codebase-v20", ("codebase_version", "convert"), info_set("codebase_version", "v2.0")),
    ]


# --- tasks -------------------------------------------------------------------------------------------

TASK_TEXT = "__index_level_0__"  # LeRobot writes the task string as the pandas index of meta/tasks.parquet


def _empty_tasks(ds: Path) -> None:
    edit_table(ds / TASKS_FILE, lambda t: t.slice(0, 0))


def _task_cases() -> list[Case]:
    t = ("tasks.parquet",)
    return [
        case("tasks-missing", t, lambda ds: (ds / TASKS_FILE).unlink()),
        case("tasks-empty", t, _empty_tasks, why="no rows: every episode's task_index names nothing"),
        case("tasks-all-null", (*t, "task"), _column(TASKS_FILE, TASK_TEXT, lambda v: [None] * len(v))),
        case("tasks-all-blank", (*t, "task"), _column(TASKS_FILE, TASK_TEXT, lambda v: [""] * len(v))),
        case(
            "tasks-no-text-column",
            (*t, "task"),
            lambda ds: edit_table(ds / TASKS_FILE, lambda t: t.drop_columns([TASK_TEXT])),
        ),
        case("tasks-garbage", t, lambda ds: garbage(ds / TASKS_FILE)),
    ]


# --- split files -------------------------------------------------------------------------------------


def fingerprint(root: Path) -> str:
    """The dataset fingerprint a split file records: sha256 over meta/ (relative path, sha256 of bytes)."""
    meta, digest = root / "meta", hashlib.sha256()
    for p in sorted(p for p in meta.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(p.relative_to(meta).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def _split_file(splits: dict[str, list[Any]], fp: Callable[[Path], str] = fingerprint) -> Callable[[Path], None]:
    """Write a split file (by hand, as ``data split`` would) beside the dataset."""

    def go(ds: Path) -> None:
        doc = {
            "format": "vla-align-splits",
            "version": 1,
            "dataset": {"name": ds.name, "fingerprint": fp(ds), "episodes": 4},
            "method": "episode",
            "seed": 0,
            "fractions": {"val": 0.25, "test": 0.25},
            "ood": {},
            "splits": splits,
        }
        (ds.parent / SPLIT_FILE).write_text(json.dumps(doc, indent=2) + "\n")

    return go


def _other_dataset(ds: Path) -> str:
    return fingerprint(FIXTURES / "video_default")


def _split_cases() -> list[Case]:
    s = ("splits.json",)
    good = {"train": [0, 1], "val": [2], "test": [3]}
    explicit = (*TRAIN, "--data.splits", "{root}/mine.json")
    return [
        case(
            "split-missing-episodes",
            (*s, "episode"),
            _split_file({"train": [0, 1], "val": [2, 9], "test": [3]}),
            why="episode 9 does not exist",
        ),
        case(
            "split-overlap",
            (*s, "both"),
            _split_file({"train": [0, 1, 2], "val": [2], "test": [3]}),
            why="episode 2 in train and val",
        ),
        case(
            "split-other-dataset",
            (*s, "another dataset"),
            _split_file(good, _other_dataset),
            why="fingerprint of another dataset",
        ),
        case(
            "split-dataset-edited",
            (*s, "another dataset|changed"),
            _both(_split_file(good), info_set("robot_type", "other")),
            why="meta/ changed after the split",
        ),
        case("split-not-json", (*s, "json"), lambda ds: (ds.parent / SPLIT_FILE).write_text("{ not json")),
        case("split-a-list", (*s, "split file"), lambda ds: (ds.parent / SPLIT_FILE).write_text("[0, 1, 2]")),
        case("split-ids-strings", (*s, "splits"), _split_file({"train": ["0", "1"], "val": [2], "test": [3]})),
        case("split-explicit-missing", ("mine.json", "does not exist"), lambda ds: None, argv=explicit),
        case(
            "split-explicit-not-json",
            ("mine.json", "json"),
            lambda ds: (ds.parent / "mine.json").write_text("nope"),
            argv=explicit,
        ),
        case(
            "split-overwrite-not-a-split-file",
            (*s, "split file"),
            lambda ds: (ds.parent / SPLIT_FILE).write_text('{"precious": true}\n'),
            argv=(*SPLIT, "--overwrite"),
            why="--overwrite may only replace a split file, not another JSON file",
        ),
        case(
            "split-out-inside-dataset",
            ("refusing", "--out"),
            lambda ds: None,
            argv=(*SPLIT, "--out", "{ds}/meta/splits.json"),
        ),
        case(
            "split-tasks-null",
            ("tasks", "episodes"),
            _column(EPISODES_FILE, "tasks", lambda v: [None] * len(v)),
            argv=SPLIT,
            why="data split on episodes without task strings",
        ),
        case("split-v21", ("codebase_version",), info_set("codebase_version", "v2.1"), argv=SPLIT),
        case("split-episodes-garbage", ("parquet",), lambda ds: garbage(ds / EPISODES_FILE), argv=SPLIT),
    ]


# --- eval of a run trained on a video dataset -------------------------------------------------------


def _trained(damage: Callable[[Path], object]) -> Callable[[Ctx], None]:
    """Copy video_h264 to ``ds``, write its split file, train a 2-step ``tiny`` run ``run`` on it (in the
    case directory, so the dataset path the run records holds), then damage the dataset."""

    def setup(ctx: Ctx) -> None:
        import contextlib
        import io
        import os

        from vla_align.cli import main

        ds, run = ctx.root / "ds", ctx.root / "run"
        shutil.copytree(FIXTURES / "video_h264", ds)
        _split_file({"train": [0, 1], "val": [2], "test": [3]})(ds)
        quiet = os.environ.get("VLA_ALIGN_QUIET")
        os.environ["VLA_ALIGN_QUIET"] = "1"
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = main(["train", "--preset", "tiny", "--data", str(ds), "--out", str(run), "--train.steps", "2"])
        finally:
            if quiet is None:
                os.environ.pop("VLA_ALIGN_QUIET", None)
            else:
                os.environ["VLA_ALIGN_QUIET"] = quiet
        if code != 0:
            raise RuntimeError(f"building a bad-inputs fixture failed: train on {ds} exited {code}")
        ctx.values.update(ds=str(ds), run=str(run))
        damage(ds)

    return setup


def _eval_cases() -> list[Case]:
    def on_run(id: str, keywords: tuple[str, ...], damage: Callable[[Path], object], why: str = "") -> Case:
        argv = ("eval", "--run", "{run}")
        return Case(f"dataset/lerobot-eval-{id}", "dataset", argv, keywords, _trained(damage), why, sealed=("ds",))

    resplit = _split_file({"train": [0, 1], "val": [3], "test": [2]})
    return [
        on_run(
            "split-file-changed", ("splits.json", "changed|gone"), resplit, why="val and test swapped after training"
        ),
        on_run(
            "split-file-deleted",
            ("splits.json", "does not exist|gone", "restore"),
            lambda ds: (ds.parent / SPLIT_FILE).unlink(),
        ),
        on_run(
            "test-mp4-garbage", ("file-000.mp4", REGEN), lambda ds: garbage(ds / MP4), why="the test episode's video"
        ),
    ]


def lerobot_cases() -> list[Case]:
    return [*_video_cases(), *_camera_cases(), *_fps_cases(), *_task_cases(), *_split_cases(), *_eval_cases()]
