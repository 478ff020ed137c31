"""The weighted tri-modal alignment objective (chapter 5.6):

    L_align = λ_VL·L_V↔L + λ_LA·L_L↔A + λ_VA·L_V↔A + λ_cyc·L_cycle + ...     (defaults 1, 1, 0.5, 0.2)

with an optional pairwise-first curriculum (chapter 5.1): only V↔L for the first steps. The pair
terms live here; the other terms are the objectives registered in ``auxiliary.OBJECTIVES`` (cycle,
trimodal, paraphrase, modality_balance, spectral, decoder, distill, codebook), each built from the
fields of ``LossConfig`` below; ``loss.balancer`` is a ``BALANCERS`` variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..balancing import BalancerConfig, FixedBalancerConfig
from ..codebook import CodebookConfig
from ..config import as_variant, check_float, check_int
from ..modalities import MODALITIES, PAIR_MODALITIES, PAIRS, Batch, Embeddings, Modality, Pair
from ..physics import PhysicsConfig
from .contrastive import group_positives, info_nce, info_nce_memory
from .cycle import CycleConfig
from .memory_bank import MemoryBank, MemoryBankConfig
from .spectral import SpectralConfig


@dataclass
class LossWeights:
    image_text: float = 1.0  # InfoNCE weight of the image-text pair (0 = off)
    text_action: float = 1.0  # InfoNCE weight of the text-action pair (0 = off)
    image_action: float = 0.5  # InfoNCE weight of the image-action pair (0 = off)

    def __post_init__(self) -> None:
        for pair in PAIRS:
            check_float(f"loss.weights.{pair}", getattr(self, pair), 0.0, why="the pair's InfoNCE weight, 0 = off")

    def any_positive(self) -> bool:
        return any(getattr(self, pair) > 0 for pair in PAIRS)


@dataclass
class LossConfig:
    weights: LossWeights = field(default_factory=LossWeights)  # the contrastive pairs' weights
    pairwise_first_steps: int = 0  # curriculum: image_text alone for this many steps, then all pairs
    shared_instruction_positives: bool = True  # samples with the same instruction are positives
    memory_bank: MemoryBankConfig = field(default_factory=MemoryBankConfig)  # past embeddings as extra columns (5.7)
    cycle: CycleConfig = field(default_factory=CycleConfig)  # language as the bridge V <-> A (5.4)
    trimodal: float = 0.0  # weight of the tri-modal consistency term (5.6)
    paraphrase: float = 0.0  # weight of paraphrase consistency (gotcha 6)
    modality_dropout: float = 0.0  # probability of blanking a sample's image or instruction for the policy
    modality_balance: float = 0.0  # weight of the modality-balance hinge (gotcha 1)
    balance_margin: float = 0.5  # nats: removing either modality must move the policy at least this much
    spectral: SpectralConfig = field(default_factory=SpectralConfig)  # γ_VA coherence + chunk reconstruction
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)  # feasibility penalty + reachability distillation
    codebook: CodebookConfig = field(default_factory=CodebookConfig)  # shared VQ codebook across V/L/A (5.5)
    balancer: BalancerConfig = field(default_factory=FixedBalancerConfig)  # how the terms are combined (5.10)

    def __post_init__(self) -> None:
        self.balancer = as_variant(self.balancer, BalancerConfig, "loss.balancer")
        check_int("loss.pairwise_first_steps", self.pairwise_first_steps, 0, why="curriculum steps, 0 = off")
        for name in ("trimodal", "paraphrase", "modality_balance"):
            check_float(f"loss.{name}", getattr(self, name), 0.0, why="a loss weight, 0 = off")
        check_float("loss.balance_margin", self.balance_margin, 0.0, why="nats")
        check_float(
            "loss.modality_dropout", self.modality_dropout, 0.0, 1.0, hi_open=True, why="a probability; 1 blanks all"
        )


class AlignmentLoss:
    def __init__(self, cfg: LossConfig) -> None:
        self.cfg = cfg
        self.candidates: dict[str, int] = {}  # per pair, the columns each row's softmax ran over last call

    def active_pairs(self, step: int) -> tuple[Pair, ...]:
        pairs = tuple(p for p in PAIRS if getattr(self.cfg.weights, p) > 0)
        if step < self.cfg.pairwise_first_steps and "image_text" in pairs:
            return ("image_text",)
        return pairs

    def __call__(
        self,
        emb: Embeddings,
        batch: Batch,
        logit_scale: dict[Pair, Tensor],
        step: int,
        bank: MemoryBank | None = None,
    ) -> dict[str, Tensor]:
        """Unweighted per-pair InfoNCE values, keyed by pair name; with ``bank``, the pairs it serves also
        score the rows against its entries (read only: the caller enqueues the batch afterwards)."""
        text_pos = group_positives(batch.text_group) if self.cfg.shared_instruction_positives else None
        losses: dict[str, Tensor] = {}
        for pair in self.active_pairs(step):
            a, b = PAIR_MODALITIES[pair]
            shared = "text" in (a, b) and self.cfg.shared_instruction_positives
            positives = text_pos if shared else None
            z_a, z_b = emb.get(a), emb.get(b)
            if bank is None or not bank.uses(pair, step):
                losses[pair] = info_nce(z_a, z_b, logit_scale[pair], positives)
                self.candidates[pair] = len(z_a)
                continue
            (queue_a, group_a), (queue_b, group_b) = bank.entries(a, step), bank.entries(b, step)
            losses[pair] = info_nce_memory(
                z_a,
                z_b,
                logit_scale[pair],
                positives,
                queue_a,
                queue_b,
                self._queue_positives(batch.text_group, group_a, shared),
                self._queue_positives(batch.text_group, group_b, shared),
            )
            self.candidates[pair] = len(z_a) + min(len(queue_a), len(queue_b))
        return losses

    @staticmethod
    def _queue_positives(groups: Tensor, queued: Tensor, shared: bool) -> Tensor:
        """(B, Q): the queue's entries of the row's instruction group are positives when the pair shares them."""
        if shared:
            return group_positives(groups, queued)
        return torch.zeros(len(groups), len(queued), dtype=torch.bool, device=groups.device)

    def modalities(self, step: int) -> tuple[Modality, ...]:
        """The modalities the active pairs need at ``step``."""
        needed = {m for p in self.active_pairs(step) for m in PAIR_MODALITIES[p]}
        return tuple(m for m in MODALITIES if m in needed)

    def weights(self, losses: dict[str, Tensor], extra: dict[str, float] | None = None) -> dict[str, float]:
        """The weight of every term in ``losses``: pair weights from the config, others from ``extra``."""
        extra = extra or {}
        return {name: float(extra[name] if name in extra else getattr(self.cfg.weights, name)) for name in losses}

    def total(self, losses: dict[str, Tensor], extra: dict[str, float] | None = None) -> Tensor:
        if not losses:
            raise ValueError("no loss term is active at this step")
        w = self.weights(losses, extra)
        return sum((w[name] * value for name, value in losses.items()), start=next(iter(losses.values())) * 0)
