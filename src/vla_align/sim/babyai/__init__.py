"""BabyAI (minigrid) behind the simulator seam: bot demonstrations, lock-step closed loop with SPL,
shuffled-instruction and shuffled-image ablations, failure replays against the bot.

Importing this package registers ``babyai`` in :data:`~vla_align.sim.base.SIMULATORS`; minigrid
itself is imported only when an environment is made.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

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


@register_simulator("babyai")
class BabyAI(Simulator):
    summary = "BabyAI grid worlds (minigrid): compositional instructions, 7 discrete actions, the BabyAI bot"
    requires = ("babyai", "minigrid")
    default_image_size = 56
    closed_loop_validation = True  # a few hundred episodes take seconds

    def add_data_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--level", action="append", default=None, help="level (repeat or comma-separate to mix)")
        parser.add_argument("--episodes", type=int, default=1000, help="training episodes (1000)")
        parser.add_argument("--val-episodes", type=int, default=None, help="default: 10%% of --episodes")
        parser.add_argument("--test-episodes", type=int, default=None, help="default: 20%% of --episodes")

    def generate_from_args(self, args: argparse.Namespace) -> str:
        data = self._data_config(args)
        t0 = time.perf_counter()
        path = self.generate(data, Path(args.out), args.overwrite)
        return f"wrote {sum(data.episodes.values())} episodes {data.episodes} to {path} in {time.perf_counter() - t0:.1f} s"

    def _data_config(self, args: argparse.Namespace) -> DataConfig:
        counts = default_split_counts(args.episodes, args.val_episodes, args.test_episodes)
        levels = tuple(lv for item in (args.level or ["GoToLocal"]) for lv in item.split(",") if lv)
        return DataConfig(
            source=self.name,
            levels=levels,
            train_episodes=counts["train"],
            val_episodes=counts["val"],
            test_episodes=counts["test"],
            image_size=self.default_image_size if args.image_size is None else args.image_size,
            seed=args.seed,
            path=str(args.out),
        )

    def generate(self, data: DataConfig, out: Path, overwrite: bool = False) -> Path:
        from .generate import generate_babyai

        return generate_babyai(out, list(data.levels), data.episodes, data.seed, data.image_size, overwrite)

    def describes(self, data: DataConfig, info: Mapping[str, Any]) -> bool:
        from .env import env_id

        own = info.get("vla_align", {})
        start, splits = 0, {}
        for name, n in data.episodes.items():
            splits[name] = f"{start}:{start + n}"
            start += n
        return bool(
            own.get("seed") == data.seed
            and own.get("image_size") == data.image_size
            and info.get("splits") == splits
            and own.get("levels") == [env_id(x) for x in data.levels]
        )

    def ablations(self, ctx: EvalContext) -> tuple[str, ...]:
        return ("shuffle_text", "shuffle_image") if ctx.table is not None else ("shuffle_text",)

    def check_policy(self, model: TriModalModel) -> None:
        super().check_policy(model)
        if model.continuous:
            raise UserError("BabyAI takes discrete actions; this run's policy is continuous")

    def episode_specs(self, ctx: EvalContext, n: int, seed: int, ablation: str) -> list[Any]:
        from .rollout import episode_specs, held_out_from_description, held_out_from_table

        if ctx.table is not None:
            held = held_out_from_table(ctx.table)
        else:
            key = (ctx.split, ctx.image_size)
            if ctx.cache.get("babyai_held_out_key") != key:  # the bot runs once per evaluation
                ctx.cache["babyai_held_out"] = held_out_from_description(ctx.info, ctx.split, ctx.image_size)
                ctx.cache["babyai_held_out_key"] = key
            held = ctx.cache["babyai_held_out"]
        return episode_specs(held, n, seed, ablation)  # type: ignore[arg-type]

    def rollout(
        self,
        model: TriModalModel,
        specs: list[Any],
        ctx: EvalContext,
        cfg: SimConfig,
        ablation: str,
        label: str | None,
    ) -> list[EpisodeResult]:
        from .rollout import model_policy, parallel_rollout, rollout

        if ablation == "shuffle_image" and ctx.table is None:
            raise UserError("the shuffled-image ablation needs the dataset's frames; pass the dataset with --data")
        if cfg.workers > 1 and len(specs) > 1:
            return parallel_rollout(model, specs, ctx.table, ctx.image_size, cfg, ablation, label)  # type: ignore[arg-type]
        policy_cfg = model.cfg.policy
        history = policy_cfg.history if policy_cfg.prev_action else 1
        with torch.no_grad():
            return rollout(
                model_policy(model),
                specs,
                ctx.image_size,
                cfg,
                policy_cfg.execute,
                ctx.table,
                ablation,  # type: ignore[arg-type]
                description=label,
                history=history,
            )

    def summarize(self, results: list[EpisodeResult], ctx: EvalContext, prefix: str = "sim") -> dict[str, float]:
        from .rollout import summarize

        return summarize(results, prefix)

    def three_views(
        self,
        model: TriModalModel,
        ctx: EvalContext,
        episodes: list[EpisodeResult],
        projection: np.ndarray | None,
        limit: int,
    ) -> list[ThreeView]:
        from .failures import babyai_three_views

        if ctx.table is None:  # the expert's limits come from the demonstrations
            return []
        return babyai_three_views(model, ctx.table, episodes, projection, limit)
