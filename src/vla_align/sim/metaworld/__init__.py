"""Meta-World v3 (MuJoCo) behind the simulator seam: scripted-expert demonstrations, per-task closed
loop with safety-limit violations and comfort, the shuffled-instruction ablation, failure replays
against the scripted expert.

Importing this package registers ``metaworld`` in :data:`~vla_align.sim.base.SIMULATORS`; MuJoCo
and metaworld are imported only when an environment is made.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import UserError
from ..base import (
    DataConfig,
    EpisodeResult,
    EvalContext,
    SimConfig,
    Simulator,
    default_split_counts,
    register_simulator,
)

if TYPE_CHECKING:
    from ...diagnostics.three_view import ThreeView
    from ...model import TriModalModel


@register_simulator("metaworld")
class MetaWorld(Simulator):
    summary = "Meta-World v3 (MuJoCo): 50 manipulation tasks, 4-D continuous actions, scripted experts"
    requires = ("metaworld", "metaworld")
    default_image_size = 84
    closed_loop_validation = False  # a closed-loop check costs minutes per task: selection uses retrieval

    def add_data_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tasks", action="append", default=None, help="mt10, mt50 or task names (comma list)")
        parser.add_argument("--episodes-per-task", type=int, default=20, help="training episodes per task (20)")
        parser.add_argument("--val-episodes-per-task", type=int, default=None, help="default: 10%%")
        parser.add_argument("--test-episodes-per-task", type=int, default=None, help="default: 20%%")
        parser.add_argument("--max-steps", type=int, default=None, help="episode cap (default: per task, 200)")

    def generate_from_args(self, args: argparse.Namespace) -> str:
        from .generate import generate_metaworld

        counts = default_split_counts(args.episodes_per_task, args.val_episodes_per_task, args.test_episodes_per_task)
        tasks = [t for item in (args.tasks or ["mt10"]) for t in item.split(",") if t]
        size = self.default_image_size if args.image_size is None else args.image_size
        t0 = time.perf_counter()
        path = generate_metaworld(args.out, tasks, counts, args.seed, size, args.max_steps, args.overwrite)
        return f"wrote {counts} episodes per task to {path} in {time.perf_counter() - t0:.1f} s"

    def generate(self, data: DataConfig, out: Path, overwrite: bool = False) -> Path:
        from .generate import generate_metaworld

        return generate_metaworld(
            out, list(data.levels), data.episodes, data.seed, image_size=data.image_size, overwrite=overwrite
        )

    def describes(self, data: DataConfig, info: Mapping[str, Any]) -> bool:
        from .env import resolve_tasks

        own = info.get("vla_align", {})
        return bool(
            own.get("seed") == data.seed
            and own.get("image_size") == data.image_size
            and own.get("tasks") == resolve_tasks(data.levels)
            and own.get("episodes_per_task") == data.episodes
        )

    def check_policy(self, model: TriModalModel) -> None:
        if model.policy is None or not model.continuous:
            raise UserError(
                "Meta-World evaluation needs a run trained with a continuous policy (--model.policy.enabled true)"
            )

    def episode_specs(self, ctx: EvalContext, n: int, seed: int, ablation: str) -> list[Any]:
        from .rollout import metaworld_specs

        return metaworld_specs(ctx.info, n, ctx.split, ablation, seed)  # type: ignore[arg-type]

    def rollout(
        self,
        model: TriModalModel,
        specs: list[Any],
        ctx: EvalContext,
        cfg: SimConfig,
        ablation: str,
        label: str | None,
    ) -> list[EpisodeResult]:
        from .rollout import play

        return play(model, specs, ctx.image_size, cfg, label)

    def summarize(self, results: list[EpisodeResult], ctx: EvalContext, prefix: str = "sim") -> dict[str, float]:
        from .rollout import summarize_metaworld

        return summarize_metaworld(results, ctx.limits, prefix)

    def three_views(
        self,
        model: TriModalModel,
        ctx: EvalContext,
        episodes: list[EpisodeResult],
        projection: np.ndarray | None,
        limit: int,
    ) -> list[ThreeView]:
        from .failures import metaworld_three_views

        return metaworld_three_views(model, episodes, projection, ctx.limits, ctx.image_size, limit)
