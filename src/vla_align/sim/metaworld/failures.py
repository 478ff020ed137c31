"""Three-view panels for failed Meta-World evaluation episodes, rebuilt by replaying them.

Evaluation stores each episode's task (``level``), env seed and the commanded actions
(``eval_episodes.jsonl``). Meta-World is deterministic given the seed and the actions (the JSON floats
round-trip exactly), so replaying them gives back every frame and proprioceptive state without storing
video. During the replay the scripted expert is asked what it would do in each state the policy
reached (``MetaWorldEnv.expert_action``).

Choices, in one place:

* **Which failures** (:func:`worst_failures`): evaluation stores no progress measure for Meta-World
  (every failure runs to the step cap), so "worst first" is by task: tasks with the highest failure
  rate first (ties by name), one episode per task in turn (round-robin, lowest seed first), so that
  ``limit`` panels cover as many failing tasks as possible.
* **Key step**: the first step where the policy's action is more than :data:`KEY_GAP` (0.5, in action
  units; actions lie in [-1, 1]^4, so 0.5 is a quarter of one axis' range) from the expert's suggestion
  in L2 over the four dimensions (dx, dy, dz, grip); the last step when it never is.
* **Heat map** (:func:`continuous_grad_cam`): Grad-CAM over the image encoder's conv features of the
  *negative* policy loss against the expert's chunk at the key state, i.e. which pixels help the policy
  match the expert. The expert's chunk is the expert's own rollout from the key state (the replayed
  prefix, then ``chunk`` expert steps in the simulator, fewer at Meta-World's 500-step horizon, the rest
  masked), normalised with ``model.action_norm``, exactly like a training target. A flow-matching head's
  loss is random (noise and time): it is averaged over :data:`FLOW_DRAWS` draws from a fixed
  ``torch.Generator``, so the map is deterministic.
* **Coherence**: the per-frame image embeddings projected by the health's ridge map (fitted on
  z-scored actions of the held-out split) against the episode's actions normalised with the run's
  action normaliser (the training split's statistics, stored in the checkpoint; per-episode z-scores
  if the model has none). Magnitude-squared coherence is invariant to a per-channel affine map, so the
  choice of standardisation changes nothing but which channels count as moving. Without health (the
  dataset is no longer on disk) there is no projection and no spectrum.
* **Physical limits**: the run's limits on the commanded actions (``signal="velocity"``: the velocity
  is the action itself), flagged on the (T, 4) commanded actions (the panel's signal, named dx, dy, dz,
  grip; ``action_names`` keep the full :data:`~vla_align.sim.metaworld.ACTION_NAMES`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...diagnostics.three_view import ThreeView, build_three_view, project
from ...errors import ConfigError
from ...physics import PhysicalLimits
from ..base import EpisodeResult

if TYPE_CHECKING:
    from ...model import TriModalModel
    from .env import MetaWorldEnv

__all__ = [
    "FLOW_DRAWS",
    "KEY_GAP",
    "continuous_grad_cam",
    "expert_chunk",
    "metaworld_three_views",
    "replay",
    "worst_failures",
]

KEY_GAP = 0.5  # L2 distance (action units) between policy and expert action that marks the key step
FLOW_DRAWS = 8  # noise / time draws the flow-matching loss is averaged over for the heat map
EMBED_BATCH = 256


def worst_failures(episodes: list[EpisodeResult], limit: int) -> list[EpisodeResult]:
    """Failed episodes, at most ``limit``: tasks by failure rate (highest first, then by name), one
    episode per task in turn, lowest seed first within a task."""
    total = Counter(r.level for r in episodes)
    by_task: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in sorted((r for r in episodes if not r.success), key=lambda r: (r.level, r.seed)):
        by_task[r.level].append(r)
    tasks = sorted(by_task, key=lambda t: (-len(by_task[t]) / total[t], t))
    out: list[EpisodeResult] = []
    while len(out) < limit and any(by_task[t] for t in tasks):
        for t in tasks:
            if by_task[t] and len(out) < limit:
                out.append(by_task[t].pop(0))
    return out


def replay(env: MetaWorldEnv, seed: int, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Reset ``env`` to ``seed`` and play ``actions`` (T, 4): frames (T, H, W, 3) uint8 and states (T, 4)
    seen *before* each action, and the expert's suggestion (T, 4) at each of those states."""
    frame, state = env.reset(seed)
    frames, states, expert = [], [], []
    for t, a in enumerate(actions):
        frames.append(np.array(frame, dtype=np.uint8, copy=True))
        states.append(np.array(state, dtype=np.float32, copy=True))
        expert.append(env.expert_action())
        if t + 1 < len(actions):
            frame, state, _, _ = env.step(a)
        else:  # the last frame after the episode is never shown: no render needed
            env.step_sim(a)
    size = env.image_size
    return {
        "frames": np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8),
        "states": np.stack(states) if states else np.zeros((0, 4), np.float32),
        "expert": np.stack(expert) if expert else np.zeros((0, 4), np.float32),
    }


def expert_chunk(env: MetaWorldEnv, seed: int, prefix: np.ndarray, k: int) -> np.ndarray:
    """(k', 4) the expert's own next ``k`` actions from the state reached by playing ``prefix`` (P, 4)
    from ``seed``: k' < k only at the env's step cap. No rendering."""
    env.reset_sim(seed)
    for a in prefix:
        env.step_sim(a)
    out = []
    for _ in range(k):
        a = env.expert_action()
        out.append(a)
        if env.steps >= env.max_steps:
            break
        env.step_sim(a)
    return np.stack(out).astype(np.float32)


def continuous_grad_cam(
    model: TriModalModel,
    frame: np.ndarray,  # (H, W, 3) uint8
    instruction: str,
    state: np.ndarray | None,  # (S,) raw proprioceptive state, None if the model takes none
    target_chunk: np.ndarray,  # (k', A) raw expert actions, k' <= the policy's chunk (the rest is masked)
    seed: int = 0,
) -> np.ndarray:
    """(H, W) Grad-CAM in [0, 1] of −(continuous policy loss against ``target_chunk``) over the image
    encoder's feature map: where the features that bring the policy closer to the expert fire.

    Runs in eval mode (the model's mode is restored); gradients are taken with respect to the feature
    map only, so no parameter's ``.grad`` is touched. A flow head's random loss is averaged over
    :data:`FLOW_DRAWS` draws of a ``torch.Generator`` seeded with ``seed`` (deterministic)."""
    from ...diagnostics.attention import grad_cam
    from ...policy import ContinuousPolicy

    policy = model.policy
    if not isinstance(policy, ContinuousPolicy) or model.action_norm is None:
        raise ConfigError("continuous_grad_cam needs a model with a continuous-action policy")
    k, dim = policy.cfg.chunk, model.action_spec.dim
    target = np.asarray(target_chunk, dtype=np.float32).reshape(-1, dim)[:k]
    if len(target) == 0:
        raise ValueError("target_chunk needs at least one action")
    device = next(model.parameters()).device
    padded = np.zeros((k, dim), dtype=np.float32)
    padded[: len(target)] = target
    mask = torch.zeros(1, k, dtype=torch.bool, device=device)
    mask[:, : len(target)] = True
    image = torch.from_numpy(np.ascontiguousarray(frame))[None].to(device)  # (1, H, W, 3)
    s = None if state is None else torch.as_tensor(np.asarray(state, dtype=np.float32))[None].to(device)  # (1, S)
    draws = FLOW_DRAWS if policy.head.cfg.name == "flow" else 1
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            patches = model.image_encoder.patches(image)  # (1, C, h, w)
            text = model.text_encoder([instruction])  # (1, F_L)
            goal = model.action_norm.normalize(torch.from_numpy(padded).to(device))[None]  # (1, k, A)
        with torch.enable_grad():
            patches = patches.detach().requires_grad_(True)  # the leaf Grad-CAM differentiates against
            inputs = model._policy_inputs(patches, model.image_encoder.pool(patches), text, [instruction], False)
            cond = model.policy_cond(inputs, s).float()  # (1, C)
            gen = torch.Generator(device=device).manual_seed(seed)
            loss = policy.head.loss(
                cond.expand(draws, -1), goal.expand(draws, k, dim), mask.expand(draws, k), generator=gen
            )
            cam = grad_cam(patches, -loss, (int(frame.shape[0]), int(frame.shape[1])))  # (1, H, W)
        return cam[0].cpu().numpy().astype(np.float64)
    finally:
        model.train(was_training)


@torch.no_grad()
def _embed(model: TriModalModel, frames: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    out = [
        model.encode_image(torch.from_numpy(frames[i : i + EMBED_BATCH]).to(device)).float().cpu()
        for i in range(0, len(frames), EMBED_BATCH)
    ]
    return torch.cat(out).numpy().astype(np.float64)  # (T, D)


def _standardise(model: TriModalModel, actions: np.ndarray) -> np.ndarray:
    """(T, A) actions in the run's normalised units (per-episode z-scores without a normaliser)."""
    if model.action_norm is not None:
        with torch.no_grad():
            device = next(model.parameters()).device
            raw = torch.from_numpy(actions.astype(np.float64)).to(device)
            scaled: np.ndarray = model.action_norm.normalize(raw).cpu().numpy()
            return scaled
    z: np.ndarray = (actions - actions.mean(0)) / (actions.std(0) + 1e-8)
    return z


def _fmt(a: np.ndarray) -> str:
    return "[" + ", ".join(f"{x:+.2f}" for x in a) + "]"


def metaworld_three_views(
    model: TriModalModel,
    episodes: list[EpisodeResult],
    projection: np.ndarray | None,
    limits: PhysicalLimits | None,
    image_size: int,
    limit: int = 6,
) -> list[ThreeView]:
    """One :class:`ThreeView` per failed episode chosen by :func:`worst_failures` (see the module
    docstring for the key step, heat map, coherence and limits)."""
    from ...policy import ContinuousPolicy

    if not isinstance(model.policy, ContinuousPolicy):
        raise ConfigError("Meta-World failure panels need a model with a continuous-action policy")
    views = []
    for r in worst_failures(episodes, limit):
        taken = np.asarray(r.actions, dtype=np.float64).reshape(-1, 4)  # (T, 4) commanded actions
        if len(taken):
            views.append(_failure_view(model, r, taken, projection, limits, image_size))
    return views


def _replay_against_expert(
    r: EpisodeResult, taken: np.ndarray, image_size: int, k: int
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """The replay of ``taken`` (frames, states, the expert's action at each state), the expert's next
    ``k`` actions from the key step, and the env's control rate."""
    from .env import ENV_MAX_STEPS, make_env

    env = make_env(r.level, image_size, max_steps=min(ENV_MAX_STEPS, len(taken) + k))
    try:
        rep = replay(env, r.seed, taken)
        rep["expert"] = rep["expert"].astype(np.float64)  # (T, 4)
        rep["gap"] = np.linalg.norm(taken - rep["expert"], axis=1)  # (T,)
        differ = np.flatnonzero(rep["gap"] > KEY_GAP)
        rep["differ"] = differ
        rep["key"] = np.asarray(int(differ[0]) if len(differ) else len(taken) - 1)
        target = expert_chunk(env, r.seed, taken[: int(rep["key"])], k)  # (k', 4)
        return rep, target, float(env.fps)
    finally:
        env.close()


def _key_step_notes(r: EpisodeResult, rep: dict[str, np.ndarray], taken: np.ndarray, horizon: int) -> list[str]:
    key, gap = int(rep["key"]), rep["gap"]
    notes = [f"instruction: {r.instruction}", f"task {r.level}, seed {r.seed}, {r.steps} steps without success"]
    if len(rep["differ"]):
        notes.append(
            f"key step {key}: first step where the policy's action is more than {KEY_GAP} from the expert's "
            f"(L2 gap {gap[key]:.2f}); policy {_fmt(taken[key])}, expert {_fmt(rep['expert'][key])}"
        )
    else:
        notes.append(
            f"key step {key} (the last): the policy stayed within {KEY_GAP} of the expert at every step "
            f"(L2 gap here {gap[key]:.2f}, largest {gap.max():.2f})"
        )
    notes.append(
        f"heat map: Grad-CAM of −(policy loss against the expert's next {horizon} actions from this "
        "state) over the conv features"
    )
    return notes


def _failure_view(
    model: TriModalModel,
    r: EpisodeResult,
    taken: np.ndarray,
    projection: np.ndarray | None,
    limits: PhysicalLimits | None,
    image_size: int,
) -> ThreeView:
    from .env import ACTION_NAMES

    assert model.policy is not None
    rep, target, fps = _replay_against_expert(r, taken, image_size, model.policy.cfg.chunk)
    frames, key = rep["frames"], int(rep["key"])
    heat = continuous_grad_cam(model, frames[key], r.instruction, rep["states"][key], target)
    notes = _key_step_notes(r, rep, taken, len(target))
    projected = channels = None
    if projection is not None:
        projected = project(_embed(model, frames), projection)  # (T, 4)
        channels = _standardise(model, taken)  # (T, 4)
    else:
        notes.append("no coherence spectrum: needs the health indicators (the dataset on disk)")
    # no limits stored: derivatives are still taken of the actions as velocities
    shown = limits or PhysicalLimits(velocity=None, acceleration=None, jerk=None, dt=1.0 / fps, signal="velocity")
    view = build_three_view(
        f"{r.level} seed {r.seed}: {r.instruction}",
        frames[key],
        taken,
        [name.split(" (")[0] for name in ACTION_NAMES],  # dx, dy, dz, grip: short for the figure's legends
        shown.dt,
        shown,
        key_step=key,
        heat=heat,
        projected_image=projected,
        action_channels=channels,
        actions=taken,
        expert_actions=rep["expert"],
        action_names=list(ACTION_NAMES),
        notes=notes,
    )
    if limits is None:
        view.notes.append("no physical limits stored with the run: nothing flagged")
    elif view.flags:
        counts = ", ".join(f"{name} {int(f.sum())}" for name, f in view.flags.items())
        view.notes.append(f"steps over the run's limits on the commanded actions: {counts}")
    return view
