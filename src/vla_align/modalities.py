"""Modality and pair names, and the containers that travel between data, model and losses.

Shape letters used in comments throughout the package:
B batch, C channels, H/W image height/width, L text tokens, T action-chunk length,
A action dimension (1 for discrete ids), D shared embedding dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import torch
from torch import Tensor

Modality = Literal["image", "text", "action"]
Pair = Literal["image_text", "image_action", "text_action"]

MODALITIES: Final[tuple[Modality, ...]] = ("image", "text", "action")
PAIRS: Final[tuple[Pair, ...]] = ("image_text", "image_action", "text_action")
PAIR_MODALITIES: Final[dict[Pair, tuple[Modality, Modality]]] = {
    "image_text": ("image", "text"),
    "image_action": ("image", "action"),
    "text_action": ("text", "action"),
}


@dataclass
class Batch:
    """One training or evaluation batch of aligned (image, instruction, action chunk) samples.

    ``text_group`` identifies the instruction string of each sample (equal ids = equal text);
    it lets losses treat every sample with the same instruction as a positive.
    """

    image: Tensor  # (B, H, W, 3) uint8
    text: list[str]  # B instruction strings
    action: Tensor  # (B, T) int64 ids, or (B, T, A) float32
    action_mask: Tensor  # (B, T) bool, False past the episode end
    text_group: Tensor  # (B,) int64
    episode: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))  # (B,)
    frame: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))  # (B,)
    # (B, h) ids of the h previous actions, most recent first; -1 = none (before the episode start)
    prev_action: Tensor = field(default_factory=lambda: torch.empty(0, 1, dtype=torch.long))
    # (B, S) float32 proprioceptive state at the frame (continuous datasets); (0, 0) when the data has none
    state: Tensor = field(default_factory=lambda: torch.empty(0, 0))

    def __len__(self) -> int:
        return len(self.text)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            image=self.image.to(device, non_blocking=True),
            text=self.text,
            action=self.action.to(device, non_blocking=True),
            action_mask=self.action_mask.to(device, non_blocking=True),
            text_group=self.text_group.to(device, non_blocking=True),
            episode=self.episode.to(device),
            frame=self.frame.to(device),
            prev_action=self.prev_action.to(device),
            state=self.state.to(device),
        )


@dataclass
class Embeddings:
    """Unit-norm embeddings in the shared space Z, keyed by modality."""

    image: Tensor | None = None  # (B, D)
    text: Tensor | None = None  # (B, D)
    action: Tensor | None = None  # (B, D)

    def get(self, modality: Modality) -> Tensor:
        value = getattr(self, modality)
        if value is None:
            raise KeyError(f"no {modality} embedding in this batch")
        result: Tensor = value
        return result
