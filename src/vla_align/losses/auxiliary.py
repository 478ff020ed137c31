"""The training signals beside the pair InfoNCE and the policy loss (chapter 5.3, 5.4, 5.6, gotchas
1 and 6), each a registered objective that returns named loss terms.

Every objective is an ``nn.Module`` whose class is registered in ``OBJECTIVES``; its classmethod
``build(loss_cfg, model, table)`` reads the objective's settings from the run's LossConfig (the
fields below) and returns None when they leave it off. The ones with heads (cycle's g_VL / g_LA)
keep them as submodules. They are training-only: the heads live in ``AuxiliaryLosses``,
whose state goes into ``train_state.pt`` (exact resume) but not into ``model.safetensors`` (what a
deployed model needs). Term names key the balancer's weights and the ``loss/<name>`` log entries.

==================  ==========================================  =====================================
objective           terms                                        config
==================  ==========================================  =====================================
cycle               ``cycle``                                    ``loss.cycle.weight`` (λ_cyc, 0.2)
trimodal            ``trimodal``                                 ``loss.trimodal``
paraphrase          ``paraphrase``                               ``loss.paraphrase``
modality_balance    ``modality_balance``                         ``loss.modality_balance`` (+ margin)
spectral            ``spectral``: 1 − γ_VA in band               ``loss.spectral.weight`` (+ window...)
decoder             ``spectral_recon``, ``feasibility``         ``loss.spectral.recon_weight``,
                                                                 ``loss.physics.feasibility_weight``
distill             ``distill``: reachability logits             ``loss.physics.distill_weight``
codebook            ``vq_commit``, ``vq_agreement``              ``loss.codebook.weight`` (λ; commit
                    (+ ``vq_codebook`` without EMA)              λ·β, agreement λ·agreement)
==================  ==========================================  =====================================

``spectral`` encodes ``loss.spectral.windows`` windows of ``loss.spectral.window`` consecutive
frames, projects each frame's z_V to the action's channels with a learned linear map (discrete
actions: one channel per action id, one-hot), and compares the two trajectories with the Welch
coherence of ``spectral.py`` at the dataset's control rate. ``decoder`` reconstructs the action
chunk from z_A (continuous actions), scored low-frequency-first and checked against the physical
limits fitted on the training split. ``distill`` teaches a head on z_A the soft "reachable" logit
of a feasibility checker (the teacher) on the real chunk and on an infeasible perturbation of it.
Actions are treated as velocity commands for the limits (Meta-World's deltas are).

``codebook`` quantizes whichever of z_V, z_L, z_A the step computed with one ``SharedCodebook``
(``codebook.py``: nearest code by cosine, straight-through, EMA or learned codes) and adds the
cross-modal agreement of ``codebook.agreement_loss`` averaged over the pairs present, with soft
assignments q_m,i = softmax_k(cos(z_m,i, e_k) / τ) over detached codes. Its buffers (codes, EMA
statistics, restart counters) are part of ``train_state.pt``'s "aux" state like the heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..codebook import SharedCodebook, agreement, agreement_loss, perplexity, usage
from ..data.paraphrase import Paraphraser
from ..errors import ConfigError
from ..modalities import MODALITIES, PAIR_MODALITIES, PAIRS, Batch, Modality
from ..physics import PhysicalLimits, feasibility_penalty, fit_limits, reachability_teacher_logits
from ..registry import Registry
from .consistency import modality_balance, paraphrase_consistency
from .contrastive import group_positives
from .cycle import CycleLoss, trimodal_consistency
from .distill import distillation_loss, perturb_infeasible
from .spectral import band_average_coherence, coherence_loss, lowfreq_reconstruction_loss

if TYPE_CHECKING:
    from ..data.lerobot import FrameTable
    from ..model import ModelOutput, TriModalModel
    from .objective import LossConfig


@dataclass
class Context:
    """What one training step hands every objective."""

    model: TriModalModel
    batch: Batch
    out: ModelOutput
    step: int
    rng: np.random.Generator


class Objective(nn.Module):
    """A training signal beside the pair InfoNCE and the policy loss; ``OBJECTIVES`` maps its name to
    its class, whose ``build`` reads the objective's settings from the run's LossConfig."""

    needs: ClassVar[tuple[Modality, ...]] = ()  # embeddings the objective reads
    needs_policy: ClassVar[bool] = False

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> Objective | None:
        """The objective for a run, or None when ``cfg`` leaves it off (its weights are 0)."""
        raise NotImplementedError

    def weights(self) -> dict[str, float]:  # term -> prior weight λ
        raise NotImplementedError

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        raise NotImplementedError

    def log_values(self) -> dict[str, float]:
        """Scalars of the last call for metrics.jsonl (none by default)."""
        return {}


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


@OBJECTIVES.register("cycle")
class Cycle(Objective):
    needs = ("image", "text", "action")

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> Cycle | None:
        return cls(cfg, model) if cfg.cycle.weight > 0 else None

    def __init__(self, cfg: LossConfig, model: TriModalModel) -> None:
        super().__init__()
        self.cfg = cfg.cycle
        self.loss = CycleLoss(cfg.cycle, model.cfg.embed_dim)

    def weights(self) -> dict[str, float]:
        return {"cycle": self.cfg.weight}

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        e = ctx.out.emb
        return {"cycle": self.loss(e.get("image"), e.get("text"), e.get("action"))}


@OBJECTIVES.register("trimodal")
class Trimodal(Objective):
    needs = ("image", "text", "action")

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> Trimodal | None:
        return cls(cfg.trimodal) if cfg.trimodal > 0 else None

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    def weights(self) -> dict[str, float]:
        return {"trimodal": self.weight}

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        e = ctx.out.emb
        return {"trimodal": trimodal_consistency(e.get("image"), e.get("text"), e.get("action"))}


@OBJECTIVES.register("paraphrase")
class Paraphrase(Objective):
    needs = ("text", "action")

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> Paraphrase | None:
        return cls(cfg.paraphrase, table) if cfg.paraphrase > 0 else None

    def __init__(self, weight: float, table: FrameTable) -> None:
        super().__init__()
        self.weight = weight
        info = table.info.get("vla_align", {})
        sets = list(table.env_tasks) if info.get("instruction_sets") else None
        self.paraphraser = Paraphraser(table.instructions, sets)

    def weights(self) -> dict[str, float]:
        return {"paraphrase": self.weight}

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        e, model = ctx.out.emb, ctx.model
        para = model.encode_text(self.paraphraser(ctx.batch.text, ctx.rng))  # (B, D)
        scale = model.logit_scale("text_action")
        positives = group_positives(ctx.batch.text_group)
        return {"paraphrase": paraphrase_consistency(para, e.get("text"), e.get("action"), scale, positives)}


@OBJECTIVES.register("modality_balance")
class ModalityBalance(Objective):
    needs_policy = True

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> ModalityBalance | None:
        if cfg.modality_balance <= 0:
            return None
        if model.policy is None:
            raise ConfigError("loss.modality_balance needs a policy (the balance is measured on its actions); set 0")
        return cls(cfg.modality_balance, cfg.balance_margin)

    def __init__(self, weight: float, margin: float) -> None:
        super().__init__()
        self.weight, self.margin = weight, margin
        self.last_kl: dict[str, float] = {}

    def weights(self) -> dict[str, float]:
        return {"modality_balance": self.weight}

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        out, model = ctx.out, ctx.model
        if out.logits is None or out.policy_inputs is None or out.prev_action is None:
            return {}
        b = len(out.logits)
        without = {
            m: model.policy_logits(out.policy_inputs, out.prev_action, torch.full((b,), code, device=out.logits.device))
            for m, code in (("image", 1), ("text", 2))
        }
        loss, kls = modality_balance(out.logits, without, self.margin)
        self.last_kl = {m: float(v.detach()) for m, v in kls.items()}
        return {"modality_balance": loss}

    def log_values(self) -> dict[str, float]:
        return {f"modality/kl/{m}": v for m, v in self.last_kl.items()}


@OBJECTIVES.register("spectral")
class Spectral(Objective):
    """L_spec between the visual trajectory (projected to the action channels) and the actions."""

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> Spectral | None:
        return cls(cfg, model, table) if cfg.spectral.weight > 0 else None

    def __init__(self, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> None:
        super().__init__()
        self.cfg = cfg.spectral
        spec = table.action_spec
        self.discrete = spec.kind == "discrete"
        self.channels = spec.num_actions if self.discrete else spec.dim
        self.project = nn.Linear(model.cfg.embed_dim, self.channels)
        self.table = table
        self.fs = float(table.fps)
        w = self.cfg.window
        self.eligible = np.flatnonzero(table.episode_length >= w)
        if len(self.eligible) == 0:
            raise ConfigError(
                f"loss.spectral.weight > 0 needs episodes of at least loss.spectral.window = {w} steps; the "
                f"longest in {table.root} has {int(table.episode_length.max())}: lower the window or set weight 0"
            )
        self.last_coherence = float("nan")

    def weights(self) -> dict[str, float]:
        return {"spectral": self.cfg.weight}

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        t, w, n = self.table, self.cfg.window, self.cfg.windows
        episodes = self.eligible[ctx.rng.integers(0, len(self.eligible), size=n)]  # (n,)
        starts = t.episode_start[episodes] + (ctx.rng.random(n) * (t.episode_length[episodes] - w + 1)).astype(int)
        rows = starts[:, None] + np.arange(w)[None, :]  # (n, w)
        device = self.project.weight.device
        frames = torch.from_numpy(t.frames[rows.reshape(-1)]).to(device)  # (n*w, H, W, 3)
        z = ctx.model.encode_image(frames).view(n, w, -1)  # (n, w, D)
        v = self.project(z).transpose(1, 2)  # (n, C, w)
        actions = torch.from_numpy(t.actions[rows]).to(device)  # (n, w) or (n, w, A)
        if self.discrete:
            a = F.one_hot(actions, self.channels).to(v.dtype).transpose(1, 2)  # (n, C, w)
        else:
            a = actions.to(v.dtype).transpose(1, 2)  # (n, A, w)
        nperseg = self.cfg.nperseg or None
        loss = coherence_loss(
            v.float(), a.float(), self.fs, nperseg, band=self.cfg.band, weight_kind=self.cfg.weight_kind
        )
        if self.cfg.weight_kind == "box":  # L_spec with box weights is exactly 1 − (mean in-band γ)
            self.last_coherence = 1.0 - float(loss.detach())
        else:
            with torch.no_grad():
                gamma = band_average_coherence(v.float(), a.float(), self.fs, nperseg, band=self.cfg.band)
                self.last_coherence = float(gamma.nanmean())
        return {"spectral": loss}

    def log_values(self) -> dict[str, float]:
        return {"health/coherence/image_action": self.last_coherence}


def _training_limits(cfg: LossConfig, table: FrameTable) -> PhysicalLimits:
    given = cfg.physics.physical_limits()
    if given is not None:
        return given
    trajectories = [
        table.actions[s : s + n] for s, n in zip(table.episode_start, table.episode_length, strict=True) if n >= 4
    ]
    return fit_limits(trajectories, dt=1.0 / float(table.fps), percentile=cfg.physics.percentile, signal="velocity")


def _continuous_only(table: FrameTable, what: str) -> None:
    if table.action_spec.kind != "continuous":
        raise ConfigError(f"{what} acts on continuous action chunks; {table.root} has discrete actions: set it to 0")


@OBJECTIVES.register("decoder")
class Decoder(Objective):
    """z_A -> the action chunk: low-frequency-first reconstruction and the feasibility penalty."""

    needs = ("action",)

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> Decoder | None:
        if cfg.spectral.recon_weight <= 0 and cfg.physics.feasibility_weight <= 0:
            return None
        _continuous_only(table, "loss.spectral.recon_weight / loss.physics.feasibility_weight")
        return cls(cfg, model, table)

    def __init__(self, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> None:
        super().__init__()
        self.recon_weight = cfg.spectral.recon_weight
        self.decay = cfg.spectral.recon_decay
        self.feasibility_weight = cfg.physics.feasibility_weight
        self.chunk, self.dim = model.cfg.action.chunk_len, table.action_spec.dim
        self.decode = nn.Sequential(
            nn.Linear(model.cfg.embed_dim, 256), nn.GELU(), nn.Linear(256, self.chunk * self.dim)
        )
        self.limits = _training_limits(cfg, table) if self.feasibility_weight > 0 else None

    def weights(self) -> dict[str, float]:
        out = {"spectral_recon": self.recon_weight} if self.recon_weight > 0 else {}
        if self.feasibility_weight > 0:
            out["feasibility"] = self.feasibility_weight
        return out

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        z_a = ctx.out.emb.get("action")
        pred = self.decode(z_a).view(len(z_a), self.chunk, self.dim).float()  # (B, T, A)
        target, mask = ctx.batch.action.float(), ctx.batch.action_mask
        out: dict[str, Tensor] = {}
        if self.recon_weight > 0:
            out["spectral_recon"] = lowfreq_reconstruction_loss(pred, target, mask, self.decay)
        if self.limits is not None:
            out["feasibility"] = feasibility_penalty(pred, self.limits, mask, signal="velocity")
        return out


@OBJECTIVES.register("distill")
class Distill(Objective):
    """A head on z_A learns the feasibility checker's soft reachable logit (chapter 5.6, gotcha 9)."""

    needs = ("action",)

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> Distill | None:
        if cfg.physics.distill_weight <= 0:
            return None
        _continuous_only(table, "loss.physics.distill_weight")
        return cls(cfg, model, table)

    def __init__(self, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> None:
        super().__init__()
        self.weight = cfg.physics.distill_weight
        self.temperature = cfg.physics.distill_temperature
        self.limits = _training_limits(cfg, table)
        self.student = nn.Sequential(nn.Linear(model.cfg.embed_dim, 128), nn.GELU(), nn.Linear(128, 1))

    def weights(self) -> dict[str, float]:
        return {"distill": self.weight}

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        real, mask = ctx.batch.action.float(), ctx.batch.action_mask
        gen = torch.Generator().manual_seed(int(ctx.rng.integers(2**31)))
        fake = perturb_infeasible(real.cpu(), gen, mask=mask.cpu(), signal="velocity").to(real.device)
        chunks = torch.cat([real, fake])  # (2B, T, A)
        masks = torch.cat([mask, mask])
        teacher = reachability_teacher_logits(chunks, self.limits, masks, signal="velocity")  # (2B,)
        z_fake = ctx.model.encode_action(fake, mask)  # (B, D)
        z = torch.cat([ctx.out.emb.get("action"), z_fake])  # (2B, D)
        student = self.student(z).squeeze(-1).float()  # (2B,)
        return {"distill": distillation_loss(student, teacher.to(student.dtype), self.temperature)}


@OBJECTIVES.register("codebook")
class Codebook(Objective):
    """One VQ codebook shared by z_V, z_L and z_A (chapter 5.5): commitment, agreement, health metrics."""

    @classmethod
    def build(cls, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> Codebook | None:
        return cls(cfg, model) if cfg.codebook.weight > 0 else None

    def __init__(self, cfg: LossConfig, model: TriModalModel) -> None:
        super().__init__()
        self.cfg = cfg.codebook
        self.codebook = SharedCodebook(cfg.codebook, model.cfg.embed_dim)
        self.last_metrics: dict[str, float] = {}

    def weights(self) -> dict[str, float]:
        c = self.cfg
        out = {"vq_commit": c.weight * c.beta}
        if not c.ema:
            out["vq_codebook"] = c.weight
        if c.agreement > 0:
            out["vq_agreement"] = c.weight * c.agreement
        return out

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        e = ctx.out.emb
        present = [m for m in MODALITIES if getattr(e, m) is not None]
        if not present:
            return {}
        zs = {m: e.get(m) for m in present}  # (B, D) each
        pairs = [p for p in PAIRS if all(m in zs for m in PAIR_MODALITIES[p])]
        tau = self.cfg.temperature
        # soft assignments before the EMA step, so they see the same codes as the hard ones
        log_q = {m: self.codebook.soft_assign(z, tau) for m, z in zs.items()} if self.cfg.agreement > 0 else {}
        _, indices, vq = self.codebook.quantize(torch.cat(list(zs.values())))  # (M*B,)
        ids = dict(zip(present, torch.split(indices, [len(z) for z in zs.values()]), strict=True))
        out = {"vq_commit": vq["commit"]}
        if not self.cfg.ema:
            out["vq_codebook"] = vq["codebook"]
        if log_q and pairs:
            a_b = [PAIR_MODALITIES[p] for p in pairs]
            out["vq_agreement"] = torch.stack([agreement_loss(log_q[a], log_q[b]) for a, b in a_b]).mean()
        k = self.cfg.codes
        metrics = {f"codebook/perplexity/{m}": float(perplexity(i, k)) for m, i in ids.items()}
        metrics.update({f"codebook/usage/{m}": usage(i, k) for m, i in ids.items()})
        for p in pairs:
            a, b = PAIR_MODALITIES[p]
            metrics[f"codebook/agreement/{p}"] = agreement(ids[a], ids[b])
        if len(ids) == 3:
            same = (ids["image"] == ids["text"]) & (ids["text"] == ids["action"])
            metrics["codebook/agreement/all"] = float(same.float().mean())
        self.last_metrics = metrics
        return out

    def log_values(self) -> dict[str, float]:
        return dict(self.last_metrics)


class AuxiliaryLosses(nn.Module):
    """The enabled objectives of a run, in registry order."""

    def __init__(self, cfg: LossConfig, model: TriModalModel, table: FrameTable) -> None:
        super().__init__()
        built = {name: objective.build(cfg, model, table) for name, objective in OBJECTIVES.items()}
        self.objectives = nn.ModuleDict({k: v for k, v in built.items() if v is not None})

    def __len__(self) -> int:
        return len(self.objectives)

    def _each(self) -> list[Objective]:
        return [o for o in self.objectives.values() if isinstance(o, Objective)]

    def modalities(self) -> set[Modality]:
        return {m for o in self._each() for m in o.needs}

    @property
    def needs_policy(self) -> bool:
        return any(o.needs_policy for o in self._each())

    def weights(self) -> dict[str, float]:
        return {k: v for o in self._each() for k, v in o.weights().items()}

    def forward(self, ctx: Context) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        for objective in self._each():
            losses.update(objective(ctx))
        return losses

    def log_values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for o in self._each():
            out.update(o.log_values())
        return out
