"""Where a run's data comes from: an existing dataset directory, or a simulator to generate it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ConfigError


@dataclass
class DataConfig:
    source: Literal["babyai", "metaworld"] = "babyai"
    levels: tuple[str, ...] = ("GoToLocal",)  # BabyAI levels, or Meta-World tasks / "mt10" / "mt50"
    # BabyAI: episodes per split; Meta-World: episodes per task and split
    train_episodes: int = 5000
    val_episodes: int = 500
    test_episodes: int = 1000
    image_size: int = 56
    seed: int = 0
    path: str = ""  # dataset directory; empty = a cache directory named after the fields above

    def __post_init__(self) -> None:
        if not self.levels:
            raise ConfigError("data.levels is empty; name at least one level, e.g. GoToLocal")
        for name in ("train_episodes", "val_episodes", "test_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.source not in ("babyai", "metaworld"):
            raise ConfigError(f"data.source must be babyai or metaworld, got {self.source!r}")
        if not 28 <= self.image_size <= 224:
            raise ConfigError(f"data.image_size must be in 28..224, got {self.image_size}")

    @property
    def episodes(self) -> dict[str, int]:
        return {"train": self.train_episodes, "val": self.val_episodes, "test": self.test_episodes}

    def resolved_path(self, cache_root: Path = Path("datasets")) -> Path:
        """The dataset directory: ``path`` if set, else ``datasets/<source>-<levels>-<hash>``."""
        if self.path:
            return Path(self.path)
        spec = json.dumps([self.source, list(self.levels), self.episodes, self.image_size, self.seed], sort_keys=True)
        digest = hashlib.sha1(spec.encode()).hexdigest()[:8]
        return cache_root / f"{self.source}-{'+'.join(self.levels)}-{digest}"
