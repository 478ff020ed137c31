"""Checkpoints: ``model.safetensors`` (weights) + the run's ``config.json``; ``train_state.pt``
(optimizer, scheduler, step) for resuming, read with ``weights_only=True`` so loading never
executes code. No pickled modules anywhere.

``RUN/checkpoint/`` holds the state a ``--resume`` continues from. With ``train.keep_checkpoints`` N,
each checkpoint is also kept in ``RUN/checkpoints/step-NNNNNN/`` (weights, training state, the marker
``snapshot.json``), the newest N of them, with ``RUN/checkpoints/last`` naming the newest."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from . import atomic, safety
from .errors import UserError

FORMAT = "vla-align/1"
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"


def save_weights(module: torch.nn.Module, directory: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic.write_bytes(directory / MODEL_FILE, save(tensors, metadata={"format": FORMAT}))


def _check_not_a_loop(path: Path) -> None:
    """A symlink that never resolves is reported as such, not as a missing file."""
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            raise UserError(f"{path}: a symbolic link loop; replace it with the file it should point to") from None
        except OSError as exc:
            if "loop" in str(exc).lower() or getattr(exc, "errno", None) == 40:
                raise UserError(f"{path}: a symbolic link loop; replace it with the file it should point to") from None


def load_weights(module: torch.nn.Module, directory: Path) -> None:
    path = directory / MODEL_FILE
    _check_not_a_loop(path)
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
    _check_not_a_loop(path)
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable training state ({first}); start a new run") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= set(state):
        raise UserError(f"{path}: not a vla-align training state (model, optimizer, step missing); start a new run")
    return state


def read_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    _check_not_a_loop(run_dir)
    _check_not_a_loop(path)
    if not path.is_file():
        raise UserError(f"{run_dir}: not a run directory (config.json missing); pass the --out of a training run")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}); restore it or retrain") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; restore it or retrain") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object at the top level; restore it or retrain")
    dataset = data.get("dataset")
    if dataset is not None and not (isinstance(dataset, dict) and isinstance(dataset.get("info"), dict)):
        raise UserError(f"{path}: the 'dataset' section is damaged (it needs an 'info' object); restore it or retrain")
    return data


# --- kept checkpoints: RUN/checkpoints/step-NNNNNN/ and the ``last`` pointer ------------------------

SNAPSHOTS = "checkpoints"  # RUN/checkpoints/: the periodic checkpoints train.keep_checkpoints keeps
LAST = "last"  # RUN/checkpoints/last: a relative symlink to the newest (a one-line text file where links fail)


def snapshot_name(step: int) -> str:
    return f"step-{step:06d}"


def snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """The kept checkpoints of a run (only folders vla-align wrote), oldest first."""
    folder = run_dir / SNAPSHOTS
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = safety.SNAPSHOT_NAME.match(entry.name)
        if match is not None and safety.is_snapshot_dir(entry):
            found.append((int(match["step"]), entry))
    return sorted(found)


def write_snapshot(run_dir: Path, step: int, model: torch.nn.Module, state_file: Path) -> Path:
    """Keep the checkpoint of ``step``: the weights (``model.safetensors``, enough to evaluate with the
    run's config.json), a copy of the training state ``state_file`` (enough to resume from) and the
    marker ``snapshot.json``; written in a ``.partial-`` folder and renamed into place."""
    target = run_dir / SNAPSHOTS / snapshot_name(step)
    with atomic.atomic_directory(target, overwrite=True, kind="checkpoint") as tmp:
        save_weights(model, tmp)
        atomic.write_bytes(tmp / STATE_FILE, state_file.read_bytes())
        atomic.write_json(tmp / safety.SNAPSHOT_FILE, {"format": safety.SNAPSHOT_FORMAT, "step": step})
    return target


def prune_snapshots(run_dir: Path, keep: int, after: int | None = None) -> list[int]:
    """Delete the kept checkpoints beyond the newest ``keep`` and, with ``after``, those of later steps
    than ``after`` (a resumed run redoes them); then point ``last`` at the newest. Returns the steps
    deleted. Only folders :func:`vla_align.safety.is_snapshot_dir` recognises are touched."""
    kept = snapshots(run_dir)
    doomed = [(s, p) for s, p in kept if after is not None and s > after]
    kept = [(s, p) for s, p in kept if after is None or s <= after]
    doomed += kept[: max(0, len(kept) - keep)]
    for _, path in doomed:
        safety.discard(path, "checkpoint")
    point_last(run_dir)
    return sorted(s for s, _ in doomed)


def point_last(run_dir: Path) -> None:
    """Make ``checkpoints/last`` name the newest kept checkpoint (atomically: a link made beside it and
    renamed over it); removed when none is kept."""
    folder = run_dir / SNAPSHOTS
    kept = snapshots(run_dir)
    link = folder / LAST
    if not kept:
        if link.is_symlink() or link.is_file():
            link.unlink()
        return
    name = kept[-1][1].name
    if link.is_symlink() and os.readlink(link) == name:
        return
    tmp = folder / f".{LAST}.{secrets.token_hex(4)}.tmp"
    try:
        os.symlink(name, tmp, target_is_directory=True)
    except (OSError, NotImplementedError):  # no symlinks here (some Windows / network file systems)
        atomic.write_text(link, name + "\n")
        return
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def read_last(run_dir: Path) -> str | None:
    """The name ``checkpoints/last`` points at (a symlink or a one-line text file), or None."""
    link = run_dir / SNAPSHOTS / LAST
    if link.is_symlink():
        return os.readlink(link)
    if link.is_file():
        return link.read_text(encoding="utf-8", errors="replace").strip()
    return None


def snapshot_dir(run_dir: Path, name: str) -> Path:
    """The kept checkpoint ``name`` (``step-NNNNNN`` or ``last``) of a run, checked to be one."""
    folder = run_dir / SNAPSHOTS
    available = ", ".join(p.name for _, p in snapshots(run_dir)[-5:]) or "none"
    if name == LAST:
        pointed = read_last(run_dir)
        if pointed is None:
            raise UserError(
                f"{folder / LAST}: not found (kept checkpoints: {available}); train with --train.keep-checkpoints N"
            )
        name = pointed
    if safety.SNAPSHOT_NAME.match(name) is None:
        raise UserError(f"--checkpoint {name!r}: expected step-NNNNNN or last (kept checkpoints: {available})")
    path = folder / name
    if not safety.is_snapshot_dir(path):
        raise UserError(
            f"{path}: not a checkpoint kept by vla-align (kept checkpoints: {available}); "
            "pick one of those, or train with --train.keep-checkpoints N"
        )
    return path


# --- run state: fingerprints (what a run started from) and progress (how far it got) ---------------

# What `--resume` may change (issue 16: steps, device, threads, logging, evaluation); everything else
# of the config must match what the run started with. ``data.*`` describes where the data is and how
# it was generated: the dataset itself is compared by its own fingerprint.
RESUME_OVERRIDES = (
    "preset",
    "data.",
    "eval.",
    "train.steps",
    "train.device",
    "train.threads",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.max_bad_steps",
    "train.log.",  # where the log goes (TensorBoard, CSV, wandb, mlflow): the resumed part is logged there
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(node) if isinstance(node, tuple) else node}


def config_fingerprint(cfg: Any) -> dict[str, Any]:
    """The flat ``a.b.c -> value`` view of the config fields a resumed run must keep (the text backbone
    resolved, so ``auto`` and the backbone it picked compare equal)."""
    import copy

    from . import config as config_lib

    cfg = copy.deepcopy(cfg)
    cfg.model.text = cfg.model.text.concrete()
    flat = _flatten(config_lib.to_dict(cfg))
    return {k: v for k, v in sorted(flat.items()) if not _overridable(k)}


def _overridable(key: str) -> bool:
    return any(key == o or (o.endswith(".") and key.startswith(o)) for o in RESUME_OVERRIDES)


def dataset_fingerprint(data_path: Path) -> str:
    """sha256 of the dataset's description: every file under ``meta/`` (info.json, tasks, episodes,
    stats) with its relative path. The same dataset moved elsewhere keeps its fingerprint."""
    from .data.split_file import dataset_meta_hash

    return dataset_meta_hash(data_path)


def write_fingerprint(run_dir: Path, cfg: Any, data_path: Path) -> None:
    atomic.write_json(
        run_dir / safety.FINGERPRINT_FILE,
        {
            "format": safety.FINGERPRINT_FORMAT,
            "dataset": dataset_fingerprint(data_path),
            "config": config_fingerprint(cfg),
        },
    )


def read_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``fingerprint.json`` (None for runs trained before fingerprints existed)."""
    path = run_dir / safety.FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict) or "dataset" not in data:
        raise UserError(f"{path}: damaged (not the run fingerprint vla-align writes); start a new run with --out")
    return data


def config_changes(stored: dict[str, Any], cfg: Any) -> list[str]:
    """``key: old -> new`` for every fingerprinted config value that differs. A key only one side has
    (a setting added or removed by another version of vla-align) is not a change."""
    now = config_fingerprint(cfg)
    return [f"{k}: {stored[k]!r} -> {now[k]!r}" for k in sorted(set(stored) & set(now)) if stored[k] != now[k]]


def check_dataset_unchanged(run_dir: Path, data_path: Path, fingerprint: dict[str, Any] | None = None) -> None:
    """Refuse a dataset whose ``meta/`` differs from the one the run was trained on."""
    fingerprint = fingerprint if fingerprint is not None else read_fingerprint(run_dir)
    if fingerprint is None or not (data_path / "meta" / "info.json").is_file():
        return
    if dataset_fingerprint(data_path) != fingerprint["dataset"]:
        raise UserError(
            f"{data_path}: not the dataset run {run_dir} was trained on (its meta/ files differ from "
            f"{run_dir / safety.FINGERPRINT_FILE}); pass that dataset, or train a new run on this one"
        )


@dataclass
class Progress:
    """How far a run's training got: ``step`` of ``steps`` (None when the run records nothing)."""

    step: int | None
    steps: int
    finished: bool | None
    weights: bool  # checkpoint/model.safetensors exists

    def metrics(self) -> dict[str, float]:
        out = {"run/steps": float(self.steps)}
        if self.step is not None:
            out["run/step"] = float(self.step)
        if self.finished is not None:
            out["run/finished"] = float(self.finished and self.weights)
        return out


def training_progress(run_dir: Path, cfg: Any) -> Progress:
    """From ``train_state.pt`` (or, without it, the last step in metrics.jsonl): the step reached and
    whether training finished (all steps, or stopped early by model selection)."""
    ckpt = run_dir / "checkpoint"
    weights = (ckpt / MODEL_FILE).is_file()
    steps = int(cfg.train.steps)
    state = load_train_state(ckpt)
    if state is not None:
        step = int(state.get("step", 0))
        best = state.get("best") or {}
        patience = int(cfg.train.select.patience)
        early = bool(patience) and float(best.get("checks_since", 0)) >= patience
        return Progress(step, steps, step >= steps or early, weights)
    logged = last_logged_step(run_dir / "metrics.jsonl")
    # without train_state.pt an early stop cannot be told from a kill: only a full run counts as finished
    return Progress(logged, steps, True if logged is not None and logged >= steps else None, weights)


def last_logged_step(path: Path) -> int | None:
    if not path.is_file():
        return None
    steps = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            steps.append(int(json.loads(line).get("step")))
    return max(steps) if steps else None


def repair_torn_log(path: Path) -> None:
    """Drop a last line of ``metrics.jsonl`` that a kill cut short (kept in ``metrics.jsonl.torn``)."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    if not lines:
        return
    try:
        json.loads(lines[-1])
        return
    except ValueError:
        pass
    atomic.write_text(path.with_name(path.name + ".torn"), lines[-1] + "\n")
    atomic.write_text(path, "".join(line + "\n" for line in lines[:-1]))
    safety.note(f"{path}: dropped a last line cut short by an interrupted run (kept in {path.name}.torn)")


def prepare_run_dir(run_dir: Path, cfg: Any, data_path: Path, resume: bool) -> None:
    """Before training writes into ``run_dir``: a new run goes only into a new or empty folder, or a
    vla-align run that has no checkpoint yet; it records ``fingerprint.json``. A resumed run must have
    the config (but for :data:`RESUME_OVERRIDES`) and the dataset it started with."""
    if resume:
        _check_resume(run_dir, cfg, data_path)
        return
    check_new_run_dir(run_dir, data_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_fingerprint(run_dir, cfg, data_path)


def check_new_run_dir(run_dir: Path, data_path: Path | None = None) -> None:
    safety.check_outside(run_dir, [data_path] if data_path is not None else [])
    if not run_dir.exists() or safety.is_empty_dir(run_dir):
        return
    if not run_dir.is_dir() or not safety.is_run_dir(run_dir):
        raise UserError(
            f"{run_dir}: not empty and not a vla-align run; refusing to write a run into it "
            "(its files would be overwritten); choose a new or empty --out"
        )
    if (
        (run_dir / "checkpoint" / MODEL_FILE).exists()
        or (run_dir / "checkpoint" / STATE_FILE).exists()
        or snapshots(run_dir)
    ):
        raise UserError(
            f"{run_dir} already holds a run with checkpoints; pass --resume {run_dir} to continue it "
            "or choose another --out"
        )


def check_resume_config(run_dir: Path, cfg: Any) -> dict[str, Any] | None:
    """Raise when ``cfg`` changes a setting of the run in ``run_dir`` that a resume must keep (all but
    :data:`RESUME_OVERRIDES`); returns the run's fingerprint (None for a run written before them)."""
    fingerprint = read_fingerprint(run_dir)
    changes = config_changes(fingerprint["config"], cfg) if fingerprint is not None else []
    if changes:
        allowed = ", ".join(o.rstrip(".") + ("*" if o.endswith(".") else "") for o in RESUME_OVERRIDES)
        raise UserError(
            f"{run_dir}: --resume with a changed config ({'; '.join(changes[:3])}"
            f"{f'; {len(changes) - 3} more' if len(changes) > 3 else ''}); only {allowed} may change on "
            "resume: undo the change, or start a new run with `vla-align train --out NEW_DIR`"
        )
    return fingerprint


def _check_resume(run_dir: Path, cfg: Any, data_path: Path) -> None:
    fingerprint = check_resume_config(run_dir, cfg)
    if fingerprint is not None and dataset_fingerprint(data_path) != fingerprint["dataset"]:
        raise UserError(
            f"{run_dir}: --resume with a different dataset ({data_path}: its meta/ files are not those the "
            "run started with); restore that dataset, or start a new run with `vla-align train --out NEW_DIR`"
        )
    progress = training_progress(run_dir, cfg)
    if progress.finished and not progress.weights:
        best = run_dir / "checkpoint" / "best" / MODEL_FILE
        hint = f"copy {best} to {run_dir / 'checkpoint'}/ or " if best.is_file() else ""
        raise UserError(
            f"{run_dir}: training already finished (step {progress.step} of {progress.steps}) but "
            f"checkpoint/{MODEL_FILE} is missing: nothing to resume; {hint}restore the file or start a new run"
        )
    repair_torn_log(run_dir / "metrics.jsonl")
