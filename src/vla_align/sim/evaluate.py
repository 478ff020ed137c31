"""Closed-loop evaluation in the simulator (chapter 5.8): success rate, SPL, episode length.

The episodes are the held-out split's own: each evaluation episode replays the env seed of one
held-out demonstration, so the expert's path length on that seed (the demonstration's length) is
the SPL reference, and the instruction is known before the episode starts (needed to shuffle it).

``rollout`` steps a pool of environments in lock-step and asks the policy for all of them in one
batch (one forward per decision step, not per env). With ``workers`` > 1, ``evaluate_policy``
splits the episodes over that many processes (spawned, one torch thread each), each running its
own lock-step pool with a copy of the model, and merges the results in episode order: the
environments' Python stepping and rendering then run on every core, not one. The two ablations of the chapter's modality
check replace what the policy sees, never what the env does:

* ``shuffle_text``: every episode gets the instruction of another episode with a different string;
* ``shuffle_image``: every observation is replaced by a frame of another held-out episode.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ..data.lerobot import FrameTable
from ..errors import ConfigError, UserError
from ..progress import progress_bar

if TYPE_CHECKING:
    from ..model import TriModalModel

Ablation = Literal["none", "shuffle_text", "shuffle_image"]
# A policy maps (frames (N, H, W, 3) uint8, N instructions, (N, h) previous action ids) -> (N, k) ids.
PolicyFn = Callable[[np.ndarray, list[str], np.ndarray], np.ndarray]

COLOURS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS = ("ball", "box", "key", "door")


@dataclass
class SimConfig:
    episodes: int = 0  # closed-loop episodes from the held-out split (0 = none)
    split: str = "test"
    envs: int = 64  # environments stepped together (one batched policy call per step)
    workers: int = 1  # processes the episodes are split over (each steps its own pool of envs)
    max_steps: int = 0  # per-episode cap; 0 = the level's own limit
    ablations: bool = True  # also run shuffle_text and shuffle_image
    seed: int = 0  # which held-out episodes (when fewer than the split holds) and shuffles

    def __post_init__(self) -> None:
        if self.episodes < 0 or self.envs < 1 or self.max_steps < 0:
            raise ConfigError("eval.sim: episodes >= 0, envs >= 1 and max_steps >= 0 are required")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"eval.sim.workers must be in 1..64, got {self.workers}")


@dataclass
class EpisodeResult:
    seed: int
    level: str
    instruction: str  # the real instruction (not the shuffled one)
    success: bool
    steps: int
    expert_steps: int
    actions: list[Any] = field(default_factory=list)  # what the policy did (ids or vectors), to replay it

    @property
    def spl(self) -> float:
        return float(self.success) * self.expert_steps / max(self.expert_steps, self.steps)


@dataclass
class EpisodeSpec:
    seed: int
    level: str
    instruction: str
    expert_steps: int
    shown_instruction: str  # what the policy is told
    image_episode: int  # shuffle_image: index of another episode whose frames replace the view


def episode_specs(table: FrameTable, n: int, seed: int, ablation: Ablation = "none") -> list[EpisodeSpec]:
    """``n`` held-out episodes (those the expert solved), deterministic for ``seed``."""
    ok = np.flatnonzero(table.success & (table.seeds >= 0))
    if len(ok) == 0:
        raise UserError(f"{table.root}: no successful demonstration with a recorded env seed to replay")
    rng = np.random.default_rng(seed)
    chosen = ok if n >= len(ok) else np.sort(rng.choice(ok, size=n, replace=False))
    instructions = [table.instructions[e] for e in chosen]
    shown = list(instructions)
    if ablation == "shuffle_text":
        shown = _derange(instructions, rng)
    image_episodes = np.zeros(len(chosen), dtype=np.int64)
    if ablation == "shuffle_image":
        for i, e in enumerate(chosen):
            other = int(rng.choice(ok[ok != e])) if len(ok) > 1 else int(e)
            image_episodes[i] = other  # the frame inside it is drawn per step
    return [
        EpisodeSpec(
            seed=int(table.seeds[e]),
            level=table.env_tasks[e],
            instruction=instructions[i],
            expert_steps=int(table.episode_length[e]),
            shown_instruction=shown[i],
            image_episode=int(image_episodes[i]),
        )
        for i, e in enumerate(chosen)
    ]


def _derange(texts: list[str], rng: np.random.Generator) -> list[str]:
    """A shuffle in which no episode keeps an instruction equal to its own (when possible)."""
    order = rng.permutation(len(texts))
    out = [texts[j] for j in order]
    for i in range(len(out)):
        if out[i] == texts[i]:
            for j in range(len(out)):
                if out[j] != texts[i] and out[i] != texts[j]:
                    out[i], out[j] = out[j], out[i]
                    break
    return out


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
    from .babyai import make_env, render_frame, reset

    if ablation == "shuffle_image" and table is None:
        raise ValueError("shuffle_image needs the dataset table for replacement frames")
    rng = np.random.default_rng(cfg.seed + 1)
    envs: dict[tuple[int, str], Any] = {}
    results: list[EpisodeResult | None] = [None] * len(specs)
    pending = list(range(len(specs)))[::-1]
    slots: list[dict[str, Any] | None] = [None] * min(cfg.envs, len(specs))

    def start(slot: int) -> None:
        i = pending.pop()
        spec = specs[i]
        key = (slot, spec.level)
        if key not in envs:
            envs[key] = make_env(spec.level, image_size)
        env = envs[key]
        obs = reset(env, spec.seed)
        limit = cfg.max_steps or int(env.unwrapped.max_steps)
        slots[slot] = {
            "i": i,
            "env": env,
            "obs": obs,
            "prev": [-1] * history,
            "queue": [],
            "steps": 0,
            "limit": limit,
            "taken": [],
        }

    for s in range(len(slots)):
        start(s)
    with progress_bar(description or "", len(specs), silent=description is None) as bar:
        while any(slot is not None for slot in slots):
            deciding = [s for s, st in enumerate(slots) if st is not None and not st["queue"]]
            if deciding:
                frames, texts, prev = [], [], []
                for s in deciding:
                    st = slots[s]
                    assert st is not None
                    spec = specs[st["i"]]
                    if ablation == "shuffle_image" and table is not None:
                        e = spec.image_episode
                        row = table.episode_start[e] + int(rng.integers(table.episode_length[e]))
                        frames.append(table.frames[row])
                    else:
                        frames.append(render_frame(st["obs"], image_size))
                    texts.append(spec.shown_instruction)
                    prev.append(st["prev"])
                chunks = policy(
                    np.stack(frames), texts, np.asarray(prev, dtype=np.int64).reshape(len(texts), history)
                )  # (N, k)
                for s, chunk in zip(deciding, chunks, strict=True):
                    st = slots[s]
                    assert st is not None
                    st["queue"] = [int(a) for a in chunk[:execute]]
            for s, st in enumerate(slots):
                if st is None:
                    continue
                action = st["queue"].pop(0)
                st["obs"], reward, terminated, truncated, _ = st["env"].step(action)
                st["prev"], st["steps"] = [action, *st["prev"][:-1]], st["steps"] + 1
                st["taken"].append(action)
                if terminated or truncated or st["steps"] >= st["limit"]:
                    spec = specs[st["i"]]
                    results[st["i"]] = EpisodeResult(
                        seed=spec.seed,
                        level=spec.level,
                        instruction=spec.instruction,
                        success=bool(terminated and reward > 0),
                        steps=st["steps"],
                        expert_steps=spec.expert_steps,
                        actions=st["taken"],
                    )
                    bar.advance(1)
                    slots[s] = None
                    if pending:
                        start(s)
    for env in envs.values():
        env.close()
    return [r for r in results if r is not None]


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


def model_parts(model: TriModalModel) -> dict[str, Any]:
    """What a spawned worker needs to rebuild ``model``: config, action spec, state size, CPU weights."""
    from .. import config as config_lib

    return {
        "model_config": config_lib.to_dict(model.cfg),
        "action_spec": model.action_spec.to_dict(),
        "state_dim": model.state_dim,
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def rebuild_model(
    model_config: dict[str, Any], action_spec: dict[str, Any], state_dim: int, weights: dict[str, torch.Tensor]
) -> TriModalModel:
    """The inverse of :func:`model_parts`, in a worker process: one torch thread, eval mode."""
    from .. import config as config_lib
    from ..data.episode import ActionSpec
    from ..model import ModelConfig

    torch.set_num_threads(1)
    model = config_lib.from_dict(ModelConfig, model_config).build(ActionSpec.from_dict(action_spec), state_dim)
    model.load_state_dict(weights)
    return model.eval()


def _run_job(job: _Job) -> list[EpisodeResult]:
    model = rebuild_model(job.model_config, job.action_spec, job.state_dim, job.weights)
    policy_cfg = model.cfg.policy
    history = policy_cfg.history if policy_cfg.prev_action else 1
    with torch.no_grad():
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
    table: FrameTable,
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
        if ablation == "shuffle_image":  # ship only the frames this worker can show
            part, frames = _with_own_frames(part, table)
        jobs.append(
            _Job(**parts, specs=part, image_size=table.image_shape[0], cfg=cfg, frames=frames, ablation=ablation)
        )
    results: list[EpisodeResult | None] = [None] * len(specs)
    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    with progress_bar(description or "", workers, silent=description is None) as bar, ctx.Pool(workers) as pool:
        for w, done in enumerate(pool.imap(_run_job, jobs)):
            results[w::workers] = done
            bar.advance(1)
    return [r for r in results if r is not None]


def evaluate_policy(
    model: TriModalModel,
    table: FrameTable,
    cfg: SimConfig,
    progress: bool = True,
    episodes_out: list[EpisodeResult] | None = None,
) -> dict[str, float]:
    """Closed-loop metrics on ``cfg.episodes`` held-out episodes, plus the modality ablations.

    ``episodes_out``, when given, receives the per-episode results of the unablated condition.
    """
    if model.policy is None:
        raise UserError("this run has no policy head; train with --model.policy.enabled true to act")
    if table.action_spec.kind != "discrete" or not all(t.startswith("BabyAI") for t in table.env_tasks):
        raise UserError(f"{table.root}: closed-loop evaluation is implemented for BabyAI datasets only")
    model.eval()
    execute = model.cfg.policy.execute
    history = model.cfg.policy.history if model.cfg.policy.prev_action else 1
    image_size = table.image_shape[0]
    policy = model_policy(model)
    out: dict[str, float] = {}
    ablations: tuple[Ablation, ...] = ("none", "shuffle_text", "shuffle_image") if cfg.ablations else ("none",)
    for ablation in ablations:
        specs = episode_specs(table, cfg.episodes, cfg.seed, ablation)
        label = f"sim {ablation}" if progress else None
        if cfg.workers > 1 and len(specs) > 1:
            results = parallel_rollout(model, specs, table, cfg, ablation, description=label)
        else:
            with torch.no_grad():
                results = rollout(
                    policy, specs, image_size, cfg, execute, table, ablation, description=label, history=history
                )
        if ablation == "none" and episodes_out is not None:
            episodes_out.extend(results)
        prefix = "sim" if ablation == "none" else f"ablation/{ablation}/sim"
        summary = summarize(results, prefix)
        if ablation != "none":
            summary = {k: v for k, v in summary.items() if "/by_" not in k}
        out.update(summary)
    for ablation in ablations[1:]:
        key = f"ablation/{ablation}/sim/success_rate"
        out[f"ablation/{ablation}/sim/success_drop"] = out["sim/success_rate"] - out[key]
    return out


EPISODES_FILE = "eval_episodes.jsonl"


def write_episodes(path: Any, results: list[EpisodeResult]) -> None:
    """One JSON line per closed-loop episode (seed, level, instruction, success, steps, actions), atomically."""
    import json

    from ..atomic import write_text

    write_text(path, "".join(json.dumps(asdict(r)) + "\n" for r in results))


def read_episodes(path: Any) -> list[EpisodeResult]:
    import json
    from pathlib import Path

    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        try:
            out.append(EpisodeResult(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path}: line {n} is not an episode record ({exc}); re-run `vla-align eval`") from None
    return out
