"""A simulator defined entirely outside ``src/``: "reach the coloured target" on a small 2-D arena.

It exists to prove the simulator seam (``vla_align.sim.base``): importing this module registers
``reach2d``, after which ``vla-align data reach2d``, training, closed-loop evaluation from the
checkpoint alone and the report's failure panels work with no edit to vla-align. The guide uses it
as the worked example of adding a simulator.

The arena is a ``GRID`` x ``GRID`` board with three targets of different colours and the agent (a
white cell). The instruction names one colour; the agent moves one cell per step (up, down, left,
right) and succeeds on reaching that target's cell. The expert is exact: it closes the larger of the
two coordinate gaps first, so its path length is the Manhattan distance (the SPL reference).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_align.data.episode import ActionSpec, Episode
from vla_align.data.lerobot import write_dataset
from vla_align.data.splits import SPLITS, check_split_counts, split_layout, split_seed
from vla_align.diagnostics.three_view import ThreeView, build_three_view
from vla_align.model import TriModalModel
from vla_align.sim.base import (
    DataConfig,
    EpisodeResult,
    EvalContext,
    SimConfig,
    Simulator,
    default_split_counts,
    derange,
    register_simulator,
)

GRID = 5
ACTIONS = ["up", "down", "left", "right"]
MOVES = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}  # (dx, dy) in cells
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230)}
ACTION_SPEC = ActionSpec(kind="discrete", num_actions=len(ACTIONS), names=list(ACTIONS))
MAX_STEPS = 4 * GRID


@dataclass
class Arena:
    """One episode's layout, a deterministic function of its env seed."""

    agent: tuple[int, int]
    targets: dict[str, tuple[int, int]]
    goal: str

    @classmethod
    def from_seed(cls, seed: int) -> Arena:
        rng = np.random.default_rng(seed)
        cells = rng.choice(GRID * GRID, size=1 + len(COLOURS), replace=False)
        xy = [(int(c) % GRID, int(c) // GRID) for c in cells]
        targets = dict(zip(COLOURS, xy[1:], strict=True))
        return cls(agent=xy[0], targets=targets, goal=str(rng.choice(list(COLOURS))))

    @property
    def instruction(self) -> str:
        return f"reach the {self.goal} target"

    def expert_action(self) -> int:
        (ax, ay), (gx, gy) = self.agent, self.targets[self.goal]
        if abs(gx - ax) >= abs(gy - ay):
            return 3 if gx > ax else 2
        return 1 if gy > ay else 0

    def step(self, action: int) -> bool:
        dx, dy = MOVES[int(action)]
        x, y = self.agent
        self.agent = (min(GRID - 1, max(0, x + dx)), min(GRID - 1, max(0, y + dy)))
        return self.done

    @property
    def done(self) -> bool:
        return self.agent == self.targets[self.goal]

    def expert_steps(self) -> int:
        (ax, ay), (gx, gy) = self.agent, self.targets[self.goal]
        return abs(gx - ax) + abs(gy - ay)

    def render(self, size: int) -> np.ndarray:
        cell = size // GRID
        img = np.full((GRID * cell, GRID * cell, 3), 30, dtype=np.uint8)
        for colour, (x, y) in self.targets.items():
            img[y * cell : (y + 1) * cell, x * cell : (x + 1) * cell] = COLOURS[colour]
        x, y = self.agent
        pad = max(1, cell // 4)
        img[y * cell + pad : (y + 1) * cell - pad, x * cell + pad : (x + 1) * cell - pad] = 255
        out = np.zeros((size, size, 3), dtype=np.uint8)
        out[: img.shape[0], : img.shape[1]] = img
        return out  # (size, size, 3)


def expert_episode(seed: int, image_size: int) -> Episode:
    arena = Arena.from_seed(seed)
    frames, actions = [], []
    while not arena.done and len(actions) < MAX_STEPS:
        frames.append(arena.render(image_size))
        actions.append(arena.expert_action())
        arena.step(actions[-1])
    if not actions:  # the agent starts on the target: one "up" so the episode has a step
        frames.append(arena.render(image_size))
        actions.append(0)
    return Episode(
        frames=np.stack(frames),
        actions=np.asarray(actions, dtype=np.int64),
        instruction=Arena.from_seed(seed).instruction,
        task="reach2d",
        fps=1.0,
        seed=seed,
        success=True,
    )


@dataclass
class Spec:
    seed: int
    instruction: str
    shown_instruction: str
    expert_steps: int


@register_simulator("reach2d")
class Reach2D(Simulator):
    summary = "reach the coloured target on a 5 x 5 arena (the test suite's example simulator)"
    default_image_size = 30
    closed_loop_validation = True

    def add_data_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--episodes", type=int, default=200, help="training episodes (200)")

    def generate_from_args(self, args: argparse.Namespace) -> str:
        counts = default_split_counts(args.episodes, None, None)
        data = DataConfig(
            source=self.name,
            levels=("reach2d",),
            train_episodes=counts["train"],
            val_episodes=counts["val"],
            test_episodes=counts["test"],
            image_size=self.default_image_size if args.image_size is None else args.image_size,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        path = self.generate(data, Path(args.out), args.overwrite)
        return f"wrote {data.episodes} episodes to {path} in {time.perf_counter() - t0:.1f} s"

    def generate(self, data: DataConfig, out: Path, overwrite: bool = False) -> Path:
        counts = check_split_counts(data.episodes, data.seed)
        splits, split_seeds, total = split_layout(data.seed, counts)
        stream = (
            expert_episode(split_seed(data.seed, s, i), data.image_size) for s in SPLITS for i in range(counts[s])
        )
        extra = {"source": self.name, "seed": data.seed, "image_size": data.image_size, "split_seeds": split_seeds}
        return write_dataset(
            out,
            stream,
            action_spec=ACTION_SPEC,
            fps=1.0,
            splits=splits,
            robot_type="reach2d",
            extra=extra,
            overwrite=overwrite,
            total_episodes=total,
        )

    def describes(self, data: DataConfig, info: Mapping[str, Any]) -> bool:
        own = info.get("vla_align", {})
        counts = {s: b - a + 1 for s, (a, b) in (own.get("split_seeds") or {}).items()}
        return own.get("seed") == data.seed and own.get("image_size") == data.image_size and counts == data.episodes

    def episode_specs(self, ctx: EvalContext, n: int, seed: int, ablation: str) -> list[Any]:
        first, last = ctx.info["split_seeds"][ctx.split]  # the description alone: no frames needed
        seeds = list(range(int(first), int(last) + 1))
        rng = np.random.default_rng(seed)
        chosen = seeds if n >= len(seeds) else sorted(int(s) for s in rng.choice(seeds, size=n, replace=False))
        arenas = [Arena.from_seed(s) for s in chosen]
        texts = [a.instruction for a in arenas]
        shown = derange(texts, rng) if ablation == "shuffle_text" else texts
        return [
            Spec(s, t, shown_t, max(1, a.expert_steps()))
            for s, t, shown_t, a in zip(chosen, texts, shown, arenas, strict=True)
        ]

    def rollout(
        self,
        model: TriModalModel,
        specs: list[Any],
        ctx: EvalContext,
        cfg: SimConfig,
        ablation: str,
        label: str | None,
    ) -> list[EpisodeResult]:
        """All episodes in lock-step: one batched policy call per step for every unfinished one."""
        arenas = [Arena.from_seed(s.seed) for s in specs]
        history = model.cfg.policy.history if model.cfg.policy.prev_action else 1
        prev = np.full((len(specs), history), -1, dtype=np.int64)
        taken: list[list[int]] = [[] for _ in specs]
        live = [not a.done for a in arenas]
        limit = cfg.max_steps or MAX_STEPS
        with torch.no_grad():
            for _ in range(limit):
                idx = [i for i, alive in enumerate(live) if alive]
                if not idx:
                    break
                frames = torch.from_numpy(np.stack([arenas[i].render(ctx.image_size) for i in idx]))
                texts = [specs[i].shown_instruction for i in idx]
                logits = model.act_logits(frames, texts, torch.from_numpy(prev[idx]))
                for i, a in zip(idx, logits[:, 0].argmax(-1).tolist(), strict=True):
                    taken[i].append(int(a))
                    prev[i] = np.roll(prev[i], 1)
                    prev[i, 0] = int(a)
                    live[i] = not arenas[i].step(int(a))
        return [
            EpisodeResult(s.seed, "reach2d", s.instruction, a.done, len(t), s.expert_steps, t)
            for s, a, t in zip(specs, arenas, taken, strict=True)
        ]

    def summarize(self, results: list[EpisodeResult], ctx: EvalContext, prefix: str = "sim") -> dict[str, float]:
        out = {
            f"{prefix}/success_rate": float(np.mean([r.success for r in results])),
            f"{prefix}/spl": float(np.mean([r.spl for r in results])),
            f"{prefix}/episodes": float(len(results)),
            f"{prefix}/mean_steps": float(np.mean([r.steps for r in results])),
        }
        for colour in COLOURS:
            hits = [r.success for r in results if colour in r.instruction]
            if hits:
                out[f"{prefix}/by_colour/{colour}/success_rate"] = float(np.mean(hits))
        return out

    def three_views(
        self,
        model: TriModalModel,
        ctx: EvalContext,
        episodes: list[EpisodeResult],
        projection: np.ndarray | None,
        limit: int,
    ) -> list[ThreeView]:
        """Replay each failure with the expert's suggestion at every state the policy reached."""
        failed = sorted((r for r in episodes if not r.success), key=lambda r: (-r.steps, r.seed))[:limit]
        views = []
        for r in failed:
            arena = Arena.from_seed(r.seed)
            frames, poses, expert = [], [arena.agent], []
            for a in r.actions:
                frames.append(arena.render(ctx.image_size))
                expert.append(arena.expert_action())
                arena.step(a)
                poses.append(arena.agent)
            taken = np.asarray(r.actions, dtype=np.int64)
            differ = np.flatnonzero(np.asarray(expert) != taken)
            key = int(differ[0]) if len(differ) else len(frames) - 1
            views.append(
                build_three_view(
                    f"seed {r.seed}: {r.instruction}",
                    frames[key],
                    np.asarray(poses[1:], dtype=np.float64),
                    ["x (cells)", "y (cells)"],
                    1.0,
                    None,
                    key_step=key,
                    actions=taken,
                    expert_actions=np.asarray(expert, dtype=np.int64),
                    action_names=list(ACTIONS),
                    notes=[f"instruction: {r.instruction}", f"{r.steps} steps (expert {r.expert_steps})"],
                )
            )
        return views
