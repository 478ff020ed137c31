"""One straight training loop: sample -> encode -> per-pair InfoNCE -> weighted sum -> AdamW.

Deterministic on CPU for a given seed: batch k is drawn from ``default_rng([seed, k])``, so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from . import atomic, checkpoint
from . import config as config_lib
from .data.augment import mirror, mirror_permutation
from .data.lerobot import read_dataset
from .data.windows import ChunkSampler
from .encoders.image import random_shift
from .errors import ConfigError, UserError
from .losses import AlignmentLoss, mutual_information_bound
from .losses.auxiliary import AuxiliaryLosses, Context
from .modalities import MODALITIES, PAIRS, Pair
from .model import TriModalModel
from .progress import console, progress_bar
from .selection import SelectionConfig, validation_metrics

if TYPE_CHECKING:
    from .presets import RunConfig


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.05
    warmup_steps: int = 100
    temperature_lr: float = 1e-3  # own optimizer group; the chapter caps it at 1e-3
    grad_clip: float = 1.0
    augment_shift: int = 4  # random-shift augmentation in pixels (0 = off)
    augment_mirror: float = 0.0  # probability of a left-right mirror (swaps left/right actions and words)
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch intra-op threads; 0 = all cores
    select: SelectionConfig = field(default_factory=SelectionConfig)  # model selection on validation

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ConfigError("train.steps must be >= 1 and train.batch_size >= 2 (InfoNCE needs negatives)")
        if not 0 < self.lr <= 1.0:
            raise ConfigError(f"train.lr must be in (0, 1], got {self.lr}")
        if not 0 <= self.temperature_lr <= 1e-3:
            raise ConfigError(
                f"train.temperature_lr must be in [0, 1e-3] (chapter 5 checklist), got {self.temperature_lr}"
            )
        if not 0.0 <= self.augment_mirror <= 1.0:
            raise ConfigError(f"train.augment_mirror is a probability in [0, 1], got {self.augment_mirror}")
        if self.warmup_steps < 0 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("train.warmup_steps >= 0, log_every >= 1 and checkpoint_every >= 1 are required")


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA GPU is visible; use --train.device auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= last_step]
    atomic.write_text(path, "".join(line + "\n" for line in kept))


def train(cfg: RunConfig, run_dir: Path, resume: bool = False) -> TriModalModel:
    """Train the tri-modal encoders; writes config.json, metrics.jsonl and checkpoint/ into ``run_dir``."""
    ckpt_dir = run_dir / "checkpoint"
    if not resume and (ckpt_dir / checkpoint.MODEL_FILE).exists():
        raise UserError(f"{run_dir} already holds a trained run; pass --resume to continue it or choose another --out")
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)

    policy_cfg = cfg.model.policy
    if not cfg.loss.weights.any_positive() and not policy_cfg.enabled:
        raise ConfigError("every contrastive loss weight is 0 and the policy is off: nothing to train")
    if not cfg.loss.weights.any_positive() and policy_cfg.start_step > 0:
        raise ConfigError("model.policy.start_step > 0 needs a positive contrastive weight to pre-train with")
    data_path = cfg.data.resolved_path()
    table = read_dataset(data_path, split="train")
    state_dim = int(table.state.shape[1]) if table.state is not None and cfg.model.policy.state else 0
    model = build_model(cfg, table.info, state_dim)
    if not resume:  # continuous actions / states: statistics of the training split, kept in the model
        model.fit_normalizers(table.actions, table.state)
    model = model.to(device)
    cfg.model.text.backbone = model.text_backbone  # record the resolved choice ("auto" -> name)
    sampler = ChunkSampler(table, cfg.model.action.chunk_len, cfg.model.policy.history)
    mirror_perm = mirror_permutation(table.action_spec) if cfg.train.augment_mirror > 0 else None
    objective = AlignmentLoss(cfg.loss)
    aux = AuxiliaryLosses(cfg.loss, model, table).to(device)
    if (aux.needs_policy or cfg.loss.modality_dropout > 0) and not policy_cfg.enabled:
        raise ConfigError("loss.modality_dropout / loss.modality_balance act on the policy; enable model.policy")
    optimizer = make_optimizer(model, cfg.train, aux)
    # every term the run can produce, prior weight > 0: the balancer's state is keyed by these names
    priors = {"policy": policy_cfg.weight, **aux.weights()}
    names: list[str] = [p for p in PAIRS if getattr(cfg.loss.weights, p) > 0]
    names += ["policy"] if policy_cfg.enabled and policy_cfg.weight > 0 else []
    names += [n for n, w in aux.weights().items() if w > 0]
    balancer = cfg.loss.balancer.build(names).to(device)

    run_dir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, dict[str, Any]] = {
        "dataset": {
            "path": str(data_path),
            "info": table.info["vla_align"],
            "image_shape": list(table.image_shape),
            "state_dim": state_dim,
        }
    }
    if table.action_spec.kind == "continuous":  # limits on the commanded actions, for the evaluation
        from .physics import fit_action_limits

        episodes = [
            table.actions[s : s + n] for s, n in zip(table.episode_start, table.episode_length, strict=True) if n >= 4
        ]
        if episodes:
            limits = fit_action_limits(episodes, 1.0 / table.fps, signal="velocity")
            extra["dataset"]["physical_limits"] = limits.to_dict()
    config_lib.save(cfg, run_dir / "config.json", **extra)
    metrics_path = run_dir / "metrics.jsonl"

    val_table = None
    if cfg.train.select.every:
        val_table = read_dataset(data_path, split="val")
    best: dict[str, float] = {"score": -1.0, "step": 0.0, "checks_since": 0.0}

    start = 0
    if resume:
        state = checkpoint.load_train_state(ckpt_dir)
        if state is None:
            raise UserError(f"{ckpt_dir}: no train_state.pt to resume from; start a new run instead")
        model.load_state_dict(state["model"])
        aux.load_state_dict(state.get("aux") or {})
        balancer.load_state_dict(state.get("balancer") or balancer.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        best.update(state.get("best") or {})
        _truncate_metrics(metrics_path, start)
    else:
        model.text_encoder.fit(table.instructions)
        if metrics_path.exists():
            metrics_path.unlink()

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    model.train()
    seen, t0 = 0, time.perf_counter()
    with progress_bar("train", cfg.train.steps) as bar, metrics_path.open("a") as log:
        bar.set(start)
        for step in range(start, cfg.train.steps):
            rng = np.random.default_rng([cfg.train.seed, step])
            batch = sampler.sample(rng, cfg.train.batch_size)
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            batch.image = random_shift(batch.image, cfg.train.augment_shift, gen)
            if policy_cfg.history_dropout > 0 and len(
                batch.prev_action
            ):  # the history must not replace the instruction
                hide = torch.rand(len(batch), generator=gen) < policy_cfg.history_dropout
                batch.prev_action = torch.where(hide[:, None], -1, batch.prev_action.view(len(batch), -1))
            if mirror_perm is not None:
                flip = torch.rand(len(batch), generator=gen) < cfg.train.augment_mirror
                batch = mirror(batch, flip, mirror_perm)
            batch = batch.to(device)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, cfg.train)

            use_policy = policy_cfg.enabled and step >= policy_cfg.start_step
            needed = set(objective.modalities(step)) | aux.modalities()
            drop = None
            if use_policy and cfg.loss.modality_dropout > 0:  # 1 = blank the image, 2 = the instruction
                hit = torch.rand(len(batch), generator=gen) < cfg.loss.modality_dropout
                drop = (hit * (1 + (torch.rand(len(batch), generator=gen) < 0.5))).long().to(device)
            with autocast:
                out = model.forward_train(
                    batch,
                    tuple(m for m in MODALITIES if m in needed),
                    policy=use_policy,
                    detach_policy_inputs=step < policy_cfg.freeze_encoders_until,
                    drop=drop,
                )
            emb, logits = out.emb, out.logits
            scales: dict[Pair, torch.Tensor] = {p: model.logit_scale(p) for p in PAIRS}
            losses = objective(emb, batch, scales, step)
            if logits is not None or out.cond is not None:
                losses["policy"] = model.policy_loss(out, batch)
            if len(aux):
                with autocast:
                    losses.update(aux(Context(model=model, batch=batch, out=out, step=step, rng=rng)))
            prior = objective.weights(losses, priors)
            weighted = {n: prior[n] * v for n, v in losses.items() if prior[n] > 0}
            if not weighted:
                raise ConfigError(f"no loss term has a positive weight at step {step}")
            optimizer.zero_grad(set_to_none=True)
            params = [p for p in model.parameters() if p.requires_grad] + list(aux.parameters())
            if cfg.loss.balancer.diagnose_at(step):  # gradient-conflict health check (keeps the graph)
                conflict = balancer.diagnose(weighted, params)
                log.write(json.dumps({"step": step + 1, **conflict}) + "\n")
            multipliers = balancer.backward(weighted, params, step)
            total = sum(multipliers[n] * float(v.detach()) for n, v in weighted.items())
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            seen += len(batch)

            done = step + 1
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                rate = seen / (time.perf_counter() - t0)
                record: dict[str, Any] = {
                    "step": done,
                    "loss/total": total,
                    "lr": optimizer.param_groups[0]["lr"],
                }
                for name, value in losses.items():
                    record[f"loss/{name}"] = float(value.detach())
                    if name in PAIRS:
                        record[f"health/mi_bound/{name}"] = mutual_information_bound(value, len(batch))
                        record[f"temperature/{name}"] = 1.0 / float(scales[name].detach())
                if logits is not None:
                    hit = (logits[:, 0].argmax(-1) == batch.action[:, 0]).float().mean()
                    record["policy/accuracy"] = float(hit)
                record.update(aux.log_values())
                record.update(balancer.log_values())
                record["grad_norm"] = float(grad_norm)
                record["samples_per_s"] = rate
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.info = f"loss {total:.3f}  {rate:.0f} samples/s"
            stop = False
            if val_table is not None and (done % cfg.train.select.every == 0 or done == cfg.train.steps):
                val = validation_metrics(model, val_table, cfg.train.select, cfg.eval)
                improved = val["val/score"] > best["score"]
                if improved:
                    best = {"score": val["val/score"], "step": float(done), "checks_since": 0.0}
                    checkpoint.save_weights(model, ckpt_dir / "best")
                else:
                    best["checks_since"] += 1
                log.write(json.dumps({"step": done, **val, "val/best_step": best["step"]}) + "\n")
                log.flush()
                patience = cfg.train.select.patience
                stop = bool(patience) and best["checks_since"] >= patience
            if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps or stop:
                save_checkpoint(model, optimizer, done, ckpt_dir, best, aux, balancer)
            bar.advance(1)
            if stop:
                console.print(f"early stop at step {done}: no better validation score since step {best['step']:.0f}")
                break
    if val_table is not None and (ckpt_dir / "best" / checkpoint.MODEL_FILE).is_file():
        # the run's model is the selected one; train_state.pt keeps the last weights for --resume
        checkpoint.load_weights(model, ckpt_dir / "best")
        checkpoint.save_weights(model, ckpt_dir)
        atomic.write_json(run_dir / "selection.json", {"best_step": best["step"], "best_val_score": best["score"]})
    console.print(f"trained {cfg.train.steps} steps; checkpoint in {ckpt_dir}")
    return model


def save_checkpoint(
    model: TriModalModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    directory: Path,
    best: dict[str, float] | None = None,
    aux: torch.nn.Module | None = None,
    balancer: torch.nn.Module | None = None,
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
        },
        directory,
    )
    checkpoint.save_weights(model, directory)
