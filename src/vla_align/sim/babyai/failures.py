"""Three-view panels for failed BabyAI evaluation episodes, rebuilt by replaying them.

Evaluation stores each episode's seed and the actions the policy took (``eval_episodes.jsonl``); BabyAI is
deterministic given both, so replaying gives back every frame and the agent's pose without storing video.
During the replay BabyAIBot is asked what it would do in each state the policy reached, which gives the
*first divergence* from the expert: the key step whose frame gets the Grad-CAM heat map.

The trajectory the physical limits apply to is the agent's pose (x, y in cells, heading in quarter turns,
unwrapped); its limits are fitted (99th percentile) on the expert's own replays of the same seeds, so a
policy that dithers (left, right, left) breaks the heading acceleration / jerk limits the expert keeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ...data.lerobot import FrameTable
from ...diagnostics.three_view import ThreeView, build_three_view, project
from ...physics import PhysicalLimits, fit_limits
from ..base import EpisodeResult

if TYPE_CHECKING:
    from ...model import TriModalModel

POSE_NAMES = ["x (cells)", "y (cells)", "heading (quarter turns)"]


def worst_failures(episodes: list[EpisodeResult], limit: int) -> list[EpisodeResult]:
    """Failed episodes, worst first: most steps wasted beyond the expert's path, then by seed."""
    failed = [r for r in episodes if not r.success]
    return sorted(failed, key=lambda r: (-(r.steps - r.expert_steps), r.seed))[:limit]


def _pose(env: Any) -> tuple[float, float, float]:
    u = env.unwrapped
    return float(u.agent_pos[0]), float(u.agent_pos[1]), float(u.agent_dir)


def _unwrap_heading(pose: np.ndarray) -> np.ndarray:
    out = pose.copy()
    out[:, 2] = np.unwrap(pose[:, 2] * (np.pi / 2)) / (np.pi / 2)  # quarter turns, no jump 3 -> 0
    return out


def replay(level: str, seed: int, actions: list[int], image_size: int, ask_expert: bool = True) -> dict[str, Any]:
    """Frames (T, H, W, 3), poses (T + 1, 3) and the expert's suggestion at each state (T,), -1 when none."""
    from minigrid.utils.baby_ai_bot import BabyAIBot

    from .env import make_env, render_frame, reset

    env = make_env(level, image_size)
    try:
        obs = reset(env, seed)
        instruction = str(obs["mission"])
        bot: Any = cast(Any, BabyAIBot)(env.unwrapped) if ask_expert else None
        frames, poses, expert = [], [_pose(env)], []
        previous: int | None = None
        for a in actions:
            frames.append(render_frame(obs, image_size))
            suggestion = -1
            if bot is not None:
                try:
                    suggestion = int(bot.replan(previous))
                except Exception:  # the bot cannot plan from some states the policy reaches
                    bot = None
            expert.append(suggestion)
            obs, _, terminated, truncated, _ = env.step(int(a))
            poses.append(_pose(env))
            previous = int(a)
            if terminated or truncated:
                break
    finally:
        env.close()
    return {
        "frames": np.stack(frames) if frames else np.zeros((0, image_size, image_size, 3), np.uint8),
        "poses": _unwrap_heading(np.asarray(poses, dtype=np.float64)),
        "expert": np.asarray(expert, dtype=np.int64),
        "instruction": instruction,
    }


def expert_limits(table: FrameTable, seeds: list[int]) -> PhysicalLimits | None:
    """Pose limits fitted on the expert demonstrations of ``seeds`` found in ``table`` (None if none are)."""
    by_seed = {int(s): e for e, s in enumerate(table.seeds)}
    poses = []
    for seed in seeds:
        e = by_seed.get(seed)
        if e is None:
            continue
        rows = slice(int(table.episode_start[e]), int(table.episode_start[e] + table.episode_length[e]))
        actions = [int(a) for a in table.actions[rows]]
        poses.append(replay(table.env_tasks[e], seed, actions, table.image_shape[0], ask_expert=False)["poses"])
    poses = [p for p in poses if len(p) >= 4]
    if not poses:
        return None
    return fit_limits(poses, 1.0 / table.fps, percentile=99.0, min_limit=0.5)


def babyai_three_views(
    model: TriModalModel,
    table: FrameTable,
    episodes: list[EpisodeResult],
    projection: np.ndarray | None,
    limit: int = 6,
) -> list[ThreeView]:
    from .env import BABYAI_ACTIONS

    chosen = worst_failures(episodes, limit)
    if not chosen:
        return []
    limits = expert_limits(table, [r.seed for r in chosen])
    history = model.cfg.policy.history if model.cfg.policy.prev_action else 1
    views = []
    for r in chosen:
        rep = replay(r.level, r.seed, r.actions, table.image_shape[0])
        frames, expert = rep["frames"], rep["expert"]
        taken = np.asarray(r.actions[: len(frames)], dtype=np.int64)
        differ = np.flatnonzero((expert >= 0) & (expert != taken))
        key = int(differ[0]) if len(differ) else len(frames) - 1
        prev = [int(taken[key - j]) if key - j >= 0 else -1 for j in range(1, history + 1)]
        heat, how = attention_heat(model, frames[key], r.instruction, prev)
        notes = [
            f"instruction: {r.instruction}",
            f"{r.steps} steps (expert {r.expert_steps}), seed {r.seed}",
            f"heat map: {how}",
        ]
        if len(differ):
            notes.append(
                f"first divergence at step {key}: policy '{BABYAI_ACTIONS[taken[key]]}', "
                f"expert '{BABYAI_ACTIONS[expert[key]]}'"
            )
        else:
            notes.append("the expert agreed with every action it could judge")
        projected = None
        channels = None
        if projection is not None:
            projected = project(_embed(model, frames), projection)
            channels = np.eye(table.action_spec.num_actions)[taken]
        views.append(
            build_three_view(
                f"seed {r.seed}: {r.instruction}",
                frames[key],
                rep["poses"][1 : len(frames) + 1],
                POSE_NAMES,
                1.0 / table.fps,
                limits,
                key_step=key,
                heat=heat,
                projected_image=projected,
                action_channels=channels,
                actions=taken,
                expert_actions=np.where(expert >= 0, expert, -1),
                action_names=list(BABYAI_ACTIONS),
                notes=notes,
            )
        )
    return views


def attention_heat(
    model: TriModalModel, frame: np.ndarray, instruction: str, prev: list[int]
) -> tuple[np.ndarray, str]:
    """(H, W) heat map in [0, 1] of what the policy looked at, and how it was made: the text-to-patch
    cross-attention for ``xattn`` fusion (chapter 5.9: attention of the instruction over image patches),
    Grad-CAM of the chosen action's logit over the conv features otherwise."""
    import torch.nn.functional as F

    from ...diagnostics.attention import policy_grad_cam, text_to_patch_map

    device = next(model.parameters()).device
    image = torch.from_numpy(frame)[None].to(device)  # (1, H, W, 3)
    previous = torch.tensor([prev], device=device)
    fusion = model.policy.fusion if model.policy is not None else None
    if fusion is not None and hasattr(fusion, "last_attention"):
        model.act_logits(image, [instruction], previous)
        attn = getattr(fusion, "last_attention", None)  # (1, L, h*w)
        h, w = (int(x) for x in model.image_encoder.patches(image).shape[2:])
        if isinstance(attn, torch.Tensor) and attn.shape[-1] == h * w:
            patch = text_to_patch_map(attn.float().cpu(), None, (h, w))  # (1, h, w), sums to 1
            up = F.interpolate(patch[None].float(), size=frame.shape[:2], mode="bilinear", align_corners=False)[0, 0]
            return (up / up.max().clamp(min=1e-12)).numpy(), "text-to-patch cross-attention"
    cam = policy_grad_cam(model, image[0], [instruction], previous)[0]
    return cam.float().cpu().numpy(), "Grad-CAM of the chosen action over the conv features"


@torch.no_grad()
def _embed(model: TriModalModel, frames: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    return model.encode_image(torch.from_numpy(frames).to(device)).float().cpu().numpy().astype(np.float64)


__all__ = ["babyai_three_views", "expert_limits", "replay", "worst_failures"]
