"""Augmentations that keep the (image, instruction, action) triple consistent.

``mirror``: flip the frame left-right and, so that the sample still describes one coherent world,
swap the actions named "left" and "right" (and the words "left" / "right" in the instruction). For
an egocentric view such as BabyAI's, where the agent sits at the bottom centre of its own view, the
mirrored sample is a real demonstration of the mirrored layout. Pixel shifts are in
``encoders.image.random_shift``; they are wrong for tile-aligned stems (see the BabyAI presets).
"""

from __future__ import annotations

import re

import torch

from ..errors import ConfigError
from ..modalities import Batch
from .episode import ActionSpec

_SIDE = re.compile(r"\b(left|right)\b")


def mirror_permutation(spec: ActionSpec) -> torch.Tensor:
    """(A,) ids -> mirrored ids: "left" <-> "right", every other action unchanged."""
    if spec.kind != "discrete":
        raise ConfigError("train.augment_mirror needs discrete actions named 'left' and 'right'")
    names = [n.lower() for n in spec.names]
    if "left" not in names or "right" not in names:
        raise ConfigError(
            f"train.augment_mirror needs actions named 'left' and 'right' to swap; this dataset's are {spec.names}"
        )
    perm = torch.arange(spec.num_actions)
    i, j = names.index("left"), names.index("right")
    perm[i], perm[j] = j, i
    return perm


def mirror_text(text: str) -> str:
    return _SIDE.sub(lambda m: "right" if m.group(1) == "left" else "left", text)


def mirror(batch: Batch, which: torch.Tensor, perm: torch.Tensor) -> Batch:
    """Mirror the samples where ``which`` (B,) bool is True; returns a new Batch."""
    if not bool(which.any()):
        return batch
    image = batch.image.clone()
    image[which] = image[which].flip(2)  # (b, H, W, 3): W is dim 2 of (B, H, W, 3)
    action = batch.action.clone()
    action[which] = perm[action[which].clamp(min=0)]
    prev = batch.prev_action.clone()
    if len(prev):
        flat = prev.view(len(prev), -1)  # (B, h) view of prev
        sel = which[:, None] & (flat >= 0)  # (B, h)
        flat[sel] = perm[flat[sel]]
    text = [mirror_text(t) if w else t for t, w in zip(batch.text, which.tolist(), strict=True)]
    changed = [t != o for t, o in zip(text, batch.text, strict=True)]
    group = batch.text_group.clone()
    if any(changed):  # a mirrored instruction is a different string: give it its own group id
        offset = int(group.max()) + 1 if len(group) else 0
        lookup: dict[str, int] = {}
        for k, (t, c) in enumerate(zip(text, changed, strict=True)):
            if c:
                group[k] = offset + lookup.setdefault(t, len(lookup))
        for k, t in enumerate(text):  # unchanged samples with the same string share the new id
            if not changed[k] and t in lookup:
                group[k] = offset + lookup[t]
    return Batch(
        image=image,
        text=text,
        action=action,
        action_mask=batch.action_mask,
        text_group=group,
        episode=batch.episode,
        frame=batch.frame,
        prev_action=prev,
        state=batch.state,
    )
