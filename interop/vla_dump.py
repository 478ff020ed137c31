"""Dump what vla-align's own reader reads from a dataset into an .npz + .json pair.

Runs in vla-align's virtual environment (interop/roundtrip.py starts it there with a subprocess), so
the two projects never share an interpreter; arrays cross over through the .npz file.

    python interop/vla_dump.py DATASET OUT_PREFIX [--split NAME] [--camera KEY]

Writes OUT_PREFIX.npz (frames, actions, state, timestamps, episode_ids, episode_start, episode_length)
and OUT_PREFIX.json (instructions, tasks, action spec, info.json's "vla_align" entry, fps, and the error
when the reader refused the dataset). Exits 0 in both cases: the caller reads "error" from the json.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import traceback
from pathlib import Path

import numpy as np


def _timestamps(table: object) -> tuple[np.ndarray, str]:
    """Per-frame timestamps: the reader's own when it returns them, else frame_index / fps."""
    for name in ("timestamps", "timestamp"):
        ts = getattr(table, name, None)
        if ts is not None:
            return np.asarray(ts, dtype=np.float32), f"FrameTable.{name}"
    lengths = np.asarray(table.episode_length)  # type: ignore[attr-defined]
    fps = float(table.fps)  # type: ignore[attr-defined]
    ts = np.concatenate([(np.arange(n, dtype=np.float64) / fps).astype(np.float32) for n in lengths])
    return ts, "derived: frame_index / fps (FrameTable has no timestamps)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=Path)
    ap.add_argument("out", type=Path, help="output prefix (.npz and .json are added)")
    ap.add_argument("--split")
    ap.add_argument("--cameras", nargs="+", help="cameras to read (tiled), when the reader can select cameras")
    args = ap.parse_args(argv)
    meta: dict[str, object] = {"dataset": str(args.dataset), "split": args.split}
    try:
        import vla_align
        from vla_align import read_dataset

        meta["vla_align_version"] = getattr(vla_align, "__version__", "?")
        params = inspect.signature(read_dataset).parameters
        meta["read_dataset_params"] = list(params)
        kwargs: dict[str, object] = {}
        if args.split:
            kwargs["split"] = args.split
        if args.cameras:
            meta["camera_param"] = "cameras" if "cameras" in params else None
            if "cameras" in params:
                kwargs["cameras"] = list(args.cameras)
            else:
                return _write(args, meta | {"error": None})  # the reader cannot select cameras yet
        table = read_dataset(args.dataset, **kwargs)
        ts, ts_source = _timestamps(table)
        arrays = {
            "frames": table.frames,
            "actions": table.actions,
            "timestamps": ts,
            "episode_ids": table.episode_ids,
            "episode_start": table.episode_start,
            "episode_length": table.episode_length,
        }
        if table.state is not None:
            arrays["state"] = table.state
        np.savez(f"{args.out}.npz", **arrays)
        meta.update(
            {
                "error": None,
                "instructions": list(table.instructions),
                "tasks": list(table.tasks),
                "fps": table.fps,
                "action_spec": table.action_spec.to_dict(),
                "info_vla_align": table.info.get("vla_align"),
                "timestamps_source": ts_source,
                "frames_shape": list(table.frames.shape),
                "cameras": getattr(table, "cameras", None),
            }
        )
    except BaseException as e:  # the caller reports how the reader refused
        meta["error"] = f"{type(e).__name__}: {e}"
        meta["traceback"] = traceback.format_exc()[-3000:]
    return _write(args, meta)


def _write(args: argparse.Namespace, meta: dict[str, object]) -> int:
    Path(f"{args.out}.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
