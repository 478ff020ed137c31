"""Consistency terms against the chapter's gotchas 1 and 6.

* Paraphrase consistency (gotcha 6, "language ambiguity amplified": synonymous instructions lead
  to different actions). A paraphrase L' of each instruction must land where the instruction does
  and retrieve the same actions:

      L_para = ½ InfoNCE(z_L', z_A; positives = same instruction) + ½ mean_i (1 − cos(z_L',i, z_L,i))

* Modality balance (gotcha 1, "single-modality collapse": shuffling one modality barely changes
  the output). Removing a modality from the policy's input must change its action distribution by
  at least ``margin`` nats on average:

      L_bal = Σ_{m ∈ {image, text}} max(0, margin − mean_i KL(π(·|V, L)_i ‖ π(·|without m)_i))

  A hinge, so a policy that already uses both modalities is left alone, and only the neglected one
  is pushed up (the dominant one is never pushed down, unlike a symmetric |D_V − D_L| penalty).
  Modality dropout (a sample's image or instruction blanked with probability p while training the
  policy) is the other half of the gotcha's remedy; it lives in ``TriModalModel.run``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .contrastive import info_nce


def paraphrase_consistency(
    z_para: Tensor,  # (B, D) embeddings of the paraphrased instructions
    z_text: Tensor,  # (B, D) embeddings of the original instructions
    z_action: Tensor,  # (B, D)
    logit_scale: Tensor,  # () the text_action pair's 1/τ
    positives: Tensor | None = None,  # (B, B) bool, True where two samples share an instruction
) -> Tensor:
    retrieve = info_nce(z_para, z_action, logit_scale, positives)
    agree = (1 - (z_para * z_text).sum(-1)).mean()
    return 0.5 * retrieve + 0.5 * agree


def action_kl(full: Tensor, ablated: Tensor) -> Tensor:
    """Mean over samples and chunk steps of KL(softmax(full) ‖ softmax(ablated)); logits (B, k, A)."""
    log_p = F.log_softmax(full, dim=-1)
    log_q = F.log_softmax(ablated, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def modality_balance(full: Tensor, without: dict[str, Tensor], margin: float) -> tuple[Tensor, dict[str, Tensor]]:
    """L_bal and the per-modality KL it is made of (for logging as ``modality/kl/<m>``)."""
    kls = {m: action_kl(full, logits) for m, logits in without.items()}
    loss = sum((torch.relu(margin - kl) for kl in kls.values()), start=full.new_zeros(()))
    return loss, kls
