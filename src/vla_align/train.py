"""Training: set up -> (resume) -> one ``TrainingStep`` per step -> finish.

Each step draws and augments a batch, computes every named loss term (pair InfoNCE, the policy's
behaviour cloning, the auxiliary objectives), weights them by their priors, turns them into
gradients with the run's balancer (``loss.balancer``: fixed sum, uncertainty, GradNorm, PCGrad, ...),
clips the gradient of every trained parameter (the objectives' heads included) and takes an AdamW
step on a warm-up + cosine schedule; then it logs, checks the validation split for model
selection and saves the checkpoint when those fall due (``step.py`` holds the step itself).

Deterministic on CPU for a given seed: batch k is drawn from ``default_rng([seed, k])``, so a
resumed run sees exactly the batches the uninterrupted run would have seen; ``train_state.pt``
carries the optimizer, the objectives' heads and the balancer, so it continues exactly.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from . import atomic, checkpoint, safety, tracking
from . import config as config_lib
from .config import check_float, check_int, check_seed
from .data import split_file
from .data.windows import ChunkSampler
from .errors import ConfigError, UserError
from .model import TriModalModel
from .progress import Bar, console, progress_bar, quiet
from .selection import SelectionConfig, validation_metrics
from .step import BANK, TrainingStep
from .tracking import LogConfig, Tracker

if TYPE_CHECKING:
    from .balancing import Balancer
    from .data.lerobot import FrameTable
    from .presets import RunConfig


@dataclass
class TrainConfig:
    steps: int = 2000  # optimiser steps
    batch_size: int = 256  # samples per step (the other samples are InfoNCE's negatives)
    lr: float = 1e-3  # peak AdamW learning rate (after warmup)
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.05  # AdamW weight decay
    warmup_steps: int = 100  # linear warmup steps before the cosine decay
    temperature_lr: float = 1e-3  # own optimizer group; the chapter caps it at 1e-3
    grad_clip: float = 1.0  # largest gradient norm (gradients are clipped to it)
    augment_shift: int = 4  # random-shift augmentation in pixels (0 = off)
    augment_mirror: float = 0.0  # probability of a left-right mirror (swaps left/right actions and words)
    seed: int = 0  # seed of the initial weights and the batches
    log_every: int = 50  # steps between training log lines
    checkpoint_every: int = 500  # steps between checkpoints (a --resume starts from the last one)
    keep_checkpoints: int = 0  # newest N checkpoints kept in RUN/checkpoints/step-NNNNNN/ (0 = only the resume state)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where training runs (auto: CUDA when a GPU is visible)
    threads: int = 0  # torch intra-op threads; 0 = all cores
    max_bad_steps: int = 20  # stop after this many steps in a row with a non-finite loss or gradient (0 = never)
    select: SelectionConfig = field(default_factory=SelectionConfig)  # model selection on validation
    log: LogConfig = field(default_factory=LogConfig)  # logs besides metrics.jsonl: TensorBoard, CSV, wandb, mlflow

    def __post_init__(self) -> None:
        check_int("train.steps", self.steps, 1)
        check_int("train.batch_size", self.batch_size, 2, why="InfoNCE needs negatives")
        check_float("train.lr", self.lr, 0.0, 1.0, lo_open=True)
        check_float("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0, why="the cosine ends at lr × min_lr_ratio")
        check_float(
            "train.weight_decay", self.weight_decay, 0.0, 1.0, why="AdamW scales the weights by 1 − lr × weight_decay"
        )
        check_int("train.warmup_steps", self.warmup_steps, 0)
        check_float("train.temperature_lr", self.temperature_lr, 0.0, 1e-3, why="chapter 5 checklist")
        check_float(
            "train.grad_clip",
            self.grad_clip,
            0.0,
            lo_open=True,
            why="the largest gradient norm: a negative cap flips the gradient, 0 stops learning",
        )
        check_int("train.augment_shift", self.augment_shift, 0, 64, why="random shift in pixels, 0 = off")
        check_float("train.augment_mirror", self.augment_mirror, 0.0, 1.0, why="a probability")
        check_seed("train.seed", self.seed)
        check_int("train.log_every", self.log_every, 1)
        check_int("train.checkpoint_every", self.checkpoint_every, 1)
        check_int("train.keep_checkpoints", self.keep_checkpoints, 0, why="checkpoints kept, 0 = only the resume state")
        check_int("train.threads", self.threads, 0, 1024, why="torch intra-op threads, 0 = all cores")
        check_int("train.max_bad_steps", self.max_bad_steps, 0, why="consecutive non-finite steps, 0 = never stop")


def resolve_device(name: str | torch.device, flag: str = "--train.device") -> torch.device:
    """``auto`` (CUDA when a GPU is visible, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; ``flag`` names
    the setting in the one-line error when the GPU asked for is not visible."""
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"{flag} {name!r}: not a device; use auto, cpu or cuda") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise UserError(
                f"{flag} {name}: no CUDA GPU is visible (torch {torch.__version__}, {build}); use auto or cpu"
            )
        if device.index is not None and device.index >= count:
            raise UserError(f"{flag} {name}: only {count} CUDA GPU(s) are visible (cuda:0..); use auto or cuda")
    elif device.type != "cpu":
        raise UserError(f"{flag} {name!r}: unsupported device; use auto, cpu or cuda")
    return device


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: TriModalModel, cfg: TrainConfig, aux: torch.nn.Module | None = None) -> torch.optim.AdamW:
    groups = model.parameter_groups()
    if aux is not None:  # the auxiliary objectives' heads train with the model
        for p in aux.parameters():
            (groups["decay"] if p.ndim >= 2 else groups["no_decay"]).append(p)
    return torch.optim.AdamW(
        [
            {"params": groups["decay"], "weight_decay": cfg.weight_decay, "lr": cfg.lr, "base_lr": cfg.lr},
            {"params": groups["no_decay"], "weight_decay": 0.0, "lr": cfg.lr, "base_lr": cfg.lr},
            {
                "params": groups["temperature"],
                "weight_decay": 0.0,
                "lr": cfg.temperature_lr,
                "base_lr": cfg.temperature_lr,
            },
        ],
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def build_model(cfg: RunConfig, dataset_info: dict[str, Any], state_dim: int = 0) -> TriModalModel:
    from .data.episode import ActionSpec

    spec = ActionSpec.from_dict(dataset_info["vla_align"]["action_spec"])
    return cfg.model.build(spec, state_dim)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop log lines written after the checkpoint we resume from."""
    if not path.exists():
        return
    kept = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else {}
        except ValueError:
            record = None
        if not isinstance(record, dict):  # a kill tears only the last line, repaired before this
            raise UserError(f"{path}: line {n} is damaged (not a JSON object); repair or remove it, then --resume")
        if line.strip() and record.get("step", 0) <= last_step:
            kept.append(line)
    atomic.write_text(path, "".join(line + "\n" for line in kept))


@dataclass
class TrainingRun:
    """What a run holds from one step to the next."""

    cfg: RunConfig
    run_dir: Path
    model: TriModalModel
    sampler: ChunkSampler
    training_step: TrainingStep
    optimizer: torch.optim.Optimizer
    balancer: Balancer
    val_table: FrameTable | None
    best: dict[str, float] = field(default_factory=lambda: {"score": -1.0, "step": 0.0, "checks_since": 0.0})
    seen: int = 0  # samples since this process started training (for the throughput log)
    t0: float = 0.0
    guard: dict[str, int] = field(default_factory=lambda: {"skipped": 0, "in_a_row": 0})  # finite-loss guard
    saved_step: int = 0  # the step of the last checkpoint written (0 = none yet)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"


def train(cfg: RunConfig, run_dir: Path, resume: bool = False) -> TriModalModel:
    """Train the tri-modal encoders (and the policy); writes config.json, metrics.jsonl and checkpoint/
    into ``run_dir``. ``resume`` continues from ``checkpoint/train_state.pt``.

    A resume may change ``train.steps`` (see :data:`vla_align.checkpoint.RESUME_OVERRIDES`). Batch k is
    drawn from ``(seed, k)`` whatever the total, but the learning rate of step k is
    ``lr_factor(k, train.steps)``: after the warm-up it follows a cosine over the whole run, so with a
    new total the steps still to come follow the new cosine while those already taken followed the
    old one (the rate jumps at the resume step, e.g. back up from its end value when the run is
    extended). The result equals, bitwise on CPU, an uninterrupted run of the new length exactly when
    every step taken had the same rate under both totals: a flat schedule (``train.min_lr_ratio 1``,
    any warm-up), or a resume still inside the warm-up. With model selection on, the first run's
    last step must also fall on a ``train.select.every`` step (its final check would otherwise be one
    an uninterrupted run never makes). :func:`restore` prints which case applies."""
    run = setup(cfg, run_dir, resume)
    start = restore(run) if resume else begin(run)
    say(banner(run, start if resume else None))
    run.model.train()
    run.seen, run.t0 = 0, time.perf_counter()
    with progress_bar("train", cfg.train.steps) as bar, tracking.open_log(run_dir, cfg, resume) as log:
        bar.set(start)
        for step in range(start, cfg.train.steps):
            stop = train_one_step(run, step, log, bar)
            bar.advance(1)
            if stop:
                console.print(
                    f"early stop at step {step + 1}: no better validation score since step {run.best['step']:.0f}"
                )
                break
    finish(run)
    return run.model


def check_config(cfg: RunConfig) -> None:
    """Errors a run would otherwise meet only after loading its data."""
    if not cfg.loss.weights.any_positive() and not cfg.model.policy.enabled:
        raise ConfigError("every contrastive loss weight is 0 and the policy is off: nothing to train")
    if not cfg.loss.weights.any_positive() and cfg.model.policy.start_step > 0:
        raise ConfigError("model.policy.start_step > 0 needs a positive contrastive weight to pre-train with")
    tracking.check_config(cfg.train.log)


def setup(cfg: RunConfig, run_dir: Path, resume: bool) -> TrainingRun:
    """Data, model, training step, optimizer and balancer; writes ``config.json``."""
    if not resume and (run_dir / "checkpoint" / checkpoint.MODEL_FILE).exists():
        raise UserError(f"{run_dir} already holds a trained run; pass --resume to continue it or choose another --out")
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    check_config(cfg)
    data_path = cfg.data.resolved_path()
    if resume:  # a changed config or dataset is refused before the data is read
        checkpoint.prepare_run_dir(run_dir, cfg, data_path, resume)
    _pin_splits(cfg, run_dir, data_path, resume)
    say(f"reading the train split of {data_path} ...")
    table = cfg.data.read(data_path, "train")
    val_table = cfg.data.read(data_path, "val") if cfg.train.select.every else None
    state_dim = int(table.state.shape[1]) if table.state is not None and cfg.model.policy.state else 0
    model = build_model(cfg, table.info, state_dim)
    if not resume:  # continuous actions / states: statistics of the training split, kept in the model
        model.fit_normalizers(table.actions, table.state)
    model = model.to(device)
    cfg.model.text.backbone = model.text_backbone  # record the resolved choice ("auto" -> name)
    sampler = ChunkSampler(table, cfg.model.action.chunk_len, cfg.model.policy.history, cfg.data.hard_negatives)
    if sampler.hard is not None:
        say(
            f"hard negatives: {cfg.data.hard_negatives.fraction:g} of each batch; neighbour pairs {sampler.hard.describe()}"
        )
    unit = TrainingStep(cfg, model, table)
    optimizer = make_optimizer(model, cfg.train, unit.aux)
    balancer = cfg.loss.balancer.build(unit.names).to(device)
    if not resume:
        checkpoint.prepare_run_dir(run_dir, cfg, data_path, resume)  # refuses a foreign --out
    run_dir.mkdir(parents=True, exist_ok=True)
    record = dataset_record(table, data_path, state_dim)
    record["splits"] = split_file.split_record(data_path, cfg.data.splits)  # which split file, and its hash
    config_lib.save(cfg, run_dir / "config.json", dataset=record)
    return TrainingRun(cfg, run_dir, model, sampler, unit, optimizer, balancer, val_table)


def _pin_splits(cfg: RunConfig, run_dir: Path, data_path: Path, resume: bool) -> None:
    """Record in ``cfg.data.splits`` which split file the run uses (a resume: the one it started with)."""
    splits = split_file.run_splits(cfg.data.splits) if resume else cfg.data.splits
    cfg.data.splits = split_file.pin_splits(data_path, splits)
    if resume:
        record = (checkpoint.read_run_config(run_dir).get("dataset") or {}).get("splits")
        split_file.check_split_record(record, data_path, cfg.data.splits, f"run {run_dir}")


def dataset_record(table: FrameTable, data_path: Path, state_dim: int) -> dict[str, Any]:
    """The ``dataset`` entry of config.json: where the data is, its description, and for continuous
    actions the physical limits of the commanded actions (for the evaluation)."""
    record: dict[str, Any] = {
        "path": str(data_path),
        "info": table.info["vla_align"],
        "image_shape": list(table.image_shape),
        "state_dim": state_dim,
    }
    if table.action_spec.kind == "continuous":
        from .physics import fit_action_limits

        episodes = [
            table.actions[s : s + n] for s, n in zip(table.episode_start, table.episode_length, strict=True) if n >= 4
        ]
        if episodes:
            limits = fit_action_limits(episodes, 1.0 / table.fps, signal="velocity")
            record["physical_limits"] = limits.to_dict()
    return record


def say(message: str) -> None:
    """One line on stderr about what training is doing (nothing with ``VLA_ALIGN_QUIET=1``)."""
    if not quiet():
        console.print(message, highlight=False, soft_wrap=True)


def banner(run: TrainingRun, resumed_from: int | None) -> str:
    """The one line printed before the first step: device, data, steps, batch, run folder, resume step."""
    device = next(run.model.parameters()).device
    where = f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)})"
    table, train = run.sampler.table, run.cfg.train
    start = f"; resuming from step {resumed_from}" if resumed_from is not None else ""
    return (
        f"training on {where}: {table.num_episodes} episodes / {len(table.frames)} frames of {table.root}; "
        f"{train.steps} steps x batch {train.batch_size}; run {run.run_dir}{start}"
    )


def restore(run: TrainingRun) -> int:
    """Load ``train_state.pt`` (weights, objectives' heads, balancer, optimizer, selection); returns its step."""
    state = checkpoint.load_train_state(run.ckpt_dir)
    if state is None:
        raise UserError(f"{run.ckpt_dir}: no train_state.pt to resume from; start a new run instead")
    try:
        run.model.load_state_dict(state["model"])
        run.training_step.aux.load_state_dict(state.get("aux") or {})
        run.balancer.load_state_dict(state.get("balancer") or run.balancer.state_dict())
        run.optimizer.load_state_dict(state["optimizer"])
        if run.training_step.bank is not None:  # the queues, pointer and fill count: an exact continuation
            run.training_step.bank.load_state_dict(state[BANK])
        start = int(state["step"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{run.ckpt_dir / checkpoint.STATE_FILE}: does not belong to this run's model ({first}); start a new run"
        ) from None
    if start > run.cfg.train.steps:
        raise UserError(
            f"{run.run_dir}: the run already reached step {start}, more than --train.steps {run.cfg.train.steps}; "
            f"pass --train.steps {start} or more to continue it"
        )
    _remove_interrupted_writes(run)
    run.best.update(state.get("best") or {})
    run.guard.update(state.get("guard") or {})
    run.saved_step = start
    _truncate_metrics(run.metrics_path, start)
    sync_snapshots(run, start)
    note = schedule_note(run.cfg.train, state.get("steps"), start)
    if note:
        say(note)
    return start


def schedule_note(cfg: TrainConfig, old_steps: Any, start: int) -> str | None:
    """What a resume with a changed ``train.steps`` does to the learning rate (None when unchanged or
    unknown: states written before the total was recorded)."""
    if not isinstance(old_steps, int) or old_steps == cfg.steps:
        return None
    import dataclasses

    before = dataclasses.replace(cfg, steps=old_steps)
    if all(lr_factor(k, before) == lr_factor(k, cfg) for k in range(start)):
        return (
            f"train.steps {old_steps} -> {cfg.steps}: the {start} steps taken had the learning rates of a "
            f"{cfg.steps}-step run, so this run continues exactly like an uninterrupted {cfg.steps}-step one"
        )
    was, now = lr_factor(start - 1, before), lr_factor(start, cfg)
    return (
        f"train.steps {old_steps} -> {cfg.steps}: steps 1-{start} followed the cosine over {old_steps} steps; "
        f"from step {start + 1} the learning rate follows the cosine over {cfg.steps} (train.lr x {was:.3g} at "
        f"step {start} -> x {now:.3g} at step {start + 1}, then down to x {cfg.min_lr_ratio:g}); the result "
        f"differs from an uninterrupted {cfg.steps}-step run (a flat schedule, --train.min-lr-ratio 1, would not)"
    )


# What training writes through atomic.write_bytes (a temporary ``.<name>.<random>.tmp`` beside each).
RUN_FILES = ("config.json", "metrics.jsonl", "selection.json", "fingerprint.json")
CHECKPOINT_FILES = (checkpoint.MODEL_FILE, checkpoint.STATE_FILE)


def _remove_interrupted_writes(run: TrainingRun) -> None:
    """Delete the temporary files of writes a kill interrupted (only those of files training writes)."""
    for folder, names in (
        (run.run_dir, RUN_FILES),
        (run.ckpt_dir, CHECKPOINT_FILES),
        (run.ckpt_dir / "best", CHECKPOINT_FILES),
    ):
        for name in names:
            for stale in folder.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
    snapshots = run.run_dir / checkpoint.SNAPSHOTS
    for stale in snapshots.glob(f".{checkpoint.LAST}.*.tmp"):  # the link (or text file) made beside ``last``
        stale.unlink(missing_ok=True)
    safety.clean_stale_in(snapshots)  # half-written or half-deleted step-NNNNNN folders of a killed run


def begin(run: TrainingRun) -> int:
    """A fresh run: fit the text encoder's vocabulary / cache, start an empty log; returns step 0."""
    texts = run.sampler.table.instructions
    if run.model.text_backbone != "scratch":  # a pretrained sentence model: loading it takes a while
        say(f"loading the {run.model.text_backbone} text model, embedding {len(set(texts))} distinct instructions ...")
    run.model.text_encoder.fit(texts)
    if run.metrics_path.exists():
        run.metrics_path.unlink()
    return 0


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * lr_factor(step, cfg)


def train_one_step(run: TrainingRun, step: int, log: Tracker, bar: Bar) -> bool:
    """Batch, losses, update, then the log record, validation and checkpoint that fall on this step.
    Returns True when model selection stops the run early."""
    cfg = run.cfg.train
    inp = run.training_step.prepare_batch(run.sampler, step)
    set_learning_rate(run.optimizer, step, cfg)
    buffers = run.training_step.save_buffers()
    losses = run.training_step.compute_losses(inp, step)
    update = run.training_step.apply(losses.weighted, run.optimizer, run.balancer, step)
    done = step + 1
    if update.skipped is not None:
        run.training_step.restore_buffers(buffers)
        skip_step(run, update.skipped, done, log)
    else:
        run.guard["in_a_row"] = 0
    if update.conflict is not None:
        log.record({"step": done, **update.conflict})
    run.seen += len(inp.batch)
    if update.skipped is None and (done % cfg.log_every == 0 or done == cfg.steps):
        rate = run.seen / (time.perf_counter() - run.t0)
        record: dict[str, Any] = {"step": done, "loss/total": update.total, "lr": run.optimizer.param_groups[0]["lr"]}
        record |= run.training_step.log_values(losses, inp.batch) | run.balancer.log_values()
        record |= {"grad_norm": float(update.grad_norm), "samples_per_s": rate}
        if run.guard["skipped"]:  # only once a step was skipped: finite runs log exactly what they did before
            record["train/skipped_steps"] = run.guard["skipped"]
        log.record(record)
        bar.info = f"loss {update.total:.3f}  {rate:.0f} samples/s"
    stop = False
    if run.val_table is not None and (done % cfg.select.every == 0 or done == cfg.steps):
        stop = validate(run, run.val_table, done, log)
    if done % cfg.checkpoint_every == 0 or done == cfg.steps or stop:
        check_finite_state(run, done)
        save_checkpoint(
            run.model,
            run.optimizer,
            done,
            run.ckpt_dir,
            run.best,
            run.training_step.aux,
            run.balancer,
            run.guard,
            steps=cfg.steps,
            bank=run.training_step.bank,
        )
        run.saved_step = done
        keep_snapshot(run, done)
    return stop


def keep_snapshot(run: TrainingRun, step: int) -> None:
    """With ``train.keep_checkpoints`` N > 0: copy the checkpoint just written to
    ``checkpoints/step-NNNNNN/``, delete the kept ones beyond the newest N, point ``checkpoints/last`` at it.
    Written after ``checkpoint/``: a kill in between is repaired on resume (:func:`sync_snapshots`)."""
    keep = run.cfg.train.keep_checkpoints
    if keep:
        checkpoint.write_snapshot(run.run_dir, step, run.model, run.ckpt_dir / checkpoint.STATE_FILE)
        checkpoint.prune_snapshots(run.run_dir, keep)


def sync_snapshots(run: TrainingRun, step: int) -> None:
    """On resume from ``step``: kept checkpoints of later steps are dropped (the resumed run redoes those
    steps), the one of ``step`` is written when a kill came between it and ``checkpoint/``, the newest
    ``train.keep_checkpoints`` are kept."""
    keep = run.cfg.train.keep_checkpoints
    later = [s for s, _ in checkpoint.snapshots(run.run_dir) if s > step]
    if later:
        say(f"resuming from step {step}: dropping the kept checkpoints of later steps {later}")
    if keep and not (run.run_dir / checkpoint.SNAPSHOTS / checkpoint.snapshot_name(step)).is_dir():
        checkpoint.write_snapshot(run.run_dir, step, run.model, run.ckpt_dir / checkpoint.STATE_FILE)
    if keep or later:
        checkpoint.prune_snapshots(run.run_dir, keep or len(checkpoint.snapshots(run.run_dir)), after=step)


def skip_step(run: TrainingRun, reason: str, done: int, log: Tracker) -> None:
    """Count and log a step the finite-loss guard skipped; stop the run after ``train.max_bad_steps``
    of them in a row (the checkpoints on disk are the last good ones)."""
    run.guard["skipped"] += 1
    run.guard["in_a_row"] += 1
    skipped, in_a_row = run.guard["skipped"], run.guard["in_a_row"]
    log.record({"step": done, "train/skipped_steps": skipped, "train/bad_steps_in_a_row": in_a_row})
    if in_a_row == 1 or in_a_row % 100 == 0:
        console.print(
            f"step {done}: {reason}; update skipped ({in_a_row} in a row, {skipped} in all)",
            highlight=False,
            soft_wrap=True,
        )
    limit = run.cfg.train.max_bad_steps
    if limit and in_a_row >= limit:
        raise UserError(
            f"training stopped at step {done}: {in_a_row} steps in a row had a non-finite loss or gradient "
            f"({reason}); {_kept(run)}. Lower --train.lr, look for NaN or huge values in the dataset, "
            "or raise --train.max-bad-steps (0 = never stop)"
        )


def _kept(run: TrainingRun) -> str:
    if run.saved_step:
        return f"the last good checkpoint (step {run.saved_step}) is kept in {run.ckpt_dir}"
    return "no checkpoint was written"


def non_finite_entries(state: Any, prefix: str) -> list[str]:
    """The names of the floating-point tensors in a (nested) state dict that hold NaN or ±inf."""
    if isinstance(state, torch.Tensor):
        finite = not state.is_floating_point() or bool(torch.isfinite(state).all())
        return [] if finite else [prefix]
    if isinstance(state, dict):
        return [n for k, v in state.items() for n in non_finite_entries(v, f"{prefix}.{k}")]
    if isinstance(state, list | tuple):
        return [n for i, v in enumerate(state) for n in non_finite_entries(v, f"{prefix}.{i}")]
    return []


def check_finite_state(run: TrainingRun, done: int) -> None:
    """Refuse to write a checkpoint that holds NaN or ±inf (weights, objectives' heads and buffers,
    optimizer moments, the balancer's learned weights): the run stops and the last good one is kept."""
    bad = non_finite_entries(run.model.state_dict(), "model")
    bad += non_finite_entries(run.training_step.aux.state_dict(), "objectives")
    bad += non_finite_entries(run.optimizer.state_dict()["state"], "optimizer")
    bad += non_finite_entries(dict(run.balancer.named_parameters()), "balancer")
    if run.training_step.bank is not None:
        bad += non_finite_entries(run.training_step.bank.state_dict(), BANK)
    if bad:
        raise UserError(
            f"training stopped at step {done}: {len(bad)} tensors hold NaN or infinity (first: {bad[0]}); the "
            f"checkpoint was not written, {_kept(run)}. Lower --train.lr or look for huge values in the dataset"
        )


def validate(run: TrainingRun, val_table: FrameTable, done: int, log: Tracker) -> bool:
    """One model-selection check: log it, keep the best weights in checkpoint/best; True = stop (patience)."""
    select = run.cfg.train.select
    val = validation_metrics(run.model, val_table, select, run.cfg.eval)
    if val["val/score"] > run.best["score"]:
        run.best = {"score": val["val/score"], "step": float(done), "checks_since": 0.0}
        check_finite_state(run, done)
        checkpoint.save_weights(run.model, run.ckpt_dir / "best")
    else:
        run.best["checks_since"] += 1
    log.record({"step": done, **val, "val/best_step": run.best["step"]})
    return bool(select.patience) and run.best["checks_since"] >= select.patience


def finish(run: TrainingRun) -> None:
    """With model selection, the run's model is the selected one (train_state.pt keeps the last weights
    for --resume)."""
    best_dir = run.ckpt_dir / "best"
    if run.val_table is not None and (best_dir / checkpoint.MODEL_FILE).is_file():
        checkpoint.load_weights(run.model, best_dir)
        checkpoint.save_weights(run.model, run.ckpt_dir)
        atomic.write_json(
            run.run_dir / "selection.json", {"best_step": run.best["step"], "best_val_score": run.best["score"]}
        )
    skipped = run.guard["skipped"]
    note = f" ({skipped} skipped: non-finite loss or gradient)" if skipped else ""
    console.print(f"trained {run.cfg.train.steps} steps{note}; checkpoint in {run.ckpt_dir}")


def save_checkpoint(
    model: TriModalModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    directory: Path,
    best: dict[str, float] | None = None,
    aux: torch.nn.Module | None = None,
    balancer: torch.nn.Module | None = None,
    guard: dict[str, int] | None = None,
    steps: int | None = None,
    bank: torch.nn.Module | None = None,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    # train_state.pt carries its own copy of the weights, so each file is self-consistent even
    # if the process dies between the two atomic writes.
    checkpoint.save_train_state(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "best": best or {},
            "aux": aux.state_dict() if aux is not None else {},
            "balancer": balancer.state_dict() if balancer is not None else {},
            "guard": dict(guard or {}),  # the finite-loss guard's counts (skipped steps, in a row)
            **({"steps": steps} if steps is not None else {}),  # the total the LR schedule ran over
            **({BANK: bank.state_dict()} if bank is not None else {}),  # loss.memory_bank's queues
        },
        directory,
    )
    checkpoint.save_weights(model, directory)
