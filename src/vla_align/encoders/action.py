"""Action-chunk encoder: the next T actions (ids or vectors), masked past the episode end."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_int
from ..data.episode import ActionSpec


@dataclass
class ActionEncoderConfig:
    chunk_len: int = 8  # T: the chapter starts L<->A alignment with short chunks, T <= 8
    step_dim: int = 32  # per-step feature size
    feature_dim: int = 256  # action-chunk feature size before the projection into the shared space

    def __post_init__(self) -> None:
        check_int("model.action.chunk_len", self.chunk_len, 1, 64, why="T: the chapter starts with T <= 8")
        check_int("model.action.step_dim", self.step_dim, 1, why="per-step feature size")
        check_int("model.action.feature_dim", self.feature_dim, 1)


class ActionEncoder(nn.Module):
    """Per-step embedding (+ position) of a (B, T) id chunk or a (B, T, A) vector chunk, masked,
    flattened with the mask and mixed by an MLP. Padded steps contribute exactly zero."""

    def __init__(self, cfg: ActionEncoderConfig, spec: ActionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.chunk_len = cfg.chunk_len
        self.step: nn.Module
        if spec.kind == "discrete":
            self.step = nn.Embedding(spec.num_actions, cfg.step_dim)
        else:
            self.step = nn.Linear(spec.dim, cfg.step_dim)
        self.position = nn.Parameter(torch.zeros(cfg.chunk_len, cfg.step_dim))
        nn.init.normal_(self.position, std=0.02)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.chunk_len * (cfg.step_dim + 1), cfg.feature_dim),
            nn.GELU(),
            nn.Linear(cfg.feature_dim, cfg.feature_dim),
        )
        self.out_dim = cfg.feature_dim

    def forward(self, action: Tensor, mask: Tensor) -> Tensor:  # -> (B, F)
        if action.shape[1] != self.chunk_len:
            raise ValueError(f"action chunk has {action.shape[1]} steps, the encoder expects {self.chunk_len}")
        x = action.clamp(min=0) if self.spec.kind == "discrete" else action.float()  # ids or vectors
        steps = self.step(x)  # (B, T, S)
        m = mask.to(steps.dtype).unsqueeze(-1)  # (B, T, 1)
        steps = (steps + self.position) * m  # (B, T, S), zero past the end
        out: Tensor = self.mlp(torch.cat([steps, m], dim=-1).flatten(1))  # (B, F)
        return out
