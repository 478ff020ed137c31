"""Run directories: load a trained run back, write final metrics, make datasets a run needs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from . import atomic, checkpoint, safety
from . import config as config_lib
from .data import split_file
from .data.episode import ActionSpec
from .errors import UserError
from .model import TriModalModel
from .presets import RunConfig
from .progress import console
from .sim.base import DataConfig

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
    """Rebuild the model from config.json and load checkpoint/model.safetensors; no dataset needed.
    ``device`` is a torch device or ``"auto"`` (CUDA when a GPU is visible, else the CPU)."""
    from .train import resolve_device

    target = resolve_device(device, "device")
    cfg, extra = load_run_config(run_dir)
    if "dataset" not in extra:
        raise UserError(f"{run_dir / 'config.json'}: has no 'dataset' section; was this run trained by vla-align?")
    spec = ActionSpec.from_dict(extra["dataset"]["info"]["action_spec"])
    model = cfg.model.build(spec, int(extra["dataset"].get("state_dim", 0)))
    checkpoint.load_weights(model, run_dir / "checkpoint")
    return model.to(target).eval(), cfg


def read_metrics(path: Path) -> tuple[dict[str, Any], str | None]:
    """The flat metrics in ``path`` and, when the file is damaged (not a JSON object), why (else None)."""
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, f"not valid JSON ({exc})"
    if not isinstance(data, dict):
        return {}, f"a JSON {type(data).__name__}, not an object"
    return data, None


def update_metrics(run_dir: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``run_dir/metrics.json``. A damaged metrics.json never loses the new
    numbers: it is kept as ``metrics.json.bak`` (``.bak.1``, ... when taken) and a fresh one written."""
    path = run_dir / "metrics.json"
    merged, damage = read_metrics(path)
    if damage is not None:
        backup = _free_name(path.with_name(path.name + ".bak"))
        os.replace(path, backup)
        safety.note(f"{path} was damaged ({damage}); kept it as {backup} and wrote a new one")
    merged.update(values)
    atomic.write_json(path, dict(sorted(merged.items())))
    return merged


def _free_name(path: Path) -> Path:
    n, candidate = 0, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def ensure_dataset(data: DataConfig, overwrite: bool = False) -> Path:
    """Generate the dataset ``data`` describes unless an identical one is already on disk."""
    from .sim import get_simulator

    sim = get_simulator(data.source)
    path = data.resolved_path()
    if path.exists() and not overwrite:
        info = _json_object(path / "meta" / "info.json")
        if info is not None and sim.describes(data, info):
            console.print(f"reusing dataset {path}")
            return path
        raise UserError(
            f"{path} exists but was not generated from this data config; pass --overwrite or set --data.path"
        )
    return sim.generate(data, path, overwrite)


def episodes_file(split: str, run_split: str) -> str:
    """Where the closed-loop episodes of an evaluation on ``split`` go: the run's own evaluation split
    keeps ``eval_episodes.jsonl`` (what the report replays); another split gets its own file."""
    from .sim.base import EPISODES_FILE

    return EPISODES_FILE if split == run_split else f"eval_episodes_{split}.jsonl"


def evaluate_run(
    run_dir: Path,
    cfg: RunConfig,
    dataset: dict[str, Any],
    model: TriModalModel,
    data_path: Path,
    episodes_name: str | None = None,
) -> dict[str, Any]:
    """Retrieval (and, for continuous actions, trajectory) metrics on ``cfg.eval.split`` when the dataset
    is on disk, and closed loop through the dataset's simulator (from the dataset description alone
    when it is not); the closed-loop episodes go to ``run_dir/episodes_name`` (default
    ``eval_episodes.jsonl``)."""
    from dataclasses import replace

    from .evaluate import evaluate_retrieval, evaluate_trajectories
    from .sim import EvalContext, evaluate_closed_loop, simulator_for
    from .sim.base import EPISODES_FILE, EpisodeResult, write_episodes

    sim = simulator_for(dataset.get("info") or {})
    on_disk = (data_path / "meta" / "info.json").is_file()
    metrics: dict[str, Any] = {}
    table = None
    splits = split_file.run_splits(cfg.data.splits)  # the split file the run was trained with
    if on_disk:
        split_file.check_split_record(dataset.get("splits"), data_path, splits, f"run {run_dir}")
    if cfg.eval.split == "train" or cfg.eval.sim.split == "train":
        console.print("note: evaluating the train split: these episodes were seen in training, not held out")
    if on_disk or sim is None:  # without a simulator the dataset is all there is: read_dataset says what is wrong
        table = replace(cfg.data, splits=splits).read(data_path, cfg.eval.split)
        metrics.update(evaluate_retrieval(model, table, cfg.eval))
        if table.action_spec.kind == "continuous":
            metrics.update(evaluate_trajectories(model, table, cfg.eval))
    else:
        console.print(f"dataset {data_path} not on disk: retrieval and trajectory metrics skipped; closed loop only")
    if not cfg.eval.sim.episodes or model.policy is None:
        return metrics
    if sim is None:
        console.print(f"closed loop: none ({data_path} was not generated by a registered simulator)")
        return metrics
    split = cfg.eval.sim.split
    sim_table = table if table is not None and split == cfg.eval.split else None
    if sim_table is None and on_disk:
        sim_table = replace(cfg.data, splits=splits).read(data_path, split)
    episodes: list[EpisodeResult] = []
    ctx = EvalContext.from_run(dataset, split, sim_table)
    metrics.update(evaluate_closed_loop(sim, model, ctx, cfg.eval.sim, episodes_out=episodes))
    write_episodes(run_dir / (episodes_name or EPISODES_FILE), episodes)
    return metrics


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_run_dataset(run_dir: Path, dataset: dict[str, Any], data_path: Path) -> None:
    """Refuse to evaluate (or report) a run on a dataset other than the one it was trained on: by the
    fingerprint the run recorded, or for older runs by the action spec of its dataset description."""
    fingerprint = checkpoint.read_fingerprint(run_dir)
    if fingerprint is not None:
        checkpoint.check_dataset_unchanged(run_dir, data_path, fingerprint)
        return
    info = _json_object(data_path / "meta" / "info.json")
    ours = (info or {}).get("vla_align")
    theirs = (dataset.get("info") or {}).get("action_spec")
    if isinstance(ours, dict) and theirs is not None and ours.get("action_spec") != theirs:
        raise UserError(
            f"{data_path}: its action spec differs from that of the dataset run {run_dir} was trained on; "
            "pass that dataset (or omit --data)"
        )
