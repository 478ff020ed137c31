"""BabyAI closed loop (chapter 5.8): held-out episodes, the batched lock-step rollout, summaries.

The episodes are the held-out split's own: each evaluation episode replays the env seed of one
held-out demonstration, so the expert's path length on that seed (the demonstration's length) is
the SPL reference, and the instruction is known before the episode starts (needed to shuffle it).
Without the dataset on disk, :func:`held_out_from_description` rebuilds the same list by running
the bot on the split's env seeds (the generator's seeding scheme, ``data.splits``).

``rollout`` steps a pool of environments in lock-step and asks the policy for all of them in one
batch (one forward per decision step, not per env). With ``workers`` > 1, ``parallel_rollout``
splits the episodes over that many processes (spawned, one torch thread each), each running its
own lock-step pool with a copy of the model, and merges the results in episode order: the
environments' Python stepping and rendering then run on every core, not one. The two ablations of
the chapter's modality check replace what the policy sees, never what the env does:

* ``shuffle_text``: every episode gets the instruction of another episode with a different string;
* ``shuffle_image``: every observation is replaced by a frame of another held-out episode (needs the
  dataset's frames).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ...data.lerobot import FrameTable
from ...data.splits import split_seed
from ...errors import UserError
from ...progress import console, progress_bar
from ..base import EpisodeResult, SimConfig, derange, inference_autocast, model_parts, rebuild_model

if TYPE_CHECKING:
    from ...model import TriModalModel

Ablation = Literal["none", "shuffle_text", "shuffle_image"]
# A policy maps (frames (N, H, W, 3) uint8, N instructions, (N, h) previous action ids) -> (N, k) ids.
PolicyFn = Callable[[np.ndarray, list[str], np.ndarray], np.ndarray]

COLOURS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS = ("ball", "box", "key", "door")


@dataclass
class EpisodeSpec:
    seed: int
    level: str
    instruction: str
    expert_steps: int
    shown_instruction: str  # what the policy is told
    image_episode: int  # shuffle_image: index of another episode whose frames replace the view


@dataclass
class HeldOut:
    """The demonstrations of a held-out split, one entry per episode (in dataset order)."""

    where: str  # names the source in messages
    seeds: np.ndarray  # (E,) int64 env seeds, -1 when unknown
    levels: list[str]  # (E,) env ids
    instructions: list[str]  # (E,)
    success: np.ndarray  # (E,) bool: the expert solved it
    lengths: np.ndarray  # (E,) int64 expert steps


def held_out_from_table(table: FrameTable) -> HeldOut:
    return HeldOut(
        str(table.root), table.seeds, table.env_tasks, table.instructions, table.success, table.episode_length
    )


def held_out_from_description(info: Mapping[str, Any], split: str, image_size: int) -> HeldOut:
    """The held-out episodes of a generated dataset rebuilt from its description alone: episode ``i``
    plays ``levels[i % len(levels)]`` with env seed ``split_seed(seed, split, i)``, and the bot is run
    on it again for the instruction, its success and its path length (no frames are kept)."""
    from .env import bot_episode, make_env

    levels = list(info.get("levels") or [])
    bounds = (info.get("split_seeds") or {}).get(split)
    if not levels or not bounds:
        raise UserError(
            f"the run's dataset description has no BabyAI {split!r} split (levels / split_seeds); "
            "pass the dataset with --data"
        )
    n = int(bounds[1]) - int(bounds[0]) + 1
    seeds = [split_seed(int(info["seed"]), split, i) for i in range(n)]
    envs = {lv: make_env(lv, image_size) for lv in dict.fromkeys(levels)}
    try:
        demos = [bot_episode(envs[levels[i % len(levels)]], s, image_size) for i, s in enumerate(seeds)]
    finally:
        for env in envs.values():
            env.close()
    return HeldOut(
        f"the run's {split} split (rebuilt from its description)",
        np.asarray(seeds, dtype=np.int64),
        [levels[i % len(levels)] for i in range(n)],
        [d.instruction for d in demos],
        np.asarray([d.success for d in demos], dtype=bool),
        np.asarray([len(d.actions) for d in demos], dtype=np.int64),
    )


def episode_specs(held: HeldOut, n: int, seed: int, ablation: Ablation = "none") -> list[EpisodeSpec]:
    """``n`` held-out episodes (those the expert solved), deterministic for ``seed``."""
    ok = np.flatnonzero(held.success & (held.seeds >= 0))
    if len(ok) == 0:
        raise UserError(f"{held.where}: no successful demonstration with a recorded env seed to replay")
    rng = np.random.default_rng(seed)
    if n > len(ok) and ablation == "none":  # said once per evaluation, not per ablation
        console.print(
            f"{held.where}: {n} closed-loop episodes asked for, but the split has {len(ok)} replayable "
            f"demonstrations (solved, with an env seed); running {len(ok)}"
        )
    chosen = ok if n >= len(ok) else np.sort(rng.choice(ok, size=n, replace=False))
    instructions = [held.instructions[e] for e in chosen]
    shown = list(instructions)
    if ablation == "shuffle_text":
        shown = derange(instructions, rng)
    image_episodes = np.zeros(len(chosen), dtype=np.int64)
    if ablation == "shuffle_image":
        for i, e in enumerate(chosen):
            other = int(rng.choice(ok[ok != e])) if len(ok) > 1 else int(e)
            image_episodes[i] = other  # the frame inside it is drawn per step
    return [
        EpisodeSpec(
            seed=int(held.seeds[e]),
            level=held.levels[e],
            instruction=instructions[i],
            expert_steps=int(held.lengths[e]),
            shown_instruction=shown[i],
            image_episode=int(image_episodes[i]),
        )
        for i, e in enumerate(chosen)
    ]


@dataclass
class _Slot:
    """One environment of the pool and the episode it is playing."""

    i: int  # index into the specs
    env: Any
    obs: dict[str, Any]
    prev: list[int]  # the last actions, most recent first (-1 before the start)
    limit: int
    queue: list[int] = field(default_factory=list)  # actions of the current chunk still to play
    taken: list[int] = field(default_factory=list)
    steps: int = 0


class _LockStep:
    """A pool of ``cfg.envs`` environments stepped together; a finished slot takes the next spec."""

    def __init__(
        self,
        specs: list[EpisodeSpec],
        image_size: int,
        cfg: SimConfig,
        history: int,
        table: FrameTable | None,
        ablation: Ablation,
    ) -> None:
        if ablation == "shuffle_image" and table is None:
            raise ValueError("shuffle_image needs the dataset table for replacement frames")
        self.specs, self.image_size, self.cfg, self.history = specs, image_size, cfg, history
        self.table = table if ablation == "shuffle_image" else None
        self.rng = np.random.default_rng(cfg.seed + 1)
        self.envs: dict[tuple[int, str], Any] = {}
        self.results: list[EpisodeResult | None] = [None] * len(specs)
        self.pending = list(range(len(specs)))[::-1]
        self.slots: list[_Slot | None] = [None] * min(cfg.envs, len(specs))
        for s in range(len(self.slots)):
            self.start(s)

    def start(self, slot: int) -> None:
        from .env import make_env, reset

        i = self.pending.pop()
        spec = self.specs[i]
        env = self.envs.get((slot, spec.level))
        if env is None:
            env = self.envs[(slot, spec.level)] = make_env(spec.level, self.image_size)
        obs = reset(env, spec.seed)
        limit = self.cfg.max_steps or int(env.unwrapped.max_steps)
        self.slots[slot] = _Slot(i=i, env=env, obs=obs, prev=[-1] * self.history, limit=limit)

    def view(self, st: _Slot) -> np.ndarray:
        """What the policy sees: the env's frame, or a random frame of another episode (shuffle_image)."""
        from .env import render_frame

        if self.table is None:
            return render_frame(st.obs, self.image_size)
        e = self.specs[st.i].image_episode
        row = self.table.episode_start[e] + int(self.rng.integers(self.table.episode_length[e]))
        return np.asarray(self.table.frames[row])

    def decide(self, policy: PolicyFn, execute: int) -> None:
        """One batched policy call for every slot whose chunk is used up."""
        deciding = [st for st in self.slots if st is not None and not st.queue]
        if not deciding:
            return
        frames = np.stack([self.view(st) for st in deciding])
        texts = [self.specs[st.i].shown_instruction for st in deciding]
        prev = np.asarray([st.prev for st in deciding], dtype=np.int64).reshape(len(texts), self.history)
        chunks = policy(frames, texts, prev)  # (N, k)
        for st, chunk in zip(deciding, chunks, strict=True):
            st.queue = [int(a) for a in chunk[:execute]]

    def step(self) -> int:
        """Every live env takes its next action; returns how many episodes finished."""
        finished = 0
        for s, st in enumerate(self.slots):
            if st is None:
                continue
            action = st.queue.pop(0)
            st.obs, reward, terminated, truncated, _ = st.env.step(action)
            st.prev, st.steps = [action, *st.prev[:-1]], st.steps + 1
            st.taken.append(action)
            if terminated or truncated or st.steps >= st.limit:
                spec = self.specs[st.i]
                success = bool(terminated and reward > 0)
                self.results[st.i] = EpisodeResult(
                    spec.seed, spec.level, spec.instruction, success, st.steps, spec.expert_steps, st.taken
                )
                finished += 1
                self.slots[s] = None
                if self.pending:
                    self.start(s)
        return finished

    def close(self) -> list[EpisodeResult]:
        for env in self.envs.values():
            env.close()
        return [r for r in self.results if r is not None]


def rollout(
    policy: PolicyFn,
    specs: list[EpisodeSpec],
    image_size: int,
    cfg: SimConfig,
    execute: int = 1,
    table: FrameTable | None = None,
    ablation: Ablation = "none",
    description: str | None = "rollout",
    history: int = 1,
) -> list[EpisodeResult]:
    """Play every spec once with ``policy`` (the first ``execute`` actions of each predicted chunk),
    telling it the last ``history`` actions of each episode (most recent first, -1 before the start).

    ``description`` labels the progress output; ``None`` runs silently.
    """
    pool = _LockStep(specs, image_size, cfg, history, table, ablation)
    with progress_bar(description or "", len(specs), silent=description is None) as bar:
        while any(slot is not None for slot in pool.slots):
            pool.decide(policy, execute)
            bar.advance(pool.step())
    return pool.close()


def summarize(results: list[EpisodeResult], prefix: str = "sim") -> dict[str, float]:
    """``sim/success_rate``, ``sim/spl``, ``sim/episodes``, ``sim/mean_steps`` and per-word breakdowns."""
    if not results:
        return {}
    out: dict[str, float] = {
        f"{prefix}/success_rate": float(np.mean([r.success for r in results])),
        f"{prefix}/spl": float(np.mean([r.spl for r in results])),
        f"{prefix}/episodes": float(len(results)),
        f"{prefix}/mean_steps": float(np.mean([r.steps for r in results])),
        f"{prefix}/expert_mean_steps": float(np.mean([r.expert_steps for r in results])),
    }
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        words = set(re.findall(r"[a-z]+", r.instruction.lower()))
        for c in COLOURS:
            if c in words:
                groups[f"by_colour/{c}"].append(r.success)
        for o in OBJECTS:
            if o in words:
                groups[f"by_object/{o}"].append(r.success)
        if len({r.level for r in results}) > 1:
            groups[f"by_level/{r.level}"].append(r.success)
    for name, values in sorted(groups.items()):
        out[f"{prefix}/{name}/success_rate"] = float(np.mean(values))
        out[f"{prefix}/{name}/episodes"] = float(len(values))
    return out


def model_policy(model: TriModalModel) -> PolicyFn:
    """Greedy actions of a TriModalModel's policy head, batched on the model's device."""
    device = next(model.parameters()).device

    def act(frames: np.ndarray, texts: list[str], prev: np.ndarray) -> np.ndarray:
        image = torch.from_numpy(frames).to(device)
        logits = model.act_logits(image, texts, torch.from_numpy(prev).to(device))
        return logits.argmax(-1).cpu().numpy()  # (N, k)

    return act


@dataclass
class _Job:
    """What one worker process needs: the model (config + weights) and its share of episodes."""

    model_config: dict[str, Any]
    action_spec: dict[str, Any]
    weights: dict[str, torch.Tensor]
    specs: list[EpisodeSpec]
    image_size: int
    cfg: SimConfig
    frames: FrameTable | None  # shuffle_image: only the replacement episodes' frames
    ablation: Ablation
    state_dim: int = 0
    device: str = "cpu"  # where the worker's copy of the model runs (the evaluating model's device)


def _run_job(job: _Job) -> list[EpisodeResult]:
    model = rebuild_model(job.model_config, job.action_spec, job.state_dim, job.weights, job.device)
    policy_cfg = model.cfg.policy
    history = policy_cfg.history if policy_cfg.prev_action else 1
    with torch.no_grad(), inference_autocast(job.device):
        return rollout(
            model_policy(model),
            job.specs,
            job.image_size,
            job.cfg,
            policy_cfg.execute,
            job.frames,
            job.ablation,
            description=None,
            history=history,
        )


def _with_own_frames(specs: list[EpisodeSpec], table: FrameTable) -> tuple[list[EpisodeSpec], FrameTable]:
    """The replacement episodes' frames as a small table, and specs re-pointed into it."""
    from dataclasses import replace

    episodes = sorted({s.image_episode for s in specs})
    index = {e: k for k, e in enumerate(episodes)}
    lengths = table.episode_length[episodes]
    rows = np.concatenate(
        [np.arange(table.episode_start[e], table.episode_start[e] + table.episode_length[e]) for e in episodes]
    )
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    small = replace(
        table, frames=table.frames[rows], episode_start=starts, episode_length=lengths, actions=table.actions[rows]
    )
    return [replace(s, image_episode=index[s.image_episode]) for s in specs], small


def parallel_rollout(
    model: TriModalModel,
    specs: list[EpisodeSpec],
    table: FrameTable | None,
    image_size: int,
    cfg: SimConfig,
    ablation: Ablation = "none",
    description: str | None = "rollout",
) -> list[EpisodeResult]:
    """``rollout`` over ``cfg.workers`` spawned processes; results in the order of ``specs``.

    Episode i goes to worker i mod workers, so every worker gets a similar mix of levels and lengths.
    """
    import multiprocessing

    workers = min(cfg.workers, len(specs))
    parts = model_parts(model)
    jobs = []
    for w in range(workers):
        part = specs[w::workers]
        frames = None
        if ablation == "shuffle_image" and table is not None:  # ship only the frames this worker can show
            part, frames = _with_own_frames(part, table)
        jobs.append(_Job(**parts, specs=part, image_size=image_size, cfg=cfg, frames=frames, ablation=ablation))
    results: list[EpisodeResult | None] = [None] * len(specs)
    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    with progress_bar(description or "", workers, silent=description is None) as bar, ctx.Pool(workers) as pool:
        for w, done in enumerate(pool.imap(_run_job, jobs)):
            results[w::workers] = done
            bar.advance(1)
    return [r for r in results if r is not None]
