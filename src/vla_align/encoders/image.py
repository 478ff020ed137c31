"""A small conv net for 28-224 px frames. GroupNorm, not BatchNorm: in-batch statistics would let
the contrastive loss cheat through the batch (and break with batch size 1 at inference)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_int, out_of_range
from ..errors import ConfigError


@dataclass
class ImageEncoderConfig:
    channels: tuple[int, ...] = (32, 64, 128)  # conv widths, one per conv layer (two or more)
    strides: tuple[int, ...] = (4, 1, 2)  # a stride s > 2 is a patchify conv (kernel s), else a 3x3 conv
    pool: int = 4  # adaptive average pool to pool x pool (layout), 0 = none
    max_pool: bool = True  # also a global max pool over positions (what is present anywhere)
    feature_dim: int = 512  # image feature size before the projection into the shared space

    def __post_init__(self) -> None:
        if len(self.channels) < 2:
            raise out_of_range("model.image.channels", self.channels, "two or more widths", "e.g. 32 64 128")
        for width in self.channels:
            check_int("model.image.channels", width, 1, 4096, why="conv widths, e.g. 32 64 128")
        if len(self.strides) != len(self.channels):
            raise out_of_range(
                "model.image.strides", self.strides, f"{len(self.channels)} strides", "one per model.image.channels"
            )
        for stride in self.strides:
            check_int("model.image.strides", stride, 1, 32, why="conv strides; above 2 a patchify conv")
        check_int("model.image.pool", self.pool, 0, 8, why="adaptive average pool side, 0 = none")
        check_int("model.image.feature_dim", self.feature_dim, 1)
        if self.pool == 0 and not self.max_pool:
            raise ConfigError("model.image: pool is 0 and max_pool is false; enable at least one pooling")


def _groups(c: int) -> int:
    return next(g for g in (8, 4, 2, 1) if c % g == 0)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c, stride in zip(cfg.channels, cfg.strides, strict=True):
            conv = nn.Conv2d(c_in, c, stride, stride=stride) if stride > 2 else nn.Conv2d(c_in, c, 3, stride, padding=1)
            layers += [conv, nn.GroupNorm(_groups(c), c), nn.GELU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.cfg = cfg
        pooled = c_in * (cfg.pool * cfg.pool + int(cfg.max_pool))
        self.fc = nn.Linear(pooled, cfg.feature_dim)
        self.out_dim = cfg.feature_dim
        self.patch_dim = c_in

    @staticmethod
    def preprocess(image: Tensor) -> Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-0.5, 0.5]."""
        return image.permute(0, 3, 1, 2).float().div(255.0).sub(0.5)

    def patches(self, image: Tensor) -> Tensor:
        """(B, H, W, 3) uint8 -> (B, C, h, w) conv feature map (for cross-attention and Grad-CAM)."""
        out: Tensor = self.conv(self.preprocess(image))
        return out

    def forward(self, image: Tensor) -> Tensor:  # (B, H, W, 3) uint8 -> (B, F)
        return self.pool(self.patches(image))

    def pool(self, x: Tensor) -> Tensor:  # (B, C, h, w) feature map -> (B, F)
        parts = []
        if self.cfg.pool:
            parts.append(nn.functional.adaptive_avg_pool2d(x, self.cfg.pool).flatten(1))  # (B, C*p*p)
        if self.cfg.max_pool:
            parts.append(x.amax(dim=(2, 3)))  # (B, C)
        out: Tensor = self.fc(torch.cat(parts, dim=1))
        return out


def random_shift(image: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """DrQ-style augmentation: replicate-pad by ``pad`` pixels and crop back at a random offset.

    (B, H, W, 3) uint8 -> same shape; one offset per sample.
    """
    if pad <= 0:
        return image
    b, h, w, _ = image.shape
    padded = nn.functional.pad(image.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(image.device)  # (B, H)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(image.device)  # (B, W)
    batch = torch.arange(b, device=image.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
    return out.to(torch.uint8)
