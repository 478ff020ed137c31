"""Write small LeRobotDatasets with LeRobot's own writer, and what LeRobot's own reader reads back.

Runs in LeRobot's virtual environment (``make interop``), never in vla-align's. For each dataset below it
calls ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` / ``finalize``, reopens the result with
``LeRobotDataset(repo_id, root=...)`` and stores every frame as LeRobot returns it in
``<name>.expected.npz`` (arrays) and ``<name>.expected.json`` (task strings, versions, features) beside
the dataset. tests/integration/test_lerobot_fixtures.py compares vla-align's reader against those
files without LeRobot installed.

Content is a deterministic function of ``--seed``: smooth frames (a coloured square drifting over a
gradient, no pixel noise, so PNG and video stay small), a state and a continuous action that follow
the square, and one instruction per episode taken from a few different ones.

    python interop/make_fixtures.py --out DIR [--copy-to tests/fixtures/lerobot] [--seed 0]
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset

INSTRUCTIONS = [
    "pick up the red block",
    "push the blue cube to the left",
    "open the top drawer",
    "place the green ball in the bowl",
]
STATE_NAMES = ["x", "y", "gripper"]
ACTION_NAMES = ["dx", "dy", "grip"]
DISCRETE_NAMES = ["move"]  # LeRobot keeps one name per value, not a vocabulary of ids
NUM_DISCRETE = 4
HEIGHT, WIDTH = 32, 48  # not square, so a transposed reader shows up


def _frames(rng: np.random.Generator, n: int, hue: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W, 3) uint8 frames and the square's (n, 2) position in [0, 1]."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 255 // WIDTH, yy * 255 // HEIGHT, np.full_like(xx, 40 + 50 * hue)], -1).astype(np.uint8)
    colour = np.array([[220, 40, 40], [40, 80, 220], [40, 200, 60], [230, 200, 40]][hue % 4], dtype=np.uint8)
    pos = rng.uniform(0.1, 0.7, size=2)
    step = rng.uniform(-0.03, 0.03, size=2)
    frames, where = np.empty((n, HEIGHT, WIDTH, 3), np.uint8), np.empty((n, 2), np.float32)
    for t in range(n):
        p = np.clip(pos + t * step, 0.0, 0.8)
        y0, x0 = int(p[0] * HEIGHT), int(p[1] * WIDTH)
        frames[t] = base
        frames[t, y0 : y0 + 8, x0 : x0 + 8] = colour
        where[t] = p
    return frames, where


def _episodes(seed: int, count: int, discrete: bool, cameras: list[str]) -> list[dict]:
    """The frames to add, episode by episode; each frame is the dict add_frame takes."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(count):
        n = int(rng.integers(10, 21))
        task = INSTRUCTIONS[(e * 3 + seed) % len(INSTRUCTIONS)] if e != 2 else INSTRUCTIONS[seed % len(INSTRUCTIONS)]
        views = {cam: _frames(rng, n, e + k) for k, cam in enumerate(cameras)}
        pos = views[cameras[0]][1]
        grip = (np.arange(n) >= n // 2).astype(np.float32)[:, None]
        state = np.concatenate([pos, grip], 1).astype(np.float32)
        cont = np.concatenate([np.diff(pos, axis=0, append=pos[-1:]) * 10, grip], 1).astype(np.float32)
        frames = []
        for t in range(n):
            frame = {cam: views[cam][0][t] for cam in cameras}
            frame["observation.state"] = state[t]
            if discrete:
                frame["action"] = np.array([int(rng.integers(0, NUM_DISCRETE))], dtype=np.int64)
            else:
                frame["action"] = cont[t]
            frame["task"] = task
            frames.append(frame)
        out.append({"task": task, "frames": frames})
    return out


SPECS: dict[str, dict] = {
    # name: camera dtype, cameras, discrete action?, vcodec (None: LeRobot's default), episodes
    "image_continuous": {"dtype": "image", "cameras": ["observation.images.front"], "discrete": False},
    "image_discrete": {"dtype": "image", "cameras": ["observation.images.front"], "discrete": True},
    "video_default": {
        "dtype": "video",
        "cameras": ["observation.images.front", "observation.images.wrist"],
        "discrete": False,
    },
    "video_h264": {"dtype": "video", "cameras": ["observation.images.front"], "discrete": False, "vcodec": "h264"},
}
# Larger ones for interop/roundtrip.py's train -> eval -> report chain (held-out splits of a few episodes
# each); they stay in --out and are never copied to the committed fixtures.
for _name in ("image_continuous", "image_discrete", "video_default"):
    SPECS[f"cli_{_name}"] = {**SPECS[_name], "episodes": 16, "commit": False}


def _features(spec: dict) -> dict:
    feats = {
        cam: {"dtype": spec["dtype"], "shape": (HEIGHT, WIDTH, 3), "names": ["height", "width", "channels"]}
        for cam in spec["cameras"]
    }
    feats["observation.state"] = {"dtype": "float32", "shape": (len(STATE_NAMES),), "names": STATE_NAMES}
    if spec["discrete"]:
        feats["action"] = {"dtype": "int64", "shape": (1,), "names": DISCRETE_NAMES}
    else:
        feats["action"] = {"dtype": "float32", "shape": (len(ACTION_NAMES),), "names": ACTION_NAMES}
    return feats


def _codec_kwargs(vcodec: str | None) -> dict:
    """How this LeRobot takes a video codec: ``vcodec=`` (0.4) or ``rgb_encoder=RGBEncoderConfig`` (0.5+)."""
    if vcodec is None:
        return {}
    params = inspect.signature(LeRobotDataset.create).parameters
    if "vcodec" in params:
        return {"vcodec": vcodec}
    from lerobot.configs import RGBEncoderConfig

    return {"rgb_encoder": RGBEncoderConfig(vcodec=vcodec)}


def _default_vcodec() -> str:
    params = inspect.signature(LeRobotDataset.create).parameters
    if "vcodec" in params:
        return str(params["vcodec"].default)
    from lerobot.configs import RGBEncoderConfig

    return str(RGBEncoderConfig().vcodec)


def write(name: str, spec: dict, root: Path, seed: int, fps: int = 10, episodes: int = 4) -> dict:
    """Write dataset ``name`` at ``root`` with LeRobot's writer; returns what was fed in."""
    kwargs = _codec_kwargs(spec.get("vcodec"))
    np.random.seed(seed)  # LeRobot samples frames for the image statistics with numpy's global generator
    torch.manual_seed(seed)
    ds = LeRobotDataset.create(
        repo_id=f"vla-align-interop/{name}",
        fps=fps,
        features=_features(spec),
        root=root,
        robot_type="synthetic",
        use_videos=spec["dtype"] == "video",
        **kwargs,
    )
    fed = _episodes(seed, spec.get("episodes", episodes), spec["discrete"], spec["cameras"])
    for ep in fed:
        for frame in ep["frames"]:
            ds.add_frame(dict(frame))
        ds.save_episode()
    ds.finalize()
    return {"vcodec": spec.get("vcodec") or _default_vcodec(), "episodes": fed}


def _uint8(img: torch.Tensor) -> np.ndarray:
    """LeRobot's (3, H, W) float image in [0, 1] back to (H, W, 3) uint8."""
    return (img.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


def read_back(name: str, root: Path, cameras: list[str], backend: str) -> tuple[dict[str, np.ndarray], dict]:
    """Every frame of the dataset at ``root`` as LeRobot's reader returns it."""
    ds = LeRobotDataset(repo_id=f"vla-align-interop/{name}", root=root, video_backend=backend)
    cols: dict[str, list] = {k: [] for k in ("action", "state", "timestamp", "episode_index", "frame_index", "index")}
    images: dict[str, list] = {cam: [] for cam in cameras}
    tasks: list[str] = []
    for i in range(len(ds)):
        item = ds[i]
        for cam in cameras:
            images[cam].append(_uint8(item[cam]))
        cols["action"].append(item["action"].numpy())
        cols["state"].append(item["observation.state"].numpy())
        for k in ("timestamp", "episode_index", "frame_index", "index"):
            cols[k].append(item[k].numpy())
        tasks.append(item["task"])
    arrays = {k: np.stack(v) for k, v in cols.items()}
    if arrays["action"].dtype.kind == "i":
        arrays["action"] = arrays["action"].reshape(len(ds))  # one id per frame, as vla-align reads it
    for cam in cameras:
        arrays[f"image/{cam}"] = np.stack(images[cam])
    meta = {
        "tasks_per_frame": tasks,
        "num_frames": len(ds),
        "num_episodes": ds.meta.total_episodes,
        "fps": ds.fps,
        "cameras": cameras,
        "features": {
            k: {"dtype": v["dtype"], "shape": list(v["shape"]), "names": v.get("names")}
            for k, v in ds.meta.features.items()
        },
        "video_backend": getattr(ds, "video_backend", None),
    }
    return arrays, meta


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="where to write the datasets")
    ap.add_argument("--copy-to", type=Path, help="also copy them (and the expected files) here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="dataset names (default: all)")
    ap.add_argument(
        "--video-backend",
        default="pyav",
        help="LeRobot's video decoder (pyav; torchcodec needs FFmpeg's shared libraries on the system)",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    made, failed = [], {}
    for name, spec in SPECS.items():
        if args.only and name not in args.only:
            continue
        root = args.out / name
        if root.exists():
            shutil.rmtree(root)
        try:
            fed = write(name, spec, root, args.seed + list(SPECS).index(name))
            arrays, meta = read_back(name, root, spec["cameras"], args.video_backend)
        except Exception as e:  # one dataset LeRobot refuses must not hide the others
            failed[name] = f"{type(e).__name__}: {e}"
            print(f"[make_fixtures] {name}: FAILED {failed[name]}", file=sys.stderr)
            shutil.rmtree(root, ignore_errors=True)
            continue
        # what went in, to tell codec loss from reader mistakes (video only: images are lossless)
        sent = np.concatenate([[f[spec["cameras"][0]] for f in ep["frames"]] for ep in fed["episodes"]])
        got = arrays[f"image/{spec['cameras'][0]}"]
        meta.update(
            {
                "name": name,
                "lerobot_version": version("lerobot"),
                "torch_version": torch.__version__,
                "camera_dtype": spec["dtype"],
                "vcodec": fed["vcodec"] if spec["dtype"] == "video" else None,
                "discrete_action": spec["discrete"],
                "episode_tasks": [ep["task"] for ep in fed["episodes"]],
                "seed": args.seed + list(SPECS).index(name),
                "written_vs_read_mean_abs_diff": float(np.abs(sent.astype(int) - got.astype(int)).mean()),
                "written_vs_read_max_abs_diff": int(np.abs(sent.astype(int) - got.astype(int)).max()),
            }
        )
        np.savez_compressed(args.out / f"{name}.expected.npz", **arrays)
        (args.out / f"{name}.expected.json").write_text(json.dumps(meta, indent=1) + "\n")
        made.append(name)
        print(
            f"[make_fixtures] {name}: {meta['num_episodes']} episodes, {meta['num_frames']} frames, "
            f"{spec['dtype']}{' ' + str(meta['vcodec']) if meta['vcodec'] else ''}, "
            f"{_dir_size(root) / 1024:.0f} KiB; LeRobot read vs written pixels: mean |diff| "
            f"{meta['written_vs_read_mean_abs_diff']:.3f}, max {meta['written_vs_read_max_abs_diff']}"
        )
    if args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for name in [m for m in made if SPECS[m].get("commit", True)]:
            dest = args.copy_to / name
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(args.out / name, dest)
            for suffix in (".expected.npz", ".expected.json"):
                shutil.copy2(args.out / f"{name}{suffix}", args.copy_to / f"{name}{suffix}")
        print(
            f"[make_fixtures] copied {len(made)} datasets to {args.copy_to}: {_dir_size(args.copy_to) / 1024:.0f} KiB"
        )
    (args.out / "made.json").write_text(json.dumps({"made": made, "failed": failed}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
