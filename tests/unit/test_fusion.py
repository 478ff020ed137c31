"""The chapter 5.5 expert fusions: product of Gaussian experts and the gated mixture of experts."""

from __future__ import annotations

import pytest
import torch
from tests.unit.test_model import SPECS, make_batch

from vla_align.fusion import (
    FUSIONS,
    FusionDims,
    FusionInputs,
    MixtureOfExpertsFusion,
    ProductOfExpertsFusion,
    product_of_gaussians,
)
from vla_align.model import blank_modalities
from vla_align.policy import PolicyConfig
from vla_align.presets import get_preset

DIMS = FusionDims(patch_channels=8, image_dim=12, text_dim=10, token_dim=10, hidden=16)


def inputs(b: int = 5, seed: int = 0) -> FusionInputs:
    g = torch.Generator().manual_seed(seed)
    return FusionInputs(
        patches=torch.randn(b, 8, 3, 3, generator=g),
        image=torch.randn(b, DIMS.image_dim, generator=g),
        text=torch.randn(b, DIMS.text_dim, generator=g),
    )


def test_product_of_two_equal_precision_experts_is_their_mean() -> None:
    g = torch.Generator().manual_seed(0)
    mu1, mu2, lv = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    mu, logvar = product_of_gaussians([mu1, mu2], [lv, lv], prior=False)
    torch.testing.assert_close(mu, (mu1 + mu2) / 2)
    torch.testing.assert_close(logvar, lv - torch.log(torch.tensor(2.0)))  # precision doubles
    # with the N(0, I) prior expert: (T μ1 + T μ2) / (1 + 2T)
    t = torch.exp(-lv)
    mu_p, logvar_p = product_of_gaussians([mu1, mu2], [lv, lv])
    torch.testing.assert_close(mu_p, t * (mu1 + mu2) / (1 + 2 * t))
    torch.testing.assert_close(logvar_p, -torch.log(1 + 2 * t))


def test_an_expert_without_precision_leaves_the_other() -> None:
    g = torch.Generator().manual_seed(1)
    mu1, mu2, lv = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g), torch.zeros(3, 5)
    mu, _ = product_of_gaussians([mu1, mu2], [lv, torch.full_like(lv, 30.0)], prior=False)  # σ² = e^30
    torch.testing.assert_close(mu, mu1, atol=1e-6, rtol=1e-6)
    missing = [torch.ones(3, dtype=torch.bool), torch.tensor([True, False, True])]
    mu, logvar = product_of_gaussians([mu1, mu2], [lv, lv], missing, prior=False)
    torch.testing.assert_close(mu[1], mu1[1])
    torch.testing.assert_close(logvar[1], lv[1])
    torch.testing.assert_close(mu[0], (mu1[0] + mu2[0]) / 2)


def test_poe_ignores_a_blanked_modality() -> None:
    torch.manual_seed(0)
    fusion = ProductOfExpertsFusion(DIMS)
    x = blank_modalities(inputs(), torch.tensor([0, 1, 2, 1, 0]))  # samples 1, 3: no image; 2: no text
    before = fusion(x)
    with torch.no_grad():  # the image expert's output changes, but a missing expert has precision 0
        fusion.image_expert.mu.bias.add_(3.0)
        fusion.image_expert.logvar.bias.add_(-1.0)
    after = fusion(x)
    torch.testing.assert_close(after[[1, 3]], before[[1, 3]])
    assert not torch.allclose(after[[0, 2, 4]], before[[0, 2, 4]])
    assert fusion.last_precision is not None and fusion.last_precision.shape == (5, 2)
    assert float(fusion.last_precision[1, 0]) == 0.0 and float(fusion.last_precision[2, 1]) == 0.0


def test_moe_gate_rows_sum_to_one_and_mix_the_experts() -> None:
    torch.manual_seed(0)
    fusion = MixtureOfExpertsFusion(DIMS)
    x = inputs()
    out = fusion(x)
    assert out.shape == (5, DIMS.hidden)
    assert fusion.last_gate is not None and fusion.last_gate.shape == (5, 3)
    torch.testing.assert_close(fusion.last_gate.sum(-1), torch.ones(5))
    assert (fusion.last_gate > 0).all()
    # z = Σ_k α_k z^(k)
    e = fusion.experts
    z = torch.stack([e["image"](x.image), e["text"](x.text), e["joint"](torch.cat([x.image, x.text], -1))], 1)
    torch.testing.assert_close(out, fusion.out((fusion.last_gate.unsqueeze(-1) * z).sum(1)))


@pytest.mark.parametrize("fusion", ["poe", "moe"])
def test_expert_fusions_train_a_continuous_policy(fusion: str) -> None:
    assert fusion in FUSIONS
    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True, fusion=fusion, hidden=32, chunk=2)  # type: ignore[arg-type]
    model = cfg.model.build(SPECS["continuous"])
    batch = make_batch(SPECS["continuous"])
    out = model.forward_train(batch, (), policy=True)
    assert out.cond is not None and out.cond.shape[0] == 6
    model.policy_loss(out, batch).backward()
    assert model.policy is not None
    for name, p in model.policy.fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
