"""Checks of ``meta/info.json`` and of the paths a dataset reads (used by :mod:`vla_align.data.lerobot`).

Every check raises one :class:`DatasetError` that names the file, the key, what is wrong and what to do;
none of them rewrites a value or drops data. Paths are confined to the dataset's folder: ``data_path``
and ``video_path`` may only use LeRobot's documented template fields with an integer format, and every
file read must resolve (symbolic links followed) to a place under the dataset root. Cameras
(:func:`select_cameras`) must be 8-bit colour (no depth map, grey or RGBA); a LeRobot v2.x dataset is
pointed at LeRobot's v2.1 -> v3.0 converter (:func:`check_version`).
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from PIL import Image

from ..errors import DatasetError
from .episode import ActionSpec

FIX = "fix meta/info.json or regenerate the dataset"
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "data_path": ("chunk_index", "file_index"),
    "video_path": ("video_key", "chunk_index", "file_index"),
}
TEMPLATE_EXAMPLES = {
    "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
    "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
}
COUNT_KEYS = ("total_episodes", "total_frames", "total_tasks", "chunks_size")
SIZE_KEYS = ("data_files_size_in_mb", "video_files_size_in_mb")
_INT_SPEC = re.compile(r"0?[1-9]?[0-9]?d?")  # "", "d", "3d", "03d": zero-padded integers, at most 99 wide
# Where the writer also stores the action spec: features["action"]["info"][ACTION_SPEC_KEY].
ACTION_SPEC_KEY = "vla_align.action_spec"
_SPLIT = re.compile(r"\s*([0-9]{1,18})\s*:\s*([0-9]{1,18})\s*")


def is_int(x: object) -> TypeGuard[int]:
    """A JSON integer (``True`` / ``False`` are not)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """A JSON number (``True`` / ``False`` are not)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_info(info: dict[str, Any], info_path: Path) -> None:
    """Types and ranges of every key of info.json the reader uses (``fps``, ``features``, totals, path
    templates, ``splits``, ``vla_align.action_spec``)."""
    fps = info["fps"]
    if not (is_number(fps) and math.isfinite(fps) and fps > 0):
        raise DatasetError(
            f"{info_path}: 'fps' is {fps!r}; it must be a positive number of frames per second "
            f"(LeRobot writes an integer such as 10); {FIX}"
        )
    check_features(info["features"], info_path)
    for key in COUNT_KEYS:
        low = 1 if key == "chunks_size" else 0
        if key in info and not (is_int(info[key]) and info[key] >= low):
            raise DatasetError(f"{info_path}: {key!r} is {info[key]!r}; it must be an integer >= {low}; {FIX}")
    for key in ("robot_type",):
        if info.get(key) is not None and not isinstance(info[key], str):
            raise DatasetError(f"{info_path}: {key!r} is {info[key]!r}; it must be a string; {FIX}")
    for key in SIZE_KEYS:
        value = info.get(key)
        if value is not None and not (is_number(value) and math.isfinite(value) and value > 0):
            raise DatasetError(f"{info_path}: {key!r} is {value!r}; it must be a positive number of MB; {FIX}")
    for key in TEMPLATE_FIELDS:
        if key in info and not (key == "video_path" and info[key] is None):
            check_template(info[key], key, info_path)
    parse_splits(info, info_path)
    action_spec_from_info(info, info_path)


def check_features(features: object, info_path: Path) -> None:
    """``features``: an object of {dtype: str, shape: [positive ints], names: list | object | null}."""
    if not isinstance(features, dict) or not features:
        got = type(features).__name__ if not isinstance(features, dict) else "an empty object"
        raise DatasetError(
            f"{info_path}: 'features' is {got}; expected an object mapping each feature name to "
            f'{{"dtype", "shape", "names"}}; {FIX}'
        )
    for key, feat in features.items():
        where = f"{info_path}: features[{key!r}]"
        if not isinstance(feat, dict):
            raise DatasetError(f"{where} is {feat!r}; expected an object with 'dtype', 'shape' and 'names'; {FIX}")
        if not isinstance(feat.get("dtype"), str):
            raise DatasetError(f"{where}['dtype'] is {feat.get('dtype')!r}; expected a string such as 'float32'; {FIX}")
        shape = feat.get("shape")
        if not (isinstance(shape, list) and all(is_int(s) and s >= 1 for s in shape)):
            raise DatasetError(
                f"{where}['shape'] is {shape!r}; expected a list of positive integers such as [3]; {FIX}"
            )
        names = feat.get("names")
        if names is not None and not isinstance(names, list | dict):
            raise DatasetError(f"{where}['names'] is {names!r}; expected a list, an object or null; {FIX}")


def feature_width(info: dict[str, Any], key: str) -> int | None:
    """The number of values per frame of feature ``key`` (product of its shape); None when not described."""
    feat = info["features"].get(key)
    if feat is None:
        return None
    return int(math.prod(feat["shape"]))


def check_template(template: object, key: str, info_path: Path) -> None:
    """``data_path`` / ``video_path``: a relative path template using only LeRobot's fields, as integers."""
    allowed = TEMPLATE_FIELDS[key]
    how = f"use a relative path such as {TEMPLATE_EXAMPLES[key]!r}; {FIX}"
    if not isinstance(template, str):
        raise DatasetError(f"{info_path}: {key!r} is {template!r}; {how}")
    where = f"{info_path}: {key!r} is {template!r}"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise DatasetError(f"{where}, not a valid template ({e}); {how}") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        spec_ok = (spec or "") == "" if field == "video_key" else _INT_SPEC.fullmatch(spec or "") is not None
        if field not in allowed or conversion is not None or not spec_ok:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            fields = ", ".join("{" + f + "}" for f in allowed)
            raise DatasetError(
                f"{where}: {shown} is not allowed, only {fields} (integers with a format such as :03d); {how}"
            )
    if not template.strip() or template.endswith(("/", "\\")):
        raise DatasetError(f"{where}: it must name a file; {how}")
    components = re.split(r"[/\\]", template)
    if "\x00" in template or template.startswith(("/", "\\", "~")) or ".." in components:
        raise DatasetError(f"{where}: it must stay inside the dataset (no absolute path, no '..'); {how}")


def parse_splits(info: dict[str, Any], info_path: Path) -> dict[str, tuple[int, int]]:
    """``splits`` as half-open episode ranges: 'start:end' strings, within total_episodes, disjoint."""
    raw = info.get("splits")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DatasetError(f'{info_path}: \'splits\' is {raw!r}; expected an object such as {{"train": "0:8"}}; {FIX}')
    total = info.get("total_episodes")
    out: dict[str, tuple[int, int]] = {}
    for name, value in raw.items():
        m = _SPLIT.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            raise DatasetError(
                f"{info_path}: splits[{name!r}] is {value!r}; expected 'start:end' with integer episode "
                f"indices such as '0:8'; {FIX}"
            )
        start, end = int(m[1]), int(m[2])
        if start > end:
            raise DatasetError(f"{info_path}: splits[{name!r}] is {value!r}, its start is after its end; {FIX}")
        if is_int(total) and end > total:
            raise DatasetError(
                f"{info_path}: splits[{name!r}] is {value!r}, beyond the {total} episodes of the dataset "
                f"('total_episodes'); {FIX}"
            )
        out[name] = (start, end)
    ranges = sorted((r, n) for n, r in out.items() if r[0] < r[1])
    for (a, a_name), (b, b_name) in itertools.pairwise(ranges):
        if b[0] < a[1]:
            raise DatasetError(
                f"{info_path}: splits {a_name!r} ({a[0]}:{a[1]}) and {b_name!r} ({b[0]}:{b[1]}) overlap; "
                f"an episode may be in one split only; {FIX}"
            )
    return out


def action_spec_from_info(info: dict[str, Any], info_path: Path) -> ActionSpec | None:
    """The action spec stored under ``vla_align.action_spec``, else under ``features.action.info``
    (:data:`ACTION_SPEC_KEY`, where it survives LeRobot's tools); None for a dataset written by LeRobot."""
    section = info.get("vla_align")
    if section is not None and not isinstance(section, dict):
        raise DatasetError(f"{info_path}: 'vla_align' is {section!r}; expected an object; {FIX}")
    if section is not None and "action_spec" in section:
        return _parse_action_spec(section["action_spec"], f"{info_path}: vla_align.action_spec")
    feature_info = info["features"].get("action", {}).get("info")
    if isinstance(feature_info, dict) and ACTION_SPEC_KEY in feature_info:
        return _parse_action_spec(feature_info[ACTION_SPEC_KEY], f"{info_path}: features.action.info.{ACTION_SPEC_KEY}")
    return None


def _parse_action_spec(raw: object, name: str) -> ActionSpec:
    """An :class:`ActionSpec` from its stored form ``raw``, found at ``name`` (file and key)."""
    where = f"{name} {raw!r}"
    if not isinstance(raw, dict):
        raise DatasetError(f"{where} is not an object with 'kind', 'dim', 'num_actions', 'names'; {FIX}")
    for key in ("dim", "num_actions"):
        if key in raw and not is_int(raw[key]):
            raise DatasetError(f"{where}: {key!r} must be an integer; {FIX}")
    names = raw.get("names", [])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DatasetError(f"{where}: 'names' must be a list of strings; {FIX}")
    try:
        return ActionSpec.from_dict(raw)
    except (KeyError, TypeError, ValueError, DatasetError) as e:
        raise DatasetError(f"{where} is invalid ({e}); {FIX}") from None


def _stat_problem(path: Path) -> str | None:
    """Why ``path`` cannot be looked at (a symbolic link loop, no permission), or None."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop; fix or remove the link"
        if e.errno == errno.EACCES:
            return "cannot be read (permission denied); fix its permissions"
    return None


def check_reachable(path: Path) -> None:
    """Refuse a path that loops through symbolic links or that we may not read (``exists()`` says False)."""
    problem = _stat_problem(path)
    if problem is not None:
        raise DatasetError(f"{path}: {problem}")


def resolve_inside(root: Path, rel: str | Path, what: str) -> Path:
    """``root / rel``, refused when it (symbolic links resolved) leaves ``root`` or loops."""
    path = root / rel
    check_reachable(path)
    try:
        resolved, base = path.resolve(), root.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop in Python < 3.13
        raise DatasetError(f"{path}: cannot be resolved ({e}); fix the links or regenerate the dataset") from None
    if resolved != base and base not in resolved.parents:
        raise DatasetError(
            f"{path}: {what} resolves to {resolved}, outside the dataset folder {base}; a dataset only reads "
            "files under its own folder (copy the files in instead of linking them, or fix meta/info.json)"
        )
    return path


@dataclass(frozen=True)
class Camera:
    """One camera feature of info.json: its key, whether it is stored as mp4 video, its (H, W)."""

    key: str
    video: bool
    shape: tuple[int, int]


def _camera(key: str, feat: dict[str, Any], info_path: Path) -> Camera:
    """Camera ``key`` checked to hold 8-bit colour frames: (H, W, 3) or channels-first (3, H, W), no depth map."""
    where = f"{info_path}: camera {key!r}"
    shape, names = list(feat["shape"]), feat.get("names") or []
    if len(shape) == 3 and list(names)[:1] == ["channels"]:
        shape = shape[1:] + shape[:1]
    extra: dict[str, Any] = feat["info"] if isinstance(feat.get("info"), dict) else {}
    if extra.get("video.is_depth_map") is True:
        raise DatasetError(f"{where} is a depth map; only colour (RGB) cameras can be read, choose another camera")
    channels = extra.get("video.channels", 3)
    if len(shape) != 3 or shape[2] != 3 or channels != 3:
        raise DatasetError(
            f"{where} has shape {feat['shape']}" + (f" and video.channels {channels}" if channels != 3 else "") + "; "
            "only colour cameras of shape [height, width, 3] can be read (not depth, grey or RGBA); choose another "
            "camera or fix meta/info.json"
        )
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and shape[0] * shape[1] > limit:
        raise DatasetError(
            f"{info_path}: feature {key!r} has shape {shape}, {shape[0] * shape[1]:,} pixels per frame, more than "
            f"Pillow's limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS); fix the shape or downscale the images"
        )
    return Camera(key, feat["dtype"] == "video", (int(shape[0]), int(shape[1])))


def _check_video_fps(key: str, info: dict[str, Any], info_path: Path) -> None:
    """A video camera's ``video.fps`` (when info.json records one) agrees with ``fps`` within 1%."""
    extra = info["features"][key].get("info")
    rate, fps = (extra.get("video.fps") if isinstance(extra, dict) else None), info["fps"]
    if is_number(rate) and is_number(fps) and not abs(rate - fps) <= 0.01 * fps:
        raise DatasetError(
            f"{info_path}: camera {key!r} has video.fps {rate!r} but 'fps' is {fps!r}; the frames' timestamps "
            f"assume one frame rate: {FIX} (or re-encode the video at {fps} fps)"
        )


def select_cameras(info: dict[str, Any], info_path: Path, wanted: Sequence[str]) -> tuple[list[Camera], list[str]]:
    """The cameras ``wanted`` (all checked), or when none are named the first camera in info.json order;
    also returns the cameras left unread (for a warning)."""
    cams = [k for k, f in info["features"].items() if f["dtype"] in ("image", "video")]
    if not cams:
        raise DatasetError(f"{info_path}: no image or video feature in 'features'; a dataset needs a camera")
    for key in wanted:
        if key not in cams:
            raise DatasetError(
                f"{info_path}: camera {key!r} is not in the dataset (has: {', '.join(cams)}); "
                "set data.cameras to some of these"
            )
    if len(set(wanted)) != len(wanted):
        raise DatasetError(f"data.cameras {list(wanted)} names a camera twice; name each camera once")
    keys = list(wanted) or cams[:1]
    chosen = [_camera(k, info["features"][k], info_path) for k in keys]
    for cam in chosen:
        _check_video_fps(cam.key, info, info_path)
    if chosen[0].video and info.get("video_path") is None:
        raise DatasetError(
            f"{info_path}: camera {chosen[0].key!r} is stored as mp4 video but 'video_path' is "
            f"{info.get('video_path')!r}; set it (LeRobot writes {TEMPLATE_EXAMPLES['video_path']!r}) or {FIX}"
        )
    return chosen, [k for k in cams if k not in keys]


def check_version(info: dict[str, Any], info_path: Path, supported: str) -> None:
    """``codebase_version`` must be ``supported``; LeRobot v2.x datasets are pointed at LeRobot's converter."""
    version = info.get("codebase_version")
    if version == supported:
        return
    how = "convert it with LeRobot's v3.0 conversion script or regenerate it"
    if isinstance(version, str) and version.startswith("v2."):
        how = (
            "convert it with LeRobot's converter: python -m lerobot.scripts.convert_dataset_v21_to_v30 "
            "--repo-id=<org/name> --root=<this folder> (LeRobot >= 0.4; older releases name the module "
            "lerobot.datasets.v30.convert_dataset_v21_to_v30)"
        )
    raise DatasetError(f"{info_path}: codebase_version is {version!r}, only {supported!r} is supported; {how}")
