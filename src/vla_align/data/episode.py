"""The in-memory episode schema shared by every data source and the on-disk format."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import DatasetError

ActionKind = Literal["discrete", "continuous"]


@dataclass
class ActionSpec:
    """What an action is: ``discrete`` ids in ``[0, num_actions)`` or ``continuous`` vectors."""

    kind: ActionKind
    dim: int = 1  # 1 for discrete ids; the vector size for continuous actions
    num_actions: int = 0  # discrete only
    names: list[str] = field(default_factory=list)  # one per id (discrete) or per dimension

    def __post_init__(self) -> None:
        if self.kind not in ("discrete", "continuous"):
            raise DatasetError(f"action kind must be 'discrete' or 'continuous', got {self.kind!r}")
        if self.kind == "discrete" and (self.num_actions < 2 or self.dim != 1):
            raise DatasetError("a discrete action spec needs num_actions >= 2 and dim == 1")
        if self.kind == "continuous" and self.dim < 1:
            raise DatasetError("a continuous action spec needs dim >= 1")

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "dim": self.dim, "num_actions": self.num_actions, "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ActionSpec:
        return cls(
            kind=d["kind"],  # type: ignore[arg-type]
            dim=int(d.get("dim", 1)),  # type: ignore[call-overload]
            num_actions=int(d.get("num_actions", 0)),  # type: ignore[call-overload]
            names=list(d.get("names", [])),  # type: ignore[call-overload]
        )


@dataclass
class Episode:
    """One demonstration: the observation before each step and the action taken at it.

    ``frames[t]`` is what the agent saw when it chose ``actions[t]``.
    """

    frames: np.ndarray  # (N, H, W, 3) uint8
    actions: np.ndarray  # (N,) int64 ids, or (N, A) float32
    instruction: str
    task: str  # environment / level name, e.g. "BabyAI-GoToLocal-v0"
    fps: float
    seed: int
    success: bool
    state: np.ndarray | None = None  # (N, S) float32 proprioception, optional

    def __post_init__(self) -> None:
        where = f"episode (task {self.task!r}, seed {self.seed})"
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise DatasetError(f"{where}: the instruction is empty; every episode needs a non-empty instruction")
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise DatasetError(
                f"{where}: frames must be a uint8 array of shape (N, H, W, 3), got {f.dtype} {tuple(f.shape)}"
            )
        if len(f) == 0:
            raise DatasetError(f"{where}: has no frames")
        if len(self.actions) != len(f):
            raise DatasetError(f"{where}: {len(f)} frames but {len(self.actions)} actions; they must match")
        if self.state is not None and len(self.state) != len(f):
            raise DatasetError(f"{where}: {len(f)} frames but {len(self.state)} state rows; they must match")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise DatasetError(f"{where}: fps must be a positive finite number, got {self.fps}")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def timestamps(self) -> np.ndarray:
        return (np.arange(len(self), dtype=np.float64) / self.fps).astype(np.float32)
