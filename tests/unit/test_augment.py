"""The mirror augmentation keeps image, instruction and actions consistent."""

from __future__ import annotations

import pytest
import torch

from vla_align.data.augment import mirror, mirror_permutation, mirror_text
from vla_align.data.episode import ActionSpec
from vla_align.errors import ConfigError
from vla_align.modalities import Batch

SPEC = ActionSpec(
    kind="discrete", num_actions=7, names=["left", "right", "forward", "pickup", "drop", "toggle", "done"]
)


def batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        image=torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8, generator=g),
        text=["go to the red ball on your left", "go to the red ball on your left", "open the door", "go right"],
        action=torch.tensor([[0, 1, 2], [1, 1, 0], [2, 3, 4], [0, 0, 0]]),
        action_mask=torch.ones(4, 3, dtype=torch.bool),
        text_group=torch.tensor([0, 0, 1, 2]),
        prev_action=torch.tensor([-1, 0, 1, 5]),
    )


def test_mirror_swaps_left_and_right_everywhere() -> None:
    b = batch()
    which = torch.tensor([True, False, True, False])
    m = mirror(b, which, mirror_permutation(SPEC))
    assert torch.equal(m.image[0], b.image[0].flip(1)) and torch.equal(m.image[1], b.image[1])
    assert m.action[0].tolist() == [1, 0, 2] and m.action[2].tolist() == [2, 3, 4]
    assert m.prev_action.tolist() == [-1, 0, 0, 5]  # sample 0 had none; sample 2 "right" -> "left"
    assert m.text[0] == "go to the red ball on your right" and m.text[1] == b.text[1]
    # different strings never share a group; equal strings always do
    for i in range(4):
        for j in range(4):
            assert (m.text[i] == m.text[j]) == bool(m.text_group[i] == m.text_group[j]), (i, j)


def test_mirror_twice_is_the_identity() -> None:
    b = batch()
    which = torch.ones(4, dtype=torch.bool)
    perm = mirror_permutation(SPEC)
    twice = mirror(mirror(b, which, perm), which, perm)
    assert torch.equal(twice.image, b.image) and torch.equal(twice.action, b.action)
    assert twice.text == b.text and torch.equal(twice.prev_action, b.prev_action)


def test_mirror_text_only_touches_whole_words() -> None:
    assert mirror_text("turn left, then right; leftover rightmost") == "turn right, then left; leftover rightmost"


def test_mirror_needs_named_left_and_right_actions() -> None:
    with pytest.raises(ConfigError, match="left"):
        mirror_permutation(ActionSpec(kind="discrete", num_actions=3, names=["a", "b", "c"]))
    with pytest.raises(ConfigError, match="discrete"):
        mirror_permutation(ActionSpec(kind="continuous", dim=2))
