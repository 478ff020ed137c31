"""vla-align: vision-language-action alignment in one shared embedding space (chapter 5).

    from vla_align import get_preset, TriModalModel, info_nce, retrieval_scores

Names are imported on first use, so ``vla-align --help`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ActionSpec": "data.episode",
    "Episode": "data.episode",
    "ConfigError": "errors",
    "DatasetError": "errors",
    "UserError": "errors",
    "AlignmentLoss": "losses",
    "LossConfig": "losses",
    "info_nce": "losses",
    "retrieval_scores": "metrics",
    "MODALITIES": "modalities",
    "PAIRS": "modalities",
    "Batch": "modalities",
    "Embeddings": "modalities",
    "ModelConfig": "model",
    "TriModalModel": "model",
    "PRESETS": "presets",
    "RunConfig": "presets",
    "get_preset": "presets",
    "read_dataset": "data.lerobot",
    "write_dataset": "data.lerobot",
    "evaluate_retrieval": "evaluate",
    "evaluate_policy": "sim.base",
    "evaluate_closed_loop": "sim.base",
    "SimConfig": "sim.base",
    "DataConfig": "sim.base",
    "EvalContext": "sim.base",
    "Simulator": "sim.base",
    "SIMULATORS": "sim.base",
    "register_simulator": "sim.base",
    "get_simulator": "sim.base",
    "simulator_for": "sim.base",
    "PolicyConfig": "policy",
    "FUSIONS": "fusion",
    "train": "train",
    "load_model": "runs",
    "load": "api",
    "AlignedModel": "api",
    "PolicySession": "api",
    "Retrieval": "api",
    "retrieve": "api",
    "preprocess_frames": "api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vla_align' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
