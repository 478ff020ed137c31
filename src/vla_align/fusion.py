"""Fusion of vision and language for the policy (chapter 5.2 / 5.5), one registered module each.

Every fusion maps the encoders' outputs for one observation to a (B, H) state vector:

* ``late``    concatenate the pooled image and text features, then an MLP (late fusion);
* ``gated``   the chapter's gate g = σ(W[z_V; z_L]), z̃ = g ⊙ z_V + (1 − g) ⊙ z_L;
* ``film``    FiLM-conditioned conv blocks on the image feature map (the BabyAI baseline's recipe):
              x ← x ⊙ (1 + γ(z_L)) + β(z_L), twice, then pooled;
* ``xattn``   text tokens as queries over the image patches (Attn(Q=Z_L, K=Z_V, V=Z_V)), with the
              patches' (x, y) position added; ``last_attention`` keeps the weights for diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .registry import Registry

FusionName = Literal["late", "gated", "film", "xattn"]
FUSIONS: Registry[type[nn.Module]] = Registry("fusion")


@dataclass
class FusionInputs:
    patches: Tensor  # (B, C, h, w) image feature map
    image: Tensor  # (B, F_V) pooled image feature
    text: Tensor  # (B, F_L) sentence feature
    tokens: Tensor | None = None  # (B, L, F_T) text token features (xattn only)
    token_mask: Tensor | None = None  # (B, L) bool, True for real tokens


@dataclass(frozen=True)
class FusionDims:
    patch_channels: int
    image_dim: int
    text_dim: int
    token_dim: int
    hidden: int
    film_channels: int = 64


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


@FUSIONS.register("late")
class LateFusion(nn.Module):
    needs_tokens = False

    def __init__(self, dims: FusionDims) -> None:
        super().__init__()
        self.net = mlp(dims.image_dim + dims.text_dim, dims.hidden)

    def forward(self, x: FusionInputs) -> Tensor:
        return self.net(torch.cat([x.image, x.text], dim=-1))  # (B, H)


@FUSIONS.register("gated")
class GatedFusion(nn.Module):
    needs_tokens = False

    def __init__(self, dims: FusionDims) -> None:
        super().__init__()
        self.to_v = nn.Sequential(nn.LayerNorm(dims.image_dim), nn.Linear(dims.image_dim, dims.hidden))
        self.to_l = nn.Sequential(nn.LayerNorm(dims.text_dim), nn.Linear(dims.text_dim, dims.hidden))
        self.gate = nn.Linear(2 * dims.hidden, dims.hidden)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(dims.hidden, dims.hidden))
        self.last_gate: Tensor | None = None

    def forward(self, x: FusionInputs) -> Tensor:
        zv, zl = self.to_v(x.image), self.to_l(x.text)  # (B, H) each
        g = torch.sigmoid(self.gate(torch.cat([zv, zl], dim=-1)))  # (B, H)
        self.last_gate = g.detach()
        return self.out(g * zv + (1 - g) * zl)  # (B, H)


class FiLMBlock(nn.Module):
    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)
        self.film = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:  # (B, C, h, w), (B, E)
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return x + torch.relu(self.norm(self.conv(x)) * (1 + gamma) + beta)


@FUSIONS.register("film")
class FiLMFusion(nn.Module):
    needs_tokens = False

    def __init__(self, dims: FusionDims) -> None:
        super().__init__()
        c = dims.film_channels
        self.cond = nn.Sequential(nn.LayerNorm(dims.text_dim), nn.Linear(dims.text_dim, dims.hidden), nn.GELU())
        # 1x1 conv to c channels: the FiLM blocks' cost scales with c^2
        self.reduce = nn.Conv2d(dims.patch_channels, c, 1) if c != dims.patch_channels else nn.Identity()
        self.blocks = nn.ModuleList([FiLMBlock(c, dims.hidden), FiLMBlock(c, dims.hidden)])
        self.out = nn.Sequential(
            nn.Linear(2 * c + dims.hidden, dims.hidden), nn.GELU(), nn.Linear(dims.hidden, dims.hidden)
        )

    def forward(self, x: FusionInputs) -> Tensor:
        cond = self.cond(x.text)  # (B, H)
        h = self.reduce(x.patches)  # (B, c, h, w)
        for block in self.blocks:
            h = block(h, cond)  # (B, C, h, w)
        pooled = torch.cat([h.amax(dim=(2, 3)), h.mean(dim=(2, 3))], dim=-1)  # (B, 2C)
        return self.out(torch.cat([pooled, cond], dim=-1))  # (B, H)


@FUSIONS.register("xattn")
class CrossAttentionFusion(nn.Module):
    needs_tokens = True

    def __init__(self, dims: FusionDims, heads: int = 4) -> None:
        super().__init__()
        h = dims.hidden
        self.q = nn.Sequential(nn.LayerNorm(dims.token_dim), nn.Linear(dims.token_dim, h))
        self.kv = nn.Sequential(nn.LayerNorm(dims.patch_channels), nn.Linear(dims.patch_channels, h))
        self.position = nn.Linear(2, h)  # (x, y) in [-1, 1] -> H: works for any feature-map size
        self.attn = nn.MultiheadAttention(h, heads, batch_first=True)
        self.out = mlp(2 * h + dims.text_dim, h)
        self.last_attention: Tensor | None = None  # (B, L, h*w), averaged over heads

    def forward(self, x: FusionInputs) -> Tensor:
        if x.tokens is None or x.token_mask is None:
            raise ValueError("xattn fusion needs text tokens")
        _b, _c, hh, ww = x.patches.shape
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, hh, device=x.patches.device),
            torch.linspace(-1, 1, ww, device=x.patches.device),
            indexing="ij",
        )
        pos = self.position(torch.stack([xs, ys], dim=-1).reshape(hh * ww, 2))  # (h*w, H)
        kv = self.kv(x.patches.flatten(2).transpose(1, 2)) + pos  # (B, h*w, H)
        q = self.q(x.tokens)  # (B, L, H)
        attended, weights = self.attn(q, kv, kv, need_weights=True)  # (B, L, H), (B, L, h*w)
        self.last_attention = weights.detach()
        m = x.token_mask.to(attended.dtype).unsqueeze(-1)  # (B, L, 1)
        pooled = (attended * m).sum(1) / m.sum(1).clamp(min=1)  # (B, H) mean over real tokens
        peak = (attended - (1 - m) * 1e4).amax(1)  # (B, H) max over real tokens
        return self.out(torch.cat([pooled, peak, x.text], dim=-1))  # (B, H)
