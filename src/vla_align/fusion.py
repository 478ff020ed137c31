"""Fusion of vision and language for the policy (chapter 5.2 / 5.5), one registered module each.

Every fusion maps the encoders' outputs for one observation to a (B, H) state vector:

* ``late``    concatenate the pooled image and text features, then an MLP (late fusion);
* ``gated``   the chapter's gate g = σ(W[z_V; z_L]), z̃ = g ⊙ z_V + (1 − g) ⊙ z_L;
* ``film``    FiLM-conditioned conv blocks on the image feature map (the BabyAI baseline's recipe):
              x ← x ⊙ (1 + γ(z_L)) + β(z_L), twice, then pooled;
* ``xattn``   text tokens as queries over the image patches (Attn(Q=Z_L, K=Z_V, V=Z_V)), with the
              patches' (x, y) position added; ``last_attention`` keeps the weights for diagnostics;
* ``poe``     product of Gaussian experts (chapter 5.5, PoE): image and text each predict (μ_m, log σ²_m)
              in the hidden space; with a standard-normal prior expert and precisions T_m = 1/σ²_m,
              T = 1 + Σ_m T_m,  μ = Σ_m T_m μ_m / T,  log σ² = −log T,  out = MLP([μ; log σ²]);
              a blanked input (an all-zero row, as modality dropout makes) has precision 0;
* ``moe``     mixture of experts (chapter 5.5, MoE): z = Σ_k α_k z^(k), Σ α_k = 1, over an image-only,
              a text-only and a joint expert, α = softmax(W[image; text]); ``last_gate`` keeps α.

``FUSIONS`` maps each name to its config class (a :class:`FusionConfig`; ``film`` has ``channels``,
``xattn`` has ``heads``), whose ``build(dims)`` makes the module: a variant's own fields are its
module's keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from .config import VariantConfig, check_int, check_name, own_fields, resolve
from .errors import ConfigError
from .registry import Registry

FusionName = Literal["late", "gated", "film", "xattn", "poe", "moe"]  # the names in FUSIONS (checked by a test)
WHERE = "model.policy.fusion"
FUSIONS: Registry[type[FusionConfig]] = Registry("fusion")


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


class FusionModule(nn.Module):
    """Base of the fusions: (encoder outputs of one observation) -> (B, H) state."""

    needs_tokens: ClassVar[bool] = False  # reads FusionInputs.tokens (the text encoder's per-token features)

    def forward(self, x: FusionInputs) -> Tensor:
        raise NotImplementedError


@dataclass
class FusionConfig(VariantConfig):
    """``model.policy.fusion``: ``name`` picks the fusion (and its config class) in ``FUSIONS``."""

    registry: ClassVar[Registry[Any]] = FUSIONS
    module: ClassVar[type[FusionModule]]  # the fusion this config builds (set by each variant)

    name: FusionName = "film"

    def __post_init__(self) -> None:
        check_name(self, WHERE)

    def build(self, dims: FusionDims) -> FusionModule:
        """The fusion ``name`` for encoders of these sizes (the variant's fields as keyword arguments)."""
        cfg = resolve(self)
        return cfg.module(dims, **own_fields(cfg))


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class LateFusion(FusionModule):
    def __init__(self, dims: FusionDims) -> None:
        super().__init__()
        self.net = mlp(dims.image_dim + dims.text_dim, dims.hidden)

    def forward(self, x: FusionInputs) -> Tensor:
        out: Tensor = self.net(torch.cat([x.image, x.text], dim=-1))  # (B, H)
        return out


@FUSIONS.register("late")
@dataclass
class LateFusionConfig(FusionConfig):
    name: FusionName = "late"
    module = LateFusion


class GatedFusion(FusionModule):
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
        out: Tensor = self.out(g * zv + (1 - g) * zl)  # (B, H)
        return out


@FUSIONS.register("gated")
@dataclass
class GatedFusionConfig(FusionConfig):
    name: FusionName = "gated"
    module = GatedFusion


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


class FiLMFusion(FusionModule):
    def __init__(self, dims: FusionDims, channels: int = 64) -> None:
        super().__init__()
        c = channels
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
        out: Tensor = self.out(torch.cat([pooled, cond], dim=-1))  # (B, H)
        return out


@FUSIONS.register("film")
@dataclass
class FiLMFusionConfig(FusionConfig):
    name: FusionName = "film"
    channels: int = 64  # width of the FiLM-conditioned conv blocks (their cost scales with channels²)

    module = FiLMFusion

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(f"{WHERE}.channels", self.channels, 8, why="width of the FiLM-conditioned conv blocks")


class CrossAttentionFusion(FusionModule):
    needs_tokens = True

    def __init__(self, dims: FusionDims, heads: int = 4) -> None:
        super().__init__()
        h = dims.hidden
        if h % heads:
            raise ConfigError(f"{WHERE}.heads ({heads}) must divide model.policy.hidden ({h})")
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
        out: Tensor = self.out(torch.cat([pooled, peak, x.text], dim=-1))  # (B, H)
        return out


@FUSIONS.register("xattn")
@dataclass
class CrossAttentionFusionConfig(FusionConfig):
    name: FusionName = "xattn"
    heads: int = 4  # attention heads (must divide model.policy.hidden)

    module = CrossAttentionFusion

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(f"{WHERE}.heads", self.heads, 1, 64, why="attention heads; they must divide model.policy.hidden")


def product_of_gaussians(
    mus: list[Tensor], logvars: list[Tensor], present: list[Tensor] | None = None, prior: bool = True
) -> tuple[Tensor, Tensor]:
    """Precision-weighted fusion of diagonal Gaussian experts, each (B, H) (μ_m, log σ²_m):

        T_m = present_m · exp(−log σ²_m),  T = [1 if prior] + Σ_m T_m,
        μ = Σ_m T_m μ_m / T,  log σ² = −log T     (the prior expert is N(0, I))

    ``present`` (B,) per expert (1 = seen, 0 = missing: precision 0). Returns (μ, log σ²), (B, H) each.
    """
    precisions = [torch.exp(-lv.float()) for lv in logvars]  # (B, H) each
    if present is not None:
        precisions = [t * p.to(t.dtype)[:, None] for t, p in zip(precisions, present, strict=True)]
    total = torch.stack(precisions).sum(0)  # (B, H)
    if prior:
        total = total + 1.0
    mean = sum((t * mu.float() for t, mu in zip(precisions, mus, strict=True)), start=torch.zeros_like(total))
    return mean / total, -torch.log(total)


class GaussianExpert(nn.Module):
    """(B, F) -> (μ, log σ²), (B, H) each; log σ² clamped to [−6, 6]."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU())
        self.mu = nn.Linear(hidden, hidden)
        self.logvar = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x)  # (B, H)
        return self.mu(h), self.logvar(h).clamp(-6.0, 6.0)


class ProductOfExpertsFusion(FusionModule):
    def __init__(self, dims: FusionDims) -> None:
        super().__init__()
        self.image_expert = GaussianExpert(dims.image_dim, dims.hidden)
        self.text_expert = GaussianExpert(dims.text_dim, dims.hidden)
        self.out = mlp(2 * dims.hidden, dims.hidden)
        self.last_precision: Tensor | None = None  # (B, 2) mean precision of the image / text expert

    def forward(self, x: FusionInputs) -> Tensor:
        (mu_v, lv_v), (mu_l, lv_l) = self.image_expert(x.image), self.text_expert(x.text)  # (B, H) each
        present = [x.image.detach().abs().amax(-1) > 0, x.text.detach().abs().amax(-1) > 0]  # (B,) each
        mu, logvar = product_of_gaussians([mu_v, mu_l], [lv_v, lv_l], present)  # (B, H) each
        with torch.no_grad():
            prec = torch.stack([torch.exp(-lv_v.float()).mean(-1), torch.exp(-lv_l.float()).mean(-1)], dim=-1)
            self.last_precision = prec * torch.stack(present, dim=-1).to(prec.dtype)
        out: Tensor = self.out(torch.cat([mu, logvar], dim=-1).to(x.image.dtype))  # (B, H)
        return out


@FUSIONS.register("poe")
@dataclass
class ProductOfExpertsFusionConfig(FusionConfig):
    name: FusionName = "poe"
    module = ProductOfExpertsFusion


class MixtureOfExpertsFusion(FusionModule):
    experts_order = ("image", "text", "joint")

    def __init__(self, dims: FusionDims) -> None:
        super().__init__()
        both = dims.image_dim + dims.text_dim
        self.experts = nn.ModuleDict(
            {
                "image": mlp(dims.image_dim, dims.hidden),
                "text": mlp(dims.text_dim, dims.hidden),
                "joint": mlp(both, dims.hidden),
            }
        )
        self.gate = nn.Sequential(nn.LayerNorm(both), nn.Linear(both, len(self.experts_order)))
        self.out = nn.Sequential(nn.GELU(), nn.Linear(dims.hidden, dims.hidden))
        self.last_gate: Tensor | None = None  # (B, 3) α over (image, text, joint)

    def forward(self, x: FusionInputs) -> Tensor:
        vl = torch.cat([x.image, x.text], dim=-1)  # (B, F_V + F_L)
        z = torch.stack(
            [self.experts["image"](x.image), self.experts["text"](x.text), self.experts["joint"](vl)], dim=1
        )  # (B, 3, H)
        alpha = torch.softmax(self.gate(vl), dim=-1)  # (B, 3)
        self.last_gate = alpha.detach()
        out: Tensor = self.out((alpha.unsqueeze(-1) * z).sum(1))  # (B, H)
        return out


@FUSIONS.register("moe")
@dataclass
class MixtureOfExpertsFusionConfig(FusionConfig):
    name: FusionName = "moe"
    module = MixtureOfExpertsFusion
