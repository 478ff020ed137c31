"""Checkpoints: ``model.safetensors`` (weights) + the run's ``config.json``; ``train_state.pt``
(optimizer, scheduler, step) for resuming, read with ``weights_only=True`` so loading never
executes code. No pickled modules anywhere."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from . import atomic
from .errors import UserError

FORMAT = "vla-align/1"
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"


def save_weights(module: torch.nn.Module, directory: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic.write_bytes(directory / MODEL_FILE, save(tensors, metadata={"format": FORMAT}))


def load_weights(module: torch.nn.Module, directory: Path) -> None:
    path = directory / MODEL_FILE
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train first with `vla-align train`")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: unreadable checkpoint ({exc}); retrain or restore the file") from None
    try:
        missing, unexpected = module.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise UserError(
            f"{path}: does not match the model built from config.json ({first}); was the config edited?"
        ) from None
    if missing or unexpected:
        raise UserError(
            f"{path}: does not match the model built from config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}); was the config edited?"
        )


def save_train_state(state: dict[str, Any], directory: Path) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic.write_bytes(directory / STATE_FILE, buffer.getvalue())


def load_train_state(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: unreadable training state ({exc}); start a new run") from None
    return state


def read_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a run directory (config.json missing); pass the --out of a training run")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}); restore it or retrain") from None
    return data
