"""Run directories: load a trained run back, write final metrics, make datasets a run needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import atomic, checkpoint
from . import config as config_lib
from .data.episode import ActionSpec
from .data.source import DataConfig
from .errors import UserError
from .model import TriModalModel
from .presets import RunConfig
from .progress import console

RUN_EXTRA_KEYS = ("dataset",)


def load_run_config(run_dir: Path) -> tuple[RunConfig, dict[str, Any]]:
    """The RunConfig of a run and the extra (non-config) sections of its config.json."""
    data = checkpoint.read_run_config(run_dir)
    extra = {k: data.pop(k) for k in RUN_EXTRA_KEYS if k in data}
    try:
        cfg = config_lib.from_dict(RunConfig, data)
    except UserError as exc:
        raise UserError(f"{run_dir / 'config.json'}: {exc}") from None
    return cfg, extra


def load_model(run_dir: Path, device: str | torch.device = "cpu") -> tuple[TriModalModel, RunConfig]:
    """Rebuild the model from config.json and load checkpoint/model.safetensors; no dataset needed."""
    cfg, extra = load_run_config(run_dir)
    if "dataset" not in extra:
        raise UserError(f"{run_dir / 'config.json'}: has no 'dataset' section; was this run trained by vla-align?")
    spec = ActionSpec.from_dict(extra["dataset"]["info"]["action_spec"])
    model = cfg.model.build(spec, int(extra["dataset"].get("state_dim", 0)))
    checkpoint.load_weights(model, run_dir / "checkpoint")
    return model.to(device).eval(), cfg


def update_metrics(run_dir: Path, values: dict[str, Any]) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    merged: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    merged.update(values)
    atomic.write_json(path, dict(sorted(merged.items())))
    return merged


def ensure_dataset(data: DataConfig, overwrite: bool = False) -> Path:
    """Generate the dataset ``data`` describes unless an identical one is already on disk."""
    path = data.resolved_path()
    if path.exists() and not overwrite:
        info_path = path / "meta" / "info.json"
        if info_path.is_file():
            full = json.loads(info_path.read_text())
            info = full.get("vla_align", {})
            splits = {name: f"{a}:{b}" for name, (a, b) in _split_ranges(data.episodes).items()}
            same = info.get("seed") == data.seed and info.get("image_size") == data.image_size
            if data.source == "metaworld":
                from .sim.metaworld import resolve_tasks

                same = same and info.get("tasks") == resolve_tasks(data.levels)
                same = same and info.get("episodes_per_task") == data.episodes
            else:
                same = (
                    same and full.get("splits") == splits and info.get("levels") == [_level_id(x) for x in data.levels]
                )
            if same:
                console.print(f"reusing dataset {path}")
                return path
        raise UserError(
            f"{path} exists but was not generated from this data config; pass --overwrite or set --data.path"
        )
    if data.source == "babyai":
        from .data.babyai import generate_babyai

        return generate_babyai(
            path, list(data.levels), data.episodes, data.seed, image_size=data.image_size, overwrite=overwrite
        )
    if data.source == "metaworld":
        from .data.metaworld import generate_metaworld

        return generate_metaworld(
            path, list(data.levels), data.episodes, data.seed, image_size=data.image_size, overwrite=overwrite
        )
    raise UserError(f"unknown data source {data.source!r}")


def _level_id(level: str) -> str:
    from .sim.babyai import env_id

    return env_id(level)


def _split_ranges(episodes: dict[str, int]) -> dict[str, tuple[int, int]]:
    out, start = {}, 0
    for name, n in episodes.items():
        out[name] = (start, start + n)
        start += n
    return out
