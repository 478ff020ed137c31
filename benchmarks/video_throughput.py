"""Video cameras: decoding speed of vla-align's mp4 reader, and training on video vs the same frames as images.

    .venv/bin/python benchmarks/video_throughput.py [--quick] [--out benchmarks/results] [--work DIR]

Two tables, each row with its wall time, the process's CPU seconds (``time.process_time``: every thread
of the process; for the ``vla-align train`` command, the child's user + system time) and a ratio to a
reference row:

1. **Decoding.** A clip of ``--frames`` consecutive BabyAI GoToLocal frames (real renderings: ``vla-align
   data babyai --image-size S``, episodes of ~5 steps, so the view changes completely every few frames) at
   84 and 224 px, encoded with PyAV at 30 fps as LeRobot's writer does: H.264 (libx264, yuv420p, crf 23,
   g=2) and AV1 (libsvtav1, yuv420p, crf 30, g=2, preset 12, which SVT-AV1 4.x runs as 11: LeRobot's
   default codec and settings). The
   whole file is decoded to (n, S, S, 3) uint8 RGB three ways, each ``--repeats`` times (the median wall
   and CPU seconds are reported, frames/s = frames / median wall):

   * ``vla-align``: ``VideoReader.read`` per episode of 50 frames with LeRobot's timestamps (episode
     ``e`` starts at ``50 e / fps`` in the file), one reader for the file, as ``read_dataset`` does;
   * ``PyAV``: ``container.decode`` sequentially, ``frame.to_ndarray(format="rgb24")`` (same
     ``thread_type = "AUTO"`` as the reader, so the row isolates the reader's own overhead); the
     reference row;
   * ``OpenCV``: ``cv2.VideoCapture(path, cv2.CAP_FFMPEG)`` sequential ``read`` + ``cvtColor`` BGR->RGB
     (the FFmpeg inside the opencv-python-headless wheel).

   ``max |d| vs PyAV`` checks the decoders agree (they decode the same bitstream; a difference can only
   come from the YUV->RGB conversion); ``mean |d| vs source`` is the codec's loss.

2. **Training on video vs images.** ``vla-align data babyai --level GoToLocal --episodes E --seed 0``
   (56 px PNG frames in parquet), converted here to LeRobot v3.0 video datasets (one mp4 per camera
   holding every episode back to back, ``videos/<key>/from_timestamp`` etc. in meta/episodes, no image
   column in the data parquet): ``h264`` lossless (libx264rgb, qp 0: the frames are identical) and ``av1``
   lossy (LeRobot's settings above). For each of images / h264 / av1: the load time of ``read_dataset``
   on the train split (what ``vla-align train`` reads; median of ``--repeats``), then ``vla-align train
   --preset tiny --train.steps N --train.select.every 0`` from scratch with the same seed: training
   samples/s is the median of the logged ``samples_per_s`` (after the load: the frames are in memory,
   so video should cost nothing here); the lossless h264 run must log exactly the images run's losses
   (checked). The issue's target: training on video within 20 % of images.

``--quick`` shrinks everything (100-frame clip, 40 episodes, 20 steps, 1 load repeat) for a smoke run
and writes nothing; otherwise the tables go to ``OUT/video_throughput.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # OpenCV's FFmpeg: no log lines when it cannot decode
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 encoder: errors only, not its banner per file
os.environ.setdefault("VLA_ALIGN_QUIET", "1")

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from common import cpu_name

from vla_align.data.lerobot import read_dataset, read_info
from vla_align.data.video import VideoReader
from vla_align.presets import get_preset

EPISODE = 50  # frames per episode in the decoding clip
CLIP_FPS = 30
# codec -> (PyAV encoder, pixel format, options), as LeRobot's encode_video_frames sets them
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "yuv420p", {"crf": "23", "g": "2"}),
    "av1": ("libsvtav1", "yuv420p", {"crf": "30", "g": "2", "preset": "12"}),
    "h264-lossless": ("libx264rgb", "rgb24", {"qp": "0"}),
}
INFO_CODEC = {"h264": "h264", "av1": "av1", "h264-lossless": "h264"}
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def babyai(out: Path, episodes: int, image_size: int | None = None) -> Path:
    """``vla-align data babyai --level GoToLocal --episodes E --seed 0 [--image-size S]`` into ``out``."""
    cmd = [sys.executable, "-m", "vla_align", "data", "babyai", "--level", "GoToLocal"]
    cmd += ["--episodes", str(episodes), "--seed", "0", "--out", str(out)]
    if image_size is not None:
        cmd += ["--image-size", str(image_size)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def encode(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    """Encode (n, h, w, 3) uint8 RGB frames into ``path`` with PyAV, as LeRobot's writer does."""
    encoder, pix_fmt, options = CODECS[codec]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def timed(repeats: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, float, Any]:
    """Median wall and median process-CPU seconds of ``repeats`` calls ``fn(*args, **kwargs)``, and its last
    result."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn(*args, **kwargs)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), result


# ---------------------------------------------------------------------------------------------- decoding


def decode_vla_align(path: Path, n: int, size: int) -> np.ndarray:
    """vla-align's reader: one ``VideoReader`` for the file, one ``read`` per episode of EPISODE frames."""
    out = np.empty((n, size, size, 3), np.uint8)
    stamps = np.arange(EPISODE) / CLIP_FPS  # each frame's timestamp from its episode's start
    with VideoReader(CLIP_FPS) as reader:
        for e, s in enumerate(range(0, n, EPISODE)):
            k = min(EPISODE, n - s)
            reader.read(path, s / CLIP_FPS + stamps[:k], out[s : s + k], (size, size), f"episode {e}")
    return out


def decode_pyav(path: Path, n: int, size: int) -> np.ndarray:
    """Plain sequential PyAV decode of every frame to RGB."""
    out = np.empty((n, size, size, 3), np.uint8)
    i = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # as VideoReader sets it
        for frame in container.decode(stream):
            out[i] = frame.to_ndarray(format="rgb24")
            i += 1
    if i != n:
        raise SystemExit(f"{path}: PyAV decoded {i} frames, expected {n}")
    return out


def decode_cv2(path: Path, n: int, size: int) -> np.ndarray | None:
    """cv2.VideoCapture sequential read + BGR->RGB; None when OpenCV decodes no frame at all."""
    out = np.empty((n, size, size, 3), np.uint8)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    i = 0
    try:
        while i < n:
            ok, bgr = cap.read()
            if not ok:
                break
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[i])
            i += 1
    finally:
        cap.release()
    if i == 0:
        return None
    if i != n:
        raise SystemExit(f"{path}: OpenCV decoded {i} frames, expected {n}")
    return out


def clip(work: Path, size: int, n: int) -> np.ndarray:
    """``n`` consecutive BabyAI GoToLocal frames rendered at ``size`` px (every split, in episode order)."""
    path = babyai(work / f"babyai-{size}px", episodes=n // 4 + 10, image_size=size)
    frames = read_dataset(path).frames
    if len(frames) < n:
        raise SystemExit(f"{path}: {len(frames)} frames, fewer than the clip's {n}; generate more episodes")
    return np.ascontiguousarray(frames[:n])


def decode_table(work: Path, n: int, repeats: int) -> list[str]:
    """Table 1: frames/s of the three decoders per size and codec."""
    lines = [
        f"### Decoding: {n} BabyAI GoToLocal frames at {CLIP_FPS} fps, whole file to RGB uint8, median of {repeats}",
        "",
        "| size | codec | KB | decoder | wall s | CPU s | frames/s | vs PyAV | max \\|d\\| vs PyAV | "
        "mean \\|d\\| vs source |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size in (84, 224):
        source = clip(work, size, n)
        for codec in ("h264", "av1"):
            path = work / f"clip-{size}-{codec}.mp4"
            encode(path, source, CLIP_FPS, codec)
            kb = path.stat().st_size / 1024
            with av.open(str(path)) as c:
                decoder = c.streams.video[0].codec_context.name
            rows: dict[str, tuple[float, float, np.ndarray | None]] = {}
            for name, fn in (("PyAV", decode_pyav), ("vla-align", decode_vla_align), ("OpenCV", decode_cv2)):
                rows[name] = timed(repeats, fn, path, n, size)
            ref_wall, _, ref = rows["PyAV"]
            assert ref is not None
            for name in ("vla-align", "PyAV", "OpenCV"):
                wall, cpu, got = rows[name]
                label = f"{name} ({decoder})" if name == "PyAV" else name
                if got is None:
                    lines.append(
                        f"| {size} | {codec} | {kb:.0f} | {name} | - | - | cannot decode | - | - | - |"
                        if name != "OpenCV"
                        else f"| {size} | {codec} | {kb:.0f} | OpenCV | - | - | cannot decode {codec} (0 frames; its "
                        "FFmpeg: *Your platform doesn't support hardware accelerated AV1 decoding*) | - | - | - |"
                    )
                    continue
                diff = int(np.abs(got.astype(np.int16) - ref).max())
                loss = float(np.abs(got.astype(np.int16) - source).mean())
                lines.append(
                    f"| {size} | {codec} | {kb:.0f} | {label} | {wall:.3f} | {cpu:.3f} | {n / wall:.0f} | "
                    f"{ref_wall / wall:.2f}x | {diff} | {loss:.2f} |"
                )
    lines += [
        "",
        "`vs PyAV`: frames/s ratio to the PyAV row of the same file (> 1: faster). `max |d|`: largest absolute "
        "difference of any RGB value; `mean |d| vs source`: mean over all values against the frames encoded.",
    ]
    return lines


# ---------------------------------------------------------------------------------------------- training


def to_video(images: Path, out: Path, codec: str) -> Path:
    """Convert the vla-align image dataset ``images`` into a LeRobot v3.0 video dataset at ``out``: every
    camera's frames (all episodes, in ``index`` order) into videos/<key>/chunk-000/file-000.mp4, the image
    column dropped from the data parquet, the per-episode video columns added to meta/episodes."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(images, out)
    info = read_info(images)
    fps, total = info["fps"], int(info["total_frames"])
    keys = [k for k, f in info["features"].items() if f["dtype"] == "image"]
    ep_files = sorted((out / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    meta = pa.concat_tables([pq.read_table(f, columns=["episode_index", "dataset_from_index"]) for f in ep_files])
    first = dict(zip(meta["episode_index"].to_pylist(), meta["dataset_from_index"].to_pylist(), strict=True))
    for key in keys:
        table = read_dataset(images, cameras=[key])  # every split, decoded by vla-align's image reader
        frames = np.empty((total, *table.frames.shape[1:]), np.uint8)
        for eid, s, n in zip(table.episode_ids, table.episode_start, table.episode_length, strict=True):
            frames[first[int(eid)] : first[int(eid)] + n] = table.frames[s : s + n]
        encode(out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), frames, fps, codec)
        h, w = frames.shape[1:3]
        feat = info["features"][key]
        pix_fmt = CODECS[codec][1]
        feat["dtype"] = "video"
        feat["info"] = {
            "video.height": h,
            "video.width": w,
            "video.codec": INFO_CODEC[codec],
            "video.pix_fmt": pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        }
    for f in sorted((out / "data").glob("chunk-*/file-*.parquet")):
        pq.write_table(pq.read_table(f).drop_columns(keys).replace_schema_metadata(None), f)
    for f in ep_files:
        t = pq.read_table(f)
        start = t["dataset_from_index"].to_numpy().astype(np.float64)
        stop = t["dataset_to_index"].to_numpy().astype(np.float64)
        for key in keys:
            zero = pa.array(np.zeros(t.num_rows, np.int64))
            t = t.append_column(f"videos/{key}/chunk_index", zero).append_column(f"videos/{key}/file_index", zero)
            t = t.append_column(f"videos/{key}/from_timestamp", pa.array(start / fps))
            t = t.append_column(f"videos/{key}/to_timestamp", pa.array(stop / fps))
        pq.write_table(t, f)
    info["video_path"] = VIDEO_PATH
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return out


def train_run(data: Path, run: Path, steps: int, log_every: int) -> tuple[float, float, list[dict[str, Any]]]:
    """``vla-align train --preset tiny`` from scratch: wall and child CPU seconds, and the logged records."""
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, "-m", "vla_align", "train", "--preset", "tiny", "--data", str(data), "--out", str(run)]
    cmd += ["--train.steps", str(steps), "--train.select.every", "0", "--train.log-every", str(log_every)]
    print("$", " ".join(cmd), flush=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return wall, cpu, [r for r in records if "samples_per_s" in r]


def du_mb(path: Path, parts: tuple[str, ...] = ("data", "videos")) -> float:
    return sum(f.stat().st_size for p in parts for f in (path / p).rglob("*") if f.is_file()) / 2**20


def train_table(work: Path, episodes: int, steps: int, log_every: int, repeats: int) -> list[str]:
    """Table 2: load time and training samples/s on images, lossless H.264 and LeRobot-style AV1."""
    images = babyai(work / "babyai-train-images", episodes=episodes)
    datasets = {
        "images (PNG in parquet)": images,
        "h264 lossless (libx264rgb qp 0)": to_video(images, work / "babyai-train-h264", "h264-lossless"),
        "av1 (libsvtav1 crf 30 g 2)": to_video(images, work / "babyai-train-av1", "av1"),
    }
    cfg = get_preset("tiny")
    rows, verdict = [], []
    for name, path in datasets.items():
        load_wall, load_cpu, table = timed(repeats, read_dataset, path, split="train", **cfg.data.frame_options(path))
        wall, cpu, records = train_run(path, work / f"run-{path.name}", steps, log_every)
        rows.append((name, path, load_wall, load_cpu, table, wall, cpu, records))
    ref = rows[0]
    ref_frames, ref_losses = ref[4].frames, [r["loss/total"] for r in ref[7]]
    ref_rate = statistics.median(r["samples_per_s"] for r in ref[7])
    n = len(ref_frames)
    lines = [
        f"### Training on video vs images: BabyAI GoToLocal, {episodes} train episodes ({n} frames, "
        f"{ref_frames.shape[1]} px), `vla-align train --preset tiny --train.steps {steps} "
        f"--train.select.every 0`, load median of {repeats}",
        "",
        "| data | data+videos MB | load wall s | load CPU s | load frames/s | load vs images | train samples/s | "
        "train vs images | train cmd wall s | train cmd CPU s | frames mean / max \\|d\\| vs images | final loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, path, load_wall, load_cpu, table, wall, cpu, records in rows:
        rate = statistics.median(r["samples_per_s"] for r in records)
        losses = [r["loss/total"] for r in records]
        delta = np.abs(table.frames.astype(np.int16) - ref_frames)
        diff = int(delta.max())
        if name.startswith("h264") and (diff != 0 or losses != ref_losses):
            raise SystemExit(
                f"{name}: lossless video differs from the images (max |d| {diff}, losses {losses} vs {ref_losses})"
            )
        lines.append(
            f"| {name} | {du_mb(path):.2f} | {load_wall:.2f} | {load_cpu:.2f} | {n / load_wall:.0f} | "
            f"{ref[2] / load_wall:.2f}x | {rate:.0f} | {rate / ref_rate:.2f}x | {wall:.1f} | {cpu:.1f} | "
            f"{delta.mean():.2f} / {diff} | {losses[-1]:.4f} |"
        )
        if not name.startswith("images"):
            verdict.append(
                f"{name.split(' ')[0]} {rate / ref_rate:.2f}x ({'within' if rate >= 0.8 * ref_rate else 'NOT within'})"
            )
    lines += [
        "",
        "The h264 lossless run logged exactly the images run's losses at every logged step (checked). "
        "`load vs images` and `train vs images` are speed ratios (> 1: faster than images). "
        f"Training samples/s on video vs images (target: within 20 %): {'; '.join(verdict)}.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, writes nothing")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, help="keep the datasets and runs here (default: a temporary folder)")
    parser.add_argument("--frames", type=int, help="decoding clip length (600; --quick 100)")
    parser.add_argument("--episodes", type=int, help="training episodes (400; --quick 40)")
    parser.add_argument("--steps", type=int, help="training steps (200; --quick 20)")
    parser.add_argument("--repeats", type=int, help="decode / load repeats (3; --quick: 3 decode, 1 load)")
    args = parser.parse_args()
    frames = args.frames or (100 if args.quick else 600)
    episodes = args.episodes or (40 if args.quick else 400)
    steps = args.steps or (20 if args.quick else 200)
    log_every = max(1, steps // 4)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        decode = decode_table(work, frames - frames % EPISODE or EPISODE, args.repeats or 3)
        train = train_table(work, episodes, steps, log_every, args.repeats or (1 if args.quick else 3))
    lines = [
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`",
        "",
        f"Machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} CPUs; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), PyAV {av.__version__} (FFmpeg {av.library_versions['libavcodec']} "
        f"libavcodec), OpenCV {cv2.__version__}",
        "",
        *decode,
        "",
        *train,
    ]
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "video_throughput.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
