"""Attention rollout, text-to-patch maps, Grad-CAM (synthetic and on the policy) and the overlay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.unit.test_model import SPECS, make_batch
from torch import nn

from vla_align.diagnostics import attention_rollout, grad_cam, overlay, policy_grad_cam, text_to_patch_map
from vla_align.model import TriModalModel
from vla_align.policy import PolicyConfig
from vla_align.presets import get_preset


def _softmax_attention(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).mul(3).softmax(-1)


def policy_model(fusion: str) -> TriModalModel:
    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True, fusion=fusion, hidden=32)  # type: ignore[arg-type]
    return cfg.model.build(SPECS["discrete"])


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("heads", [None, 4])
@pytest.mark.parametrize("residual", [True, False])
def test_rollout_rows_sum_to_one(layers: int, heads: int | None, residual: bool) -> None:
    shape = (2, 5, 5) if heads is None else (2, heads, 5, 5)
    maps = [_softmax_attention(i, shape) for i in range(layers)]
    r = attention_rollout(maps, residual=residual)
    assert r.shape == (2, 5, 5)
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 5))
    assert bool((r >= 0).all())


def test_rollout_is_the_product_of_residual_maps() -> None:
    a1, a2 = _softmax_attention(0, (3, 2, 4, 4)), _softmax_attention(1, (3, 4, 4))
    eye = torch.eye(4)
    expected = (0.5 * (a2 + eye)) @ (0.5 * (a1.mean(1) + eye))
    torch.testing.assert_close(attention_rollout([a1, a2]), expected)
    torch.testing.assert_close(attention_rollout([a1], residual=False), a1.mean(1))
    torch.testing.assert_close(attention_rollout([eye.expand(2, 4, 4)] * 3), eye.expand(2, 4, 4))
    with pytest.raises(ValueError):
        attention_rollout([])
    with pytest.raises(ValueError):
        attention_rollout([a2, _softmax_attention(2, (3, 5, 5))])


def test_text_to_patch_map_sums_to_one_and_ignores_padding() -> None:
    attn = _softmax_attention(0, (3, 6, 12))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    m = text_to_patch_map(attn, mask, (3, 4))
    assert m.shape == (3, 3, 4)
    torch.testing.assert_close(m.sum((1, 2)), torch.ones(3))
    torch.testing.assert_close(m[0].flatten(), attn[0, :3].mean(0))
    changed = attn.clone()
    changed[0, 3:] = _softmax_attention(5, (3, 12))  # padded tokens only
    torch.testing.assert_close(text_to_patch_map(changed, mask, (3, 4))[0], m[0])
    torch.testing.assert_close(text_to_patch_map(attn, None, (3, 4))[1], m[1])
    with pytest.raises(ValueError):
        text_to_patch_map(attn, mask, (4, 4))


def test_text_to_patch_map_on_the_xattn_fusion() -> None:
    model = policy_model("xattn").eval()
    batch = make_batch(SPECS["discrete"], b=3)
    patches = model.image_encoder.patches(batch.image)
    model.act_logits(batch.image, batch.text, torch.full((3, 1), -1))
    assert model.policy is not None
    attn = model.policy.fusion.last_attention  # (B, L, h*w)
    assert isinstance(attn, torch.Tensor)
    _tokens, mask = model.text_encoder.tokens(batch.text)
    m = text_to_patch_map(attn, mask, (patches.shape[2], patches.shape[3]))
    assert m.shape == (3, patches.shape[2], patches.shape[3])
    torch.testing.assert_close(m.sum((1, 2)), torch.ones(3))


def test_grad_cam_shape_range_and_non_negative() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1))
    image = torch.rand(4, 3, 32, 24)
    fmap = net(image)  # (4, 8, 8, 6)
    score = fmap.mean((1, 2, 3)) * torch.tensor([1.0, -1.0, 2.0, 0.5])
    cam = grad_cam(fmap, score, (32, 24), retain_graph=True)
    assert cam.shape == (4, 32, 24) and not cam.requires_grad
    assert bool((cam >= 0).all()) and bool((cam <= 1).all())
    peak = cam.flatten(1).amax(1)
    assert bool(((peak == 1) | (peak == 0)).all())
    # a scalar score gives the per-sample maps of the summed score
    torch.testing.assert_close(grad_cam(fmap, score.sum(), (32, 24), retain_graph=True), cam)
    # a score that does not depend on the feature map: all-zero maps
    leaf = torch.zeros(1, requires_grad=True)
    torch.testing.assert_close(grad_cam(fmap, (leaf * 2).sum(), (32, 24)), torch.zeros(4, 32, 24))
    with pytest.raises(ValueError):
        grad_cam(fmap.detach(), score, (32, 24))


def test_grad_cam_finds_the_region_that_matters() -> None:
    # frame 32x32: a red square in the top-left quadrant, a blue one in the bottom-right
    image = torch.zeros(2, 3, 32, 32)
    image[:, 0, 4:12, 4:12] = 1.0
    image[:, 2, 20:28, 20:28] = 1.0
    # feature extractor: stride-4 patchify conv, channel 0 = "red", channel 1 = "blue"
    conv = nn.Conv2d(3, 2, 4, stride=4, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0], conv.weight[0, 2] = 1.0, -1.0
        conv.weight[1, 2], conv.weight[1, 0] = 1.0, -1.0
    fmap = torch.relu(conv(image))  # (2, 2, 8, 8)
    score = fmap[:, 0, :4, :4].sum((1, 2))  # depends only on the red feature in the top-left quadrant
    cam = grad_cam(fmap, score, (32, 32))
    assert cam.shape == (2, 32, 32)
    in_region = cam[:, :16, :16].sum((1, 2)) / cam.sum((1, 2))
    assert bool((in_region > 0.99).all()), in_region
    assert float(cam[:, 16:, 16:].sum()) == 0.0  # the blue distractor gets nothing


def test_policy_grad_cam_on_the_tiny_model() -> None:
    model = policy_model("film")
    model.train()
    batch = make_batch(SPECS["discrete"], b=3)
    prev = torch.tensor([[-1], [0], [3]])
    cam = policy_grad_cam(model, batch.image, batch.text, prev)
    assert cam.shape == (3, 28, 28)
    assert bool((cam >= 0).all()) and bool((cam <= 1).all())
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # no parameter gradients left behind
    # an explicit action and a single frame
    one = policy_grad_cam(model, batch.image[0], batch.text[:1], prev[:1], action=2)
    assert one.shape == (1, 28, 28) and bool((one >= 0).all())
    torch.testing.assert_close(one[0], policy_grad_cam(model, batch.image, batch.text, prev, action=2)[0])
    assert bool((cam.flatten(1).amax(1) == 1).all())  # random weights still give non-trivial maps


def test_policy_grad_cam_matches_a_retain_grad_backward() -> None:
    model = policy_model("film").eval()
    batch = make_batch(SPECS["discrete"], b=2)
    prev = torch.tensor([[-1], [4]])
    cam = policy_grad_cam(model, batch.image, batch.text, prev, action=torch.tensor([1, 5]))
    # the textbook route: retain_grad on the feature map, backward, Grad-CAM by hand
    patches = model.image_encoder.patches(batch.image)
    patches.retain_grad()
    inputs = model._policy_inputs(
        patches, model.image_encoder.pool(patches), model.text_encoder(batch.text), batch.text, False
    )
    logits = model.policy_logits(inputs, prev)[:, 0]
    (logits[0, 1] + logits[1, 5]).backward()
    assert patches.grad is not None
    weights = patches.grad.mean((2, 3))  # (B, C)
    raw = torch.relu((weights[:, :, None, None] * patches.detach()).sum(1, keepdim=True))
    up = nn.functional.interpolate(raw, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(cam, up / up.flatten(1).amax(1)[:, None, None])


def test_overlay() -> None:
    g = torch.Generator().manual_seed(0)
    frame = torch.randint(0, 256, (10, 12, 3), dtype=torch.uint8, generator=g)
    heat = torch.rand(10, 12, generator=g)
    out = overlay(frame, heat)
    assert out.shape == (10, 12, 3) and out.dtype == torch.uint8
    out_np = overlay(frame.numpy(), heat.numpy(), alpha=0.5)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.uint8 and out_np.shape == (10, 12, 3)
    np.testing.assert_array_equal(out_np, out.numpy())
    torch.testing.assert_close(overlay(frame, torch.zeros(10, 12)), frame)  # cold pixels keep the frame
    hot = overlay(frame, torch.ones(10, 12), alpha=1.0)
    assert bool((hot == torch.tensor([255, 255, 0], dtype=torch.uint8)).all())  # fully hot: yellow
    with pytest.raises(ValueError):
        overlay(frame, heat[:5])
