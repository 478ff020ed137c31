"""TriModalModel: image, text and action encoders projected into one shared space Z (chapter 5.1).

    z_V = norm(P_V(f_V(image)))   z_L = norm(P_L(f_L(text)))   z_A = norm(P_A(f_A(action chunk)))

One learnable logit scale (1/τ) per pair, initialised at 1/0.07 and clamped to ``max_logit_scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import as_variant, check_float, check_int
from .data.episode import ActionSpec
from .data.normalizer import STAT_KEYS, ActionNormalizer
from .encoders import (
    ActionEncoder,
    ActionEncoderConfig,
    AutoTextConfig,
    ImageEncoder,
    ImageEncoderConfig,
    TextEncoder,
    TextEncoderConfig,
)
from .errors import ConfigError
from .fusion import FusionDims, FusionInputs
from .modalities import PAIRS, Batch, Embeddings, Modality, Pair
from .policy import ContinuousPolicy, Policy, PolicyConfig


@dataclass
class ModelConfig:
    embed_dim: int = 256  # D: the chapter's rule of thumb is 256-1024
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)  # the conv image encoder
    text: TextEncoderConfig = field(default_factory=AutoTextConfig)  # a TEXT_BACKBONES variant (or its name)
    action: ActionEncoderConfig = field(default_factory=ActionEncoderConfig)  # the action-chunk encoder
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # the action policy trained beside the alignment
    init_temperature: float = 0.07  # InfoNCE's starting temperature τ (one logit scale 1/τ per pair)
    max_logit_scale: float = 100.0  # cap on the learned logit scale 1/τ (CLIP: 100)
    learn_temperature: bool = True  # learn τ during training (false: keep init_temperature)

    def __post_init__(self) -> None:
        self.text = as_variant(self.text, TextEncoderConfig, "model.text")
        check_int("model.embed_dim", self.embed_dim, 16, 2048, why="the size of Z; the chapter uses 256-1024")
        check_float("model.init_temperature", self.init_temperature, 0.0, 1.0, lo_open=True, why="InfoNCE's τ")
        check_float(
            "model.max_logit_scale", self.max_logit_scale, 1.0, 1000.0, lo_open=True, why="the cap on 1/τ (CLIP: 100)"
        )
        if 1.0 / self.init_temperature > self.max_logit_scale:
            raise ConfigError("model.init_temperature is below 1/max_logit_scale; raise it or max_logit_scale")

    def build(self, action_spec: ActionSpec, state_dim: int = 0) -> TriModalModel:
        return TriModalModel(self, action_spec, state_dim)


@dataclass
class ModelOutput:
    emb: Embeddings
    logits: Tensor | None = None  # (B, k, A) policy logits (discrete actions)
    cond: Tensor | None = None  # (B, C) the continuous policy's conditioning vector
    policy_inputs: FusionInputs | None = None  # what the policy's fusion saw (before any dropout)
    prev_action: Tensor | None = None  # (B, h)


def blank_modalities(x: FusionInputs, drop: Tensor) -> FusionInputs:
    """Zero the image inputs where ``drop`` == 1 and the instruction inputs where ``drop`` == 2."""
    keep_v = (drop != 1).to(x.image.dtype)  # (B,)
    keep_l = (drop != 2).to(x.text.dtype)  # (B,)
    tokens = x.tokens * keep_l[:, None, None] if x.tokens is not None else None
    return FusionInputs(
        patches=x.patches * keep_v[:, None, None, None],
        image=x.image * keep_v[:, None],
        text=x.text * keep_l[:, None],
        tokens=tokens,
        token_mask=x.token_mask,
    )


def projection(in_dim: int, out_dim: int) -> nn.Module:
    """Encoder features -> Z (before normalisation). The encoders end in a linear layer and the
    head starts with LayerNorm, so embeddings are not crowded into one cone at initialisation
    (a crowded start sits on the collapsed saddle of InfoNCE for hundreds of steps)."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class TriModalModel(nn.Module):
    def __init__(self, cfg: ModelConfig, action_spec: ActionSpec, state_dim: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.action_spec = action_spec
        self.continuous = action_spec.kind == "continuous"
        self.state_dim = state_dim
        # Continuous actions and states are scaled by training-split statistics kept as buffers, so a
        # checkpoint alone can act (fitted by `fit_normalizers` before training).
        self.action_norm: ActionNormalizer | None = None
        self.state_norm: ActionNormalizer | None = None
        if self.continuous:
            self.action_norm = ActionNormalizer(action_spec.dim, mode=cfg.policy.normalize, names=action_spec.names)
        if state_dim:
            self.state_norm = ActionNormalizer(state_dim, mode="mean_std")
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
        self.policy: Policy | ContinuousPolicy | None = None
        if cfg.policy.enabled:
            dims = FusionDims(
                patch_channels=self.image_encoder.patch_dim,
                image_dim=self.image_encoder.out_dim,
                text_dim=self.text_encoder.out_dim,
                token_dim=self.text_encoder.token_dim,
                hidden=cfg.policy.hidden,
            )
            if self.continuous:
                if cfg.policy.chunk > cfg.action.chunk_len:
                    raise ConfigError(
                        f"model.policy.chunk ({cfg.policy.chunk}) must be <= model.action.chunk_len "
                        f"({cfg.action.chunk_len}): the expert chunk is cut from the action window"
                    )
                self.policy = ContinuousPolicy(cfg.policy, action_spec, dims, state_dim)
            else:
                self.policy = Policy(cfg.policy, action_spec, dims)
        init = torch.full((len(PAIRS),), math.log(1.0 / cfg.init_temperature))
        self.log_logit_scale = nn.Parameter(init, requires_grad=cfg.learn_temperature)  # (3,) one per pair

    @property
    def text_backbone(self) -> Literal["minilm", "scratch"]:
        return self.text_encoder.backbone_name

    def logit_scale(self, pair: Pair) -> Tensor:
        """1/τ for ``pair``, clamped to ``max_logit_scale`` (CLIP clamps at 100)."""
        return self.log_logit_scale[PAIRS.index(pair)].clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def encode_image(self, image: Tensor) -> Tensor:  # (B, H, W, 3) uint8 -> (B, D)
        return F.normalize(self.heads["image"](self.image_encoder(image)), dim=-1)

    def encode_text(self, texts: list[str]) -> Tensor:  # B strings -> (B, D)
        return F.normalize(self.heads["text"](self.text_encoder(texts)), dim=-1)

    def encode_action(self, action: Tensor, mask: Tensor) -> Tensor:  # (B, T[, A]), (B, T) -> (B, D)
        if self.action_norm is not None:
            action = self.action_norm(action.float())  # (B, T, A) normalised; padded steps are masked
        return F.normalize(self.heads["action"](self.action_encoder(action, mask)), dim=-1)

    def fit_normalizers(self, actions: np.ndarray, state: np.ndarray | None) -> None:
        """Set the action / state normaliser statistics from the training split's (N, A) / (N, S) arrays."""
        if self.action_norm is not None:
            fitted = ActionNormalizer.fit(actions, mode=self.action_norm.mode)
            self.action_norm.set_stats({k: getattr(fitted, k) for k in STAT_KEYS})
        if self.state_norm is not None and state is not None:
            fitted = ActionNormalizer.fit(state, mode="mean_std")
            self.state_norm.set_stats({k: getattr(fitted, k) for k in STAT_KEYS})

    def forward(self, batch: Batch, modalities: tuple[Modality, ...] = ("image", "text", "action")) -> Embeddings:
        return self.run(batch, modalities)[0]

    def run(
        self,
        batch: Batch,
        modalities: tuple[Modality, ...] = ("image", "text", "action"),
        policy: bool = False,
        detach_policy_inputs: bool = False,
    ) -> tuple[Embeddings, Tensor | None]:
        """Embeddings of ``modalities`` and, with ``policy``, the policy's (B, k, A) logits, sharing
        one pass through the image and text encoders. ``detach_policy_inputs`` keeps the policy's
        gradient out of the encoders (frozen-encoder stage)."""
        out = self.forward_train(batch, modalities, policy, detach_policy_inputs)
        return out.emb, out.logits

    def forward_train(
        self,
        batch: Batch,
        modalities: tuple[Modality, ...] = ("image", "text", "action"),
        policy: bool = False,
        detach_policy_inputs: bool = False,
        drop: Tensor | None = None,
    ) -> ModelOutput:
        """``run`` plus what the auxiliary objectives need: the policy's fusion inputs (to act again
        with a modality removed). ``drop`` (B,) blanks, per sample, the policy's image (1) or
        instruction (2) input: modality dropout."""
        out = Embeddings()
        need_image = "image" in modalities or policy
        need_text = "text" in modalities or policy
        patches = self.image_encoder.patches(batch.image) if need_image else None  # (B, C, h, w)
        image_feat = self.image_encoder.pool(patches) if patches is not None else None  # (B, F_V)
        text_feat = self.text_encoder(batch.text) if need_text else None  # (B, F_L)
        if "image" in modalities and image_feat is not None:
            out.image = F.normalize(self.heads["image"](image_feat), dim=-1)
        if "text" in modalities and text_feat is not None:
            out.text = F.normalize(self.heads["text"](text_feat), dim=-1)
        if "action" in modalities:
            out.action = self.encode_action(batch.action, batch.action_mask)
        result = ModelOutput(emb=out)
        if policy:
            assert patches is not None and image_feat is not None and text_feat is not None
            result.policy_inputs = self._policy_inputs(patches, image_feat, text_feat, batch.text, detach_policy_inputs)
            result.prev_action = batch.prev_action
            if self.continuous:
                result.cond = self.policy_cond(result.policy_inputs, batch.state, drop)
            else:
                result.logits = self.policy_logits(result.policy_inputs, batch.prev_action, drop)
        return result

    def policy_loss(self, out: ModelOutput, batch: Batch) -> Tensor:
        """Behaviour cloning: cross-entropy of the logits (discrete) or the head's loss on the normalised
        expert chunk (continuous), masked past the episode end."""
        if self.policy is None:
            raise ConfigError("this model has no policy; train with --model.policy.enabled true")
        if isinstance(self.policy, ContinuousPolicy):
            assert out.cond is not None and self.action_norm is not None
            return self.policy.loss(out.cond, self.action_norm(batch.action.float()), batch.action_mask)
        assert out.logits is not None
        return self.policy.loss(out.logits.float(), batch.action, batch.action_mask)

    def policy_cond(self, inputs: FusionInputs, state: Tensor | None, drop: Tensor | None = None) -> Tensor:
        """(B, C) continuous-policy conditioning from fusion inputs and the raw (B, S) state."""
        if not isinstance(self.policy, ContinuousPolicy):
            raise ConfigError("policy_cond is for continuous-action policies")
        if drop is not None:
            inputs = blank_modalities(inputs, drop)
        s = None
        if self.state_norm is not None and state is not None and state.numel():
            s = self.state_norm(state.float())  # (B, S)
        out: Tensor = self.policy(inputs, s)
        return out

    @torch.no_grad()
    def act_chunk(
        self, image: Tensor, texts: list[str], state: Tensor | None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Continuous actions for observations -> (B, k, A) in the dataset's units (un-normalised)."""
        if not isinstance(self.policy, ContinuousPolicy) or self.action_norm is None:
            raise ConfigError("act_chunk is for continuous-action policies")
        patches = self.image_encoder.patches(image)
        inputs = self._policy_inputs(patches, self.image_encoder.pool(patches), self.text_encoder(texts), texts, False)
        cond = self.policy_cond(inputs, state)
        return self.action_norm.unnormalize(self.policy.sample(cond, generator))  # (B, k, A)

    def _policy_inputs(
        self, patches: Tensor, image_feat: Tensor, text_feat: Tensor, texts: list[str], detach: bool
    ) -> FusionInputs:
        if self.policy is None:
            raise ConfigError("this model has no policy; train with --model.policy.enabled true")
        tokens = mask = None
        if self.policy.needs_tokens:
            tokens, mask = self.text_encoder.tokens(texts)
        if detach:
            patches, image_feat, text_feat = patches.detach(), image_feat.detach(), text_feat.detach()
            tokens = tokens.detach() if tokens is not None else None
        return FusionInputs(patches=patches, image=image_feat, text=text_feat, tokens=tokens, token_mask=mask)

    def policy_logits(self, inputs: FusionInputs, prev: Tensor, drop: Tensor | None = None) -> Tensor:
        """(B, k, A) logits from fusion inputs; ``drop`` (B,) = 1 blanks the image, 2 the instruction."""
        if not isinstance(self.policy, Policy):
            raise ConfigError("this model has no discrete policy; train with --model.policy.enabled true")
        if drop is not None:
            inputs = blank_modalities(inputs, drop)
        b = len(inputs.text)
        if len(prev) != b:
            prev = torch.full((b, 1), -1, dtype=torch.long, device=inputs.text.device)
        out: Tensor = self.policy(inputs, prev)  # (B, k, A)
        return out

    @torch.no_grad()
    def act_logits(self, image: Tensor, texts: list[str], prev_action: Tensor) -> Tensor:
        """Policy logits for observations: (B, H, W, 3) uint8, B strings, (B, h) previous ids -> (B, k, A)."""
        patches = self.image_encoder.patches(image)
        inputs = self._policy_inputs(patches, self.image_encoder.pool(patches), self.text_encoder(texts), texts, False)
        return self.policy_logits(inputs, prev_action)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by role: weights with decay, biases/norms without, the temperature."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            if not p.requires_grad or name == "log_logit_scale":
                continue
            (decay if p.ndim >= 2 and "position" not in name else no_decay).append(p)
        temperature = [self.log_logit_scale] if self.log_logit_scale.requires_grad else []
        return {"decay": decay, "no_decay": no_decay, "temperature": temperature}
