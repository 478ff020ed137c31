"""TriModalModel: image, text and action encoders projected into one shared space Z (chapter 5.1).

    z_V = norm(P_V(f_V(image)))   z_L = norm(P_L(f_L(text)))   z_A = norm(P_A(f_A(action chunk)))

One learnable logit scale (1/τ) per pair, initialised at 1/0.07 and clamped to ``max_logit_scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.episode import ActionSpec
from .encoders import (
    ActionEncoder,
    ActionEncoderConfig,
    ImageEncoder,
    ImageEncoderConfig,
    TextEncoder,
    TextEncoderConfig,
)
from .errors import ConfigError
from .modalities import PAIRS, Batch, Embeddings, Modality, Pair


@dataclass
class ModelConfig:
    embed_dim: int = 256  # D: the chapter's rule of thumb is 256-1024
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    action: ActionEncoderConfig = field(default_factory=ActionEncoderConfig)
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    learn_temperature: bool = True

    def __post_init__(self) -> None:
        if not 16 <= self.embed_dim <= 2048:
            raise ConfigError(f"model.embed_dim must be in 16..2048 (chapter: 256-1024), got {self.embed_dim}")
        if not 0.0 < self.init_temperature <= 1.0:
            raise ConfigError(f"model.init_temperature must be in (0, 1], got {self.init_temperature}")
        if not 1.0 < self.max_logit_scale <= 1000.0:
            raise ConfigError(f"model.max_logit_scale must be in (1, 1000], got {self.max_logit_scale}")
        if 1.0 / self.init_temperature > self.max_logit_scale:
            raise ConfigError("model.init_temperature is below 1/max_logit_scale; raise it or max_logit_scale")

    def build(self, action_spec: ActionSpec) -> TriModalModel:
        return TriModalModel(self, action_spec)


def projection(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class TriModalModel(nn.Module):
    def __init__(self, cfg: ModelConfig, action_spec: ActionSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.action_spec = action_spec
        self.image_encoder = ImageEncoder(cfg.image)
        self.text_encoder = TextEncoder(cfg.text)
        self.action_encoder = ActionEncoder(cfg.action, action_spec)
        d = cfg.embed_dim
        self.heads = nn.ModuleDict(
            {
                "image": projection(self.image_encoder.out_dim, d),
                "text": projection(self.text_encoder.out_dim, d),
                "action": projection(self.action_encoder.out_dim, d),
            }
        )
        init = torch.full((len(PAIRS),), math.log(1.0 / cfg.init_temperature))
        self.log_logit_scale = nn.Parameter(init, requires_grad=cfg.learn_temperature)  # (3,) one per pair

    @property
    def text_backbone(self) -> str:
        return self.text_encoder.backbone_name

    def logit_scale(self, pair: Pair) -> Tensor:
        """1/τ for ``pair``, clamped to ``max_logit_scale`` (CLIP clamps at 100)."""
        return self.log_logit_scale[PAIRS.index(pair)].clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def encode_image(self, image: Tensor) -> Tensor:  # (B, H, W, 3) uint8 -> (B, D)
        return F.normalize(self.heads["image"](self.image_encoder(image)), dim=-1)

    def encode_text(self, texts: list[str]) -> Tensor:  # B strings -> (B, D)
        return F.normalize(self.heads["text"](self.text_encoder(texts)), dim=-1)

    def encode_action(self, action: Tensor, mask: Tensor) -> Tensor:  # (B, T[, A]), (B, T) -> (B, D)
        return F.normalize(self.heads["action"](self.action_encoder(action, mask)), dim=-1)

    def forward(self, batch: Batch, modalities: tuple[Modality, ...] = ("image", "text", "action")) -> Embeddings:
        out = Embeddings()
        if "image" in modalities:
            out.image = self.encode_image(batch.image)
        if "text" in modalities:
            out.text = self.encode_text(batch.text)
        if "action" in modalities:
            out.action = self.encode_action(batch.action, batch.action_mask)
        return out

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by role: weights with decay, biases/norms without, the temperature."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad or name == "log_logit_scale":
                continue
            (decay if p.ndim >= 2 and "position" not in name else no_decay).append(p)
        temperature = [self.log_logit_scale] if self.log_logit_scale.requires_grad else []
        return {"decay": decay, "no_decay": no_decay, "temperature": temperature}
