"""info_nce against the loop-by-loop reference (value and gradients), the CLIP form, and gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.reference import info_nce_reference

from vla_align.losses.contrastive import group_positives, info_nce

B, D = 6, 4
GROUPS = torch.tensor([0, 1, 0, 2, 1, 0])  # duplicates: rows 0/2/5 and 1/4 share an instruction


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_a = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    z_b = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1).requires_grad_()
    scale = torch.tensor(2.7, dtype=torch.float64, requires_grad=True)
    return z_a, z_b, scale


@pytest.mark.parametrize("mask", ["none", "groups"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_value_and_gradients(mask: str, seed: int) -> None:
    z_a, z_b, scale = _inputs(seed)
    positives = None if mask == "none" else group_positives(GROUPS)
    loss = info_nce(z_a, z_b, scale, positives)
    ref = info_nce_reference(z_a, z_b, scale, positives)
    assert loss.dtype == ref.dtype == torch.float64
    assert abs(loss.item() - ref.item()) < 1e-10
    grads = torch.autograd.grad(loss, (z_a, z_b, scale))
    ref_grads = torch.autograd.grad(ref, (z_a, z_b, scale))
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, rtol=0, atol=1e-10)


def test_group_mask_differs_from_identity() -> None:
    # Sanity: the duplicate-aware targets really change the loss (otherwise the test above is vacuous).
    z_a, z_b, scale = _inputs()
    assert abs(info_nce(z_a, z_b, scale, group_positives(GROUPS)).item() - info_nce(z_a, z_b, scale).item()) > 1e-3


def test_identity_positives_is_clip_cross_entropy() -> None:
    z_a, z_b, scale = _inputs()
    logits = scale * z_a @ z_b.T
    labels = torch.arange(B)
    clip = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    eye = torch.eye(B, dtype=torch.bool)
    assert abs(info_nce(z_a, z_b, scale, eye).item() - clip.item()) < 1e-12
    assert abs(info_nce(z_a, z_b, scale, None).item() - clip.item()) < 1e-12
    assert torch.equal(group_positives(torch.arange(B)), eye)


@pytest.mark.parametrize("mask", ["none", "groups"])
def test_gradcheck(mask: str) -> None:
    z_a, z_b, scale = _inputs()
    positives = None if mask == "none" else group_positives(GROUPS)
    assert torch.autograd.gradcheck(lambda a, b, t: info_nce(a, b, t, positives), (z_a, z_b, scale))
