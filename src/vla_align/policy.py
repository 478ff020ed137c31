"""A language-conditioned policy on the aligned encoders (chapter 5.1 / 5.5, seed 004).

    state  = fusion(image feature map, image feature, instruction feature[, tokens])   (B, H)
    logits = head([state; embed(a_{t-1}); ...; embed(a_{t-h})])                          (B, k, A)

The last ``history`` actions are the policy's memory: a short action history lets a policy that
sees one frame tell "I just turned left twice" from "I just arrived", which breaks the turn-left /
turn-right loops a memoryless policy falls into when the goal is out of view.

The policy predicts a chunk of the next ``k`` discrete actions (k = 1: the next action only) and is
trained by behaviour cloning (cross-entropy over the chunk, masked past the episode end). At run
time the first ``execute`` actions of each predicted chunk are played before re-planning.

Encoder gradients from the behaviour-cloning loss are cut before ``freeze_encoders_until`` (the
chapter's "freeze first, then unfreeze progressively"); the contrastive losses keep training the
encoders throughout unless their weights are 0.

Continuous actions (Meta-World) use :class:`ContinuousPolicy` instead: the same fusion, plus the
normalised proprioceptive state, gives a conditioning vector for one of the chunk heads of
``vla_align.heads`` (``model.policy.head.name``: ``regression``, ``binned`` 256-bin tokens or ``flow``
matching); it predicts the next ``chunk`` actions in normalised units.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import as_variant, check_float, check_int
from .data.episode import ActionSpec
from .data.normalizer import NormMode
from .errors import ConfigError
from .fusion import FiLMFusionConfig, FusionConfig, FusionDims, FusionInputs
from .heads import ActionHead, HeadConfig, RegressionHeadConfig

STATE_FEATURES = 64  # width of the proprioceptive-state embedding (continuous policies)


@dataclass
class PolicyConfig:
    enabled: bool = False  # train a policy (behaviour cloning) beside the alignment
    fusion: FusionConfig = field(default_factory=FiLMFusionConfig)  # a FUSIONS variant (or its name)
    hidden: int = 256  # width of the fused features and of the policy's layers
    chunk: int = 1  # k: actions predicted per step
    execute: int = 1  # j: actions played from each chunk before re-planning (1 <= j <= k)
    prev_action: bool = True  # condition on previous actions (a short memory)
    history: int = 1  # h: how many previous actions (with prev_action)
    history_dropout: float = 0.0  # training: probability of hiding a sample's whole action history
    weight: float = 1.0  # behaviour-cloning loss weight beside the contrastive terms
    start_step: int = 0  # contrastive-only pre-training before this step
    freeze_encoders_until: int = 0  # BC gradients do not reach the encoders before this step
    label_smoothing: float = 0.0  # discrete actions: label smoothing of the cross-entropy
    # continuous actions only: the chunk head (its chunk_len / action_dim are set from `chunk` and the
    # dataset) and how actions are scaled for it (percentile: the 1st / 99th percentiles map to -1 / +1)
    head: HeadConfig = field(default_factory=RegressionHeadConfig)  # a HEADS variant (or its name)
    normalize: NormMode = "percentile"  # continuous actions: how they are scaled for the head
    state: bool = True  # continuous: feed the proprioceptive state (observation.state) when the data has it

    def __post_init__(self) -> None:
        self.fusion = as_variant(self.fusion, FusionConfig, "model.policy.fusion")
        self.head = as_variant(self.head, HeadConfig, "model.policy.head")
        check_float("model.policy.history_dropout", self.history_dropout, 0.0, 1.0, hi_open=True, why="a probability")
        check_int("model.policy.history", self.history, 1, 32, why="previous actions the policy sees")
        check_int("model.policy.hidden", self.hidden, 8)
        check_int("model.policy.chunk", self.chunk, 1, 64, why="actions predicted per step")
        check_int("model.policy.execute", self.execute, 1, 64, why="actions played per chunk")
        if self.execute > self.chunk:
            raise ConfigError(
                f"model.policy needs 1 <= execute <= chunk <= 64, got execute={self.execute}, chunk={self.chunk}"
            )
        check_float("model.policy.weight", self.weight, 0.0, why="the behaviour-cloning loss weight")
        check_int("model.policy.start_step", self.start_step, 0, why="contrastive-only steps first")
        check_int("model.policy.freeze_encoders_until", self.freeze_encoders_until, 0)
        check_float("model.policy.label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        if self.normalize not in ("mean_std", "min_max", "percentile"):
            raise ConfigError(f"model.policy.normalize must be mean_std, min_max or percentile, got {self.normalize!r}")

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """Read config files from before fusions had their own configs: ``film_channels`` is now
        ``fusion.channels`` (it only ever applied to the film fusion)."""
        if "film_channels" in data:
            channels = data.pop("film_channels")
            fusion = data.get("fusion", "film")
            fusion = {"name": fusion} if isinstance(fusion, str) else dict(fusion)
            if fusion.get("name", "film") == "film":
                fusion.setdefault("channels", channels)
            data["fusion"] = fusion
        return data


class Policy(nn.Module):
    """Fusion + previous-action embedding + a discrete chunk head."""

    def __init__(self, cfg: PolicyConfig, spec: ActionSpec, dims: FusionDims) -> None:
        super().__init__()
        if spec.kind != "discrete":
            raise ConfigError(
                "model.policy: Policy predicts discrete action ids and the dataset's actions are continuous; "
                "use ContinuousPolicy (TriModalModel picks it for continuous actions: model.policy.head)"
            )
        self.cfg = cfg
        self.num_actions = spec.num_actions
        self.fusion = cfg.fusion.build(dims)
        self.needs_tokens: bool = self.fusion.needs_tokens
        self.history = cfg.history if cfg.prev_action else 0
        prev_dim = 32 * self.history
        # index num_actions = "no previous action" (before the first step of an episode)
        self.prev = nn.Embedding(spec.num_actions + 1, 32) if cfg.prev_action else None
        self.head = nn.Sequential(
            nn.Linear(cfg.hidden + prev_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.chunk * spec.num_actions)
        )

    def forward(self, x: FusionInputs, prev_action: Tensor) -> Tensor:
        """prev_action: (B, >= h) previous ids, most recent first, -1 = none -> (B, k, A) logits."""
        state = self.fusion(x)  # (B, H)
        if self.prev is not None:
            prev = prev_action.view(len(state), -1)[:, : self.history]  # (B, h)
            if prev.shape[1] < self.history:  # callers that know fewer steps: pad with "none"
                prev = torch.cat([prev, prev.new_full((len(prev), self.history - prev.shape[1]), -1)], dim=1)
            prev = torch.where(prev < 0, self.num_actions, prev)
            state = torch.cat([state, self.prev(prev).flatten(1)], dim=-1)  # (B, H + 32h)
        out: Tensor = self.head(state).view(len(state), self.cfg.chunk, self.num_actions)  # (B, k, A)
        return out

    def loss(self, logits: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """Masked cross-entropy of (B, k, A) logits against the (B, T >= k) expert chunk."""
        k = self.cfg.chunk
        target, m = action[:, :k], mask[:, :k].to(logits.dtype)  # (B, k)
        ce = F.cross_entropy(
            logits.reshape(-1, self.num_actions),
            target.reshape(-1).clamp(min=0),
            reduction="none",
            label_smoothing=self.cfg.label_smoothing,
        ).view_as(m)  # (B, k)
        return (ce * m).sum() / m.sum().clamp(min=1)


class ContinuousPolicy(nn.Module):
    """Fusion (+ embedded proprioceptive state) -> conditioning vector -> a continuous chunk head.

    Works in normalised action units; :class:`~vla_align.model.TriModalModel` normalises the targets and
    un-normalises the samples with the normaliser it stores as buffers.
    """

    def __init__(self, cfg: PolicyConfig, spec: ActionSpec, dims: FusionDims, state_dim: int = 0) -> None:
        super().__init__()
        if spec.kind != "continuous":
            raise ConfigError("ContinuousPolicy needs continuous actions; discrete datasets use Policy")
        self.cfg = cfg
        self.fusion = cfg.fusion.build(dims)
        self.needs_tokens: bool = self.fusion.needs_tokens
        self.state_dim = state_dim if cfg.state else 0
        self.state: nn.Module | None = None
        if self.state_dim:
            self.state = nn.Sequential(nn.Linear(self.state_dim, STATE_FEATURES), nn.GELU())
        head_cfg = replace(cfg.head, chunk_len=cfg.chunk, action_dim=spec.dim)
        self.head: ActionHead = head_cfg.build(cfg.hidden + (STATE_FEATURES if self.state_dim else 0))

    def forward(self, x: FusionInputs, state: Tensor | None) -> Tensor:
        """(B, C) conditioning vector; ``state`` (B, S) normalised proprioception (None without)."""
        cond: Tensor = self.fusion(x)  # (B, H)
        if self.state is not None:
            if state is None or state.shape[-1] != self.state_dim:
                got = None if state is None else tuple(state.shape)
                raise ValueError(f"this policy needs the ({self.state_dim},) proprioceptive state, got {got}")
            cond = torch.cat([cond, self.state(state.to(cond.dtype))], dim=-1)  # (B, H + 64)
        return cond

    def loss(self, cond: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """Head loss against the first ``chunk`` steps of the normalised (B, T >= k, A) expert chunk."""
        k = self.cfg.chunk
        return self.head.loss(cond.float(), action[:, :k].float(), mask[:, :k])

    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.head.sample(cond.float(), generator)  # (B, k, A) normalised
