"""One training step as a unit: the batch's augmentation, the named losses, their weights and the update.

    unit = TrainingStep(cfg, model, table)                  # the objectives, priors and term names of a run
    inp = unit.prepare_batch(sampler, k)                     # batch k, augmented (seeded by (seed, k))
    losses = unit.compute_losses(inp, k)                     # pair InfoNCE + policy + auxiliary objectives
    update = unit.apply(losses.weighted, optimizer, balancer, k)   # balancer backward, clip, optimizer step

``train.train``, the benchmarks and the tests all go through this unit, so a term added to the
objectives reaches every one of them.

Finite-loss guard: ``apply`` takes the optimizer step only when the total loss and the gradient norm
are finite. Otherwise it zeroes the gradients, puts the balancer's learned state back as it was and
returns an update whose ``skipped`` says why; parameters and optimizer state are untouched. The
check reads the total and the clip norm already computed, so finite steps are bit-identical to an
unguarded step. The objectives' buffers that the forward pass updates (the codebook's moving
averages, the memory bank's queues) are saved by ``save_buffers`` before ``compute_losses`` and put back
by ``restore_buffers``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from .balancing.diagnostics import diagnose
from .data.augment import mirror, mirror_permutation
from .encoders.image import random_shift
from .errors import ConfigError
from .losses import AlignmentLoss, mutual_information_bound
from .losses.auxiliary import AuxiliaryLosses, Context
from .losses.memory_bank import MemoryBank
from .modalities import MODALITIES, PAIRS, Batch, Pair

if TYPE_CHECKING:
    from .balancing import Balancer
    from .data.lerobot import FrameTable
    from .data.windows import ChunkSampler
    from .model import ModelOutput, TriModalModel
    from .presets import RunConfig

BANK = "memory_bank"  # the bank's key in the saved buffers and in train_state.pt


@dataclass
class StepBatch:
    """A batch ready for one step, with the step's own randomness."""

    batch: Batch  # on the model's device
    rng: np.random.Generator  # handed on to the objectives that draw (paraphrases, spectral windows, ...)
    drop: Tensor | None = None  # (B,) modality dropout for the policy: 0 keep, 1 blank image, 2 blank text


@dataclass
class StepLosses:
    """The named loss terms of one step."""

    values: dict[str, Tensor]  # unweighted, keyed by pair, "policy" or objective term
    weighted: dict[str, Tensor]  # prior λ × value, for the terms whose prior is > 0
    out: ModelOutput  # the forward pass (embeddings, policy logits / conditioning)
    scales: dict[Pair, Tensor]  # 1/τ of every pair


@dataclass
class StepUpdate:
    """What the parameter update did."""

    total: float  # Σ multiplier × weighted term
    grad_norm: Tensor  # norm of every trained parameter's gradient before clipping
    multipliers: dict[str, float]  # the balancer's weight of each term
    conflict: dict[str, Any] | None = None  # gradient-conflict diagnostics, on the steps that take them
    skipped: str | None = None  # why no update was made (a non-finite loss or gradient); None = applied


class TrainingStep:
    """The losses of one training step and the update they make, built once per run."""

    def __init__(self, cfg: RunConfig, model: TriModalModel, table: FrameTable) -> None:
        self.cfg = cfg
        self.model = model
        self.device = next(model.parameters()).device
        self.mirror_perm = mirror_permutation(table.action_spec) if cfg.train.augment_mirror > 0 else None
        self.objective = AlignmentLoss(cfg.loss)
        self.bank: MemoryBank | None = None  # past embeddings as extra InfoNCE columns (loss.memory_bank)
        bank = cfg.loss.memory_bank
        if bank.enabled:
            bank.check_samples(table.num_frames, str(table.root))
            queued = bank.modalities(self.objective.active_pairs(cfg.loss.pairwise_first_steps))  # all trained pairs
            start = bank.first_step(cfg.train.warmup_steps, cfg.train.batch_size)
            self.bank = bank.build(cfg.model.embed_dim, queued, start).to(self.device) if queued else None
        self.aux = AuxiliaryLosses(cfg.loss, model, table).to(self.device)
        policy = cfg.model.policy
        if (self.aux.needs_policy or cfg.loss.modality_dropout > 0) and not policy.enabled:
            raise ConfigError("loss.modality_dropout / loss.modality_balance act on the policy; enable model.policy")
        # every term the run can produce, prior weight > 0: the balancer's state is keyed by these names
        self.priors: dict[str, float] = {"policy": policy.weight, **self.aux.weights()}
        self.names: list[str] = [p for p in PAIRS if getattr(cfg.loss.weights, p) > 0]
        self.names += ["policy"] if policy.enabled and policy.weight > 0 else []
        self.names += [n for n, w in self.aux.weights().items() if w > 0]
        cuda = self.device.type == "cuda"
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def parameters(self) -> list[nn.Parameter]:
        """Every trained parameter: the model's (those that require a gradient), then the objectives' heads."""
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.aux.parameters())

    def uses_policy(self, step: int) -> bool:
        policy = self.cfg.model.policy
        return policy.enabled and step >= policy.start_step

    def prepare_batch(self, sampler: ChunkSampler, step: int) -> StepBatch:
        """Batch ``step``: ``default_rng([seed, step])`` draws its rows, then seeds the torch generator that
        draws, in this order, the random shift, the history dropout, the mirror and the modality dropout.
        A resumed run therefore sees exactly the batches of the uninterrupted one."""
        train, policy = self.cfg.train, self.cfg.model.policy
        rng = np.random.default_rng([train.seed, step])
        batch = sampler.sample(rng, train.batch_size)
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        batch.image = random_shift(batch.image, train.augment_shift, gen)
        if policy.history_dropout > 0 and len(batch.prev_action):  # the history must not replace the instruction
            hide = torch.rand(len(batch), generator=gen) < policy.history_dropout
            batch.prev_action = torch.where(hide[:, None], -1, batch.prev_action.view(len(batch), -1))
        if self.mirror_perm is not None:
            flip = torch.rand(len(batch), generator=gen) < train.augment_mirror
            batch = mirror(batch, flip, self.mirror_perm)
        batch = batch.to(self.device)
        drop = None
        if self.uses_policy(step) and self.cfg.loss.modality_dropout > 0:  # 1 = blank the image, 2 = the text
            hit = torch.rand(len(batch), generator=gen) < self.cfg.loss.modality_dropout
            drop = (hit * (1 + (torch.rand(len(batch), generator=gen) < 0.5))).long().to(self.device)
        return StepBatch(batch=batch, rng=rng, drop=drop)

    def compute_losses(self, inp: StepBatch, step: int) -> StepLosses:
        """One forward pass and every loss term of ``step``: pair InfoNCE, the policy, the auxiliary objectives."""
        model, batch, policy = self.model, inp.batch, self.cfg.model.policy
        needed = set(self.objective.modalities(step)) | self.aux.modalities()
        with self.autocast:
            out = model.forward_train(
                batch,
                tuple(m for m in MODALITIES if m in needed),
                policy=self.uses_policy(step),
                detach_policy_inputs=step < policy.freeze_encoders_until,
                drop=inp.drop,
            )
        scales: dict[Pair, Tensor] = {p: model.logit_scale(p) for p in PAIRS}
        values = self.objective(out.emb, batch, scales, step, self.bank)
        if self.bank is not None:  # after the loss: a batch never meets itself in the queue
            self.bank.enqueue(out.emb, batch.text_group, step)
        if out.logits is not None or out.cond is not None:
            values["policy"] = model.policy_loss(out, batch)
        if len(self.aux):
            with self.autocast:
                values.update(self.aux(Context(model=model, batch=batch, out=out, step=step, rng=inp.rng)))
        return StepLosses(values=values, weighted=self.weigh(values, step), out=out, scales=scales)

    def weigh(self, values: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        """Each term times its prior weight λ; terms with λ = 0 are left out."""
        prior = self.objective.weights(values, self.priors)
        weighted = {n: prior[n] * v for n, v in values.items() if prior[n] > 0}
        if not weighted:
            raise ConfigError(f"no loss term has a positive weight at step {step}")
        return weighted

    def apply(
        self, weighted: dict[str, Tensor], optimizer: torch.optim.Optimizer, balancer: Balancer, step: int
    ) -> StepUpdate:
        """Gradients through ``balancer``, clipped over every trained parameter, then ``optimizer.step()``;
        with a non-finite total loss or gradient norm, no step (see the module's finite-loss guard)."""
        optimizer.zero_grad(set_to_none=True)
        params = self.parameters()
        conflict = None
        if self.cfg.loss.balancer.diagnose_at(step):  # gradient-conflict health check (keeps the graph)
            conflict = diagnose(weighted, params)
        learned = copy.deepcopy(balancer.state_dict())  # what backward may update (GradNorm's w, σ_i, ...)
        multipliers = balancer.backward(weighted, params, step)
        total = float(sum(multipliers[n] * float(v.detach()) for n, v in weighted.items()))
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        bad = non_finite_reason(total, grad_norm, weighted)
        if bad is not None:
            optimizer.zero_grad(set_to_none=True)
            for p in params:
                p.grad = None
            balancer.load_state_dict(learned)
            return StepUpdate(total=total, grad_norm=grad_norm, multipliers=multipliers, skipped=bad)
        optimizer.step()
        return StepUpdate(total=total, grad_norm=grad_norm, multipliers=multipliers, conflict=conflict)

    def save_buffers(self) -> dict[str, Tensor]:
        """Copies of the objectives' buffers, which their forward pass may update (the VQ codebook's
        moving averages, the memory bank's queues); ``restore_buffers`` puts them back after a skipped step."""
        saved = {name: buf.detach().clone() for name, buf in self.aux.named_buffers()}
        if self.bank is not None:
            saved |= {f"{BANK}.{name}": buf.detach().clone() for name, buf in self.bank.named_buffers()}
        return saved

    def restore_buffers(self, saved: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name, buf in self.aux.named_buffers():
                buf.copy_(saved[name])
        if self.bank is not None:
            self.bank.load_state_dict({k[len(BANK) + 1 :]: v for k, v in saved.items() if k.startswith(f"{BANK}.")})

    def log_values(self, losses: StepLosses, batch: Batch) -> dict[str, float]:
        """``loss/<term>`` of every term, the pairs' MI bound and temperature, the policy's accuracy and
        the objectives' own metrics."""
        record: dict[str, float] = {}
        for name, value in losses.values.items():
            record[f"loss/{name}"] = float(value.detach())
            pair = next((p for p in PAIRS if p == name), None)
            if pair is not None:
                columns = self.objective.candidates.get(pair, len(batch))  # B, plus the bank's entries
                record[f"health/mi_bound/{pair}"] = mutual_information_bound(value, columns)
                record[f"temperature/{pair}"] = 1.0 / float(losses.scales[pair].detach())
        logits = losses.out.logits
        if logits is not None:
            hit = (logits[:, 0].argmax(-1) == batch.action[:, 0]).float().mean()
            record["policy/accuracy"] = float(hit)
        record.update(self.aux.log_values())
        if self.bank is not None:
            record["memory_bank/fill"] = self.bank.fill()
        return record


def non_finite_reason(total: float, grad_norm: Tensor, weighted: dict[str, Tensor]) -> str | None:
    """Why a step must not update the weights (its total loss or gradient norm is NaN or infinite), or None."""
    if math.isfinite(total) and bool(torch.isfinite(grad_norm)):
        return None
    bad = [n for n, v in weighted.items() if not bool(torch.isfinite(v.detach()).all())]
    if not math.isfinite(total):
        terms = f" (terms {', '.join(bad)})" if bad else ""
        return f"the total loss is {total}{terms}"
    return f"the gradient norm is {float(grad_norm)}"
