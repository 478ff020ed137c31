"""Where the model looks (chapter 5.9): attention rollout, text-to-patch cross-attention maps,
Grad-CAM on the image feature map, and a heat-map overlay for frames.

* Rollout (Abnar & Zuidema, 2020), for self-attention maps A_1 … A_n (rows sum to 1):
      Â_l = norm_rows(A_l + I)   (residual),      R = Â_n · … · Â_1,
  so R[i, j] is how much output token i draws on input token j through all layers; rows sum to 1.
* Text → patch map for the single cross-attention layer of the ``xattn`` fusion: the mean over the
  real text tokens of their attention over the h·w patches (each row already sums to 1).
* Grad-CAM (Selvaraju et al., 2017) for a score y and a feature map A (B, C, h, w):
      w_c = mean_{u,v} ∂y/∂A_c[u, v],     cam = ReLU(Σ_c w_c A_c),
  upsampled bilinearly to the frame and divided by its maximum. The channel weights are spatial
  means, so Grad-CAM localises *which features* drive the score, drawn where those features fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from ..model import TriModalModel

__all__ = ["attention_rollout", "grad_cam", "overlay", "policy_grad_cam", "text_to_patch_map"]


def attention_rollout(attentions: Sequence[Tensor], residual: bool = True) -> Tensor:
    """Rollout of self-attention maps, first layer first, each (B, T, T) or (B, heads, T, T) (heads
    averaged) -> (B, T, T), rows summing to 1. ``residual`` adds the identity before re-normalising."""
    if not attentions:
        raise ValueError("attention_rollout needs at least one attention map")
    result: Tensor | None = None
    for i, attn in enumerate(attentions):
        a = attn.detach()
        if a.ndim == 4:
            a = a.mean(1)  # (B, T, T) mean over heads
        if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"attention map {i} must be (B, T, T) or (B, heads, T, T), got {tuple(attn.shape)}")
        if residual:
            a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)  # rows sum to 1
        if result is not None and result.shape != a.shape:
            raise ValueError(f"attention map {i} has shape {tuple(a.shape)}, expected {tuple(result.shape)}")
        result = a if result is None else a @ result  # (B, T, T): later layers act on the left
    assert result is not None
    return result


def text_to_patch_map(
    attn: Tensor,  # (B, L, P) cross-attention of text tokens over P = h*w patches
    token_mask: Tensor | None,  # (B, L) bool, True for real tokens; None = all
    grid: tuple[int, int],  # (h, w)
) -> Tensor:
    """(B, h, w) mean attention of the real text tokens over the patch grid; each map sums to 1
    (a sample without real tokens averages all of them)."""
    h, w = grid
    if attn.ndim != 3 or attn.shape[-1] != h * w:
        raise ValueError(f"attn must be (B, L, {h}*{w}), got {tuple(attn.shape)}")
    a = attn.detach().float()
    m = torch.ones(a.shape[:2], device=a.device) if token_mask is None else token_mask.to(a.device).float()  # (B, L)
    m = torch.where(m.sum(1, keepdim=True) > 0, m, torch.ones_like(m))  # no real token: use all
    pooled = (a * m[:, :, None]).sum(1) / m.sum(1, keepdim=True)  # (B, P)
    pooled = pooled / pooled.sum(1, keepdim=True).clamp(min=torch.finfo(pooled.dtype).tiny)  # exact sum 1
    return pooled.reshape(-1, h, w)


def grad_cam(
    feature_map: Tensor,  # (B, C, h, w), part of the graph that computed ``score``
    score: Tensor,  # (B,) one score per sample, or a scalar
    image_size: tuple[int, int],  # (H, W)
    retain_graph: bool = False,  # keep the graph for another score from the same forward pass
) -> Tensor:
    """(B, H, W) Grad-CAM in [0, 1] (each map divided by its maximum; an all-zero map stays zero).

    The gradient is taken of Σ_b score_b, which is the per-sample gradient as long as samples do not
    interact (true for our GroupNorm encoders and the policy). No parameter ``.grad`` is touched.
    """
    if feature_map.ndim != 4:
        raise ValueError(f"feature_map must be (B, C, h, w), got {tuple(feature_map.shape)}")
    if not feature_map.requires_grad:
        raise ValueError("feature_map does not require grad; call requires_grad_() on it before computing score")
    if not score.requires_grad:
        raise ValueError("score does not depend on anything that requires grad; compute it under enable_grad")
    (grads,) = torch.autograd.grad(score.sum(), feature_map, retain_graph=retain_graph, allow_unused=True)
    if grads is None:  # the score does not depend on the feature map
        grads = torch.zeros_like(feature_map)
    weights = grads.detach().mean(dim=(2, 3))  # (B, C)
    cam = torch.relu((weights[:, :, None, None] * feature_map.detach()).sum(1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam.float(), size=tuple(image_size), mode="bilinear", align_corners=False).clamp(min=0)
    cam = cam[:, 0]  # (B, H, W)
    peak = cam.flatten(1).amax(1)  # (B,)
    return torch.where(peak[:, None, None] > 0, cam / peak.clamp(min=1e-30)[:, None, None], torch.zeros_like(cam))


def policy_grad_cam(
    model: TriModalModel,
    image: Tensor,  # (B, H, W, 3) or (H, W, 3) uint8
    texts: list[str],  # B instructions
    prev_action: Tensor,  # (B, h) previous action ids, -1 = none
    action: Tensor | int | None = None,  # (B,) or one id; None = the policy's argmax
) -> Tensor:
    """(B, H, W) Grad-CAM of the policy's logit for ``action`` at chunk step 0 over the image encoder's
    feature map. The model is run in eval mode (its mode is restored) and its parameters get no grad."""
    if image.ndim == 3:
        image = image[None]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            patches = model.image_encoder.patches(image)  # (B, C, h, w)
        with torch.enable_grad():
            patches = patches.detach().requires_grad_(True)  # the leaf Grad-CAM differentiates against
            inputs = model._policy_inputs(
                patches, model.image_encoder.pool(patches), model.text_encoder(texts), texts, False
            )
            logits = model.policy_logits(inputs, prev_action)[:, 0]  # (B, A) chunk step 0
            if action is None:
                chosen = logits.detach().argmax(-1)  # (B,)
            else:
                chosen = torch.as_tensor(action, dtype=torch.long, device=logits.device).expand(len(logits))
            score = logits.gather(1, chosen[:, None])[:, 0]  # (B,)
            return grad_cam(patches, score, (image.shape[1], image.shape[2]))
    finally:
        model.train(was_training)


def _colour(heat: Tensor) -> Tensor:
    """(H, W) in [0, 1] -> (H, W, 3) float in [0, 255]: red at 0 to yellow at 1."""
    return torch.stack([torch.full_like(heat, 255.0), 255.0 * heat, torch.zeros_like(heat)], dim=-1)


@overload
def overlay(frame: Tensor, heat: Tensor | np.ndarray, alpha: float = 0.5) -> Tensor: ...
@overload
def overlay(frame: np.ndarray, heat: Tensor | np.ndarray, alpha: float = 0.5) -> np.ndarray: ...
def overlay(frame: Tensor | np.ndarray, heat: Tensor | np.ndarray, alpha: float = 0.5) -> Tensor | np.ndarray:
    """Blend a red-to-yellow heat map onto a (H, W, 3) uint8 frame -> (H, W, 3) uint8 of the same type.

    out = (1 − α·heat) · frame + α·heat · colour(heat): cold pixels keep the frame, hot ones turn
    yellow; ``heat`` (H, W) is clipped to [0, 1].
    """
    f = torch.as_tensor(frame)
    hm = torch.as_tensor(heat).detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    if f.ndim != 3 or f.shape[-1] != 3 or hm.shape != f.shape[:2]:
        raise ValueError(f"need frame (H, W, 3) and heat (H, W), got {tuple(f.shape)} and {tuple(hm.shape)}")
    weight = (float(alpha) * hm)[:, :, None]  # (H, W, 1)
    out = (1.0 - weight) * f.to("cpu", torch.float32) + weight * _colour(hm)  # (H, W, 3)
    result = out.round().clamp(0, 255).to(torch.uint8)
    return result.numpy() if isinstance(frame, np.ndarray) else result
