"""Meta-World v3 (MuJoCo) tasks with fast offscreen RGB frames, and scripted-expert demonstrations.

Needs the ``metaworld`` extra (``pip install 'vla-align[metaworld]'``); MuJoCo and metaworld are
imported lazily, so this module imports without them.

* Task layouts are random per env seed: the env's reset draws object / goal positions from its own
  generator seeded by :meth:`MetaWorldEnv.reset` (not Meta-World's 50 fixed "train_tasks"
  variations), so held-out seeds give new layouts.
* Control runs at 80 Hz (``env.dt`` = 5 physics steps of 2.5 ms). An action is 4 numbers in
  [-1, 1]: the hand's target moves by ``0.01 m x (dx, dy, dz)`` per step, and ``grip`` drives the
  fingers (-1 open, +1 close).
* The observation we expose is an upright RGB frame from a free camera beside the table (it sees
  the gripper and the objects; the stock ``corner*`` cameras come out rotated 180 degrees and show
  small objects at 84 px) and a 4-D proprioceptive state: hand xyz in metres and the gripper
  opening (0 closed .. 1 open). Object and goal positions are not in the state; the goal marker
  Meta-World draws (reach / push / pick-place) is visible in the frame. The expert reads the full
  simulator observation, which never leaves this module.
* Rendering uses ``MUJOCO_GL=egl`` when unset (software llvmpipe on a GPU-less machine) with shadows,
  multisampling and reflections off: ~7 ms a frame at 64–224 px instead of ~120 ms with the defaults.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...data.episode import ActionSpec, Episode
from ...errors import UserError
from .instructions import instruction_for

MT10_TASKS = [
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
]
MT50_TASKS = [
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
]
BENCHMARKS = {"mt10": MT10_TASKS, "mt50": MT50_TASKS}

CONTROL_FPS = 80.0  # 1 / env.dt; env.dt = frame_skip 5 x timestep 2.5 ms
MAX_STEPS = 200  # episode cap: 2.5 s; the expert needs 15-170 steps on 49 of the 50 tasks
# push-back's expert often dithers before it gets the puck to the goal: 19/30 seeds succeed within
# 200 steps, 29/30 within 351
TASK_MAX_STEPS = {"push-back-v3": 400}
ENV_MAX_STEPS = 500  # Meta-World's own horizon (max_path_length); stepping past it raises
SUCCESS_EXTRA_STEPS = 10  # steps recorded after the expert's first success, so the success state is seen
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512

ACTION_NAMES = [
    "dx (hand target, 0.01 m per unit per step)",
    "dy (hand target, 0.01 m per unit per step)",
    "dz (hand target, 0.01 m per unit per step)",
    "grip (-1 open .. +1 close)",
]
ACTION_SPEC = ActionSpec(kind="continuous", dim=4, names=list(ACTION_NAMES))
STATE_NAMES = ["hand_x (m)", "hand_y (m)", "hand_z (m)", "gripper_opening (0 closed .. 1 open)"]


@dataclass(frozen=True)
class Camera:
    """A MuJoCo free camera: it looks at ``lookat`` (world metres) from ``distance`` metres, turned
    ``azimuth`` degrees about z (180: from the +x side, the robot's base on the image's left) and
    ``elevation`` degrees (negative: from above). Images come out upright."""

    azimuth: float = 180.0
    elevation: float = -40.0
    distance: float = 0.85
    lookat: tuple[float, float, float] = (0.0, 0.62, 0.1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lookat": list(self.lookat), "fovy": "model default (45 degrees)"}


CAMERA = Camera()


def _modules() -> tuple[Any, Any, Any]:
    """``(mujoco, goal-observable env classes, expert policy classes)``, or a UserError saying what to install."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # must be set before mujoco is first imported
    try:
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
        from metaworld.policies import ENV_POLICY_MAP
    except ImportError as e:
        raise UserError(
            f"Meta-World needs the metaworld extra ({e.name or e} is missing); "
            "install it with `pip install 'vla-align[metaworld]'`"
        ) from None
    return mujoco, ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE, ENV_POLICY_MAP


def resolve_tasks(names: str | Iterable[str]) -> list[str]:
    """Task names -> v3 task names, in order, without duplicates.

    Accepts ``mt10`` / ``mt50`` (case-insensitive), ``drawer-open-v3`` or ``drawer-open``, and
    comma-separated lists of these.
    """
    items = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in items:
        for raw in str(item).split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if name in BENCHMARKS:
                out.extend(BENCHMARKS[name])
                continue
            task = name if name.endswith("-v3") else f"{name}-v3"
            if task not in MT50_TASKS:
                short = [t.removesuffix("-v3") for t in MT50_TASKS]
                close = difflib.get_close_matches(name.removesuffix("-v3").removesuffix("-v2"), short, n=3)
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                raise UserError(
                    f"unknown Meta-World task {raw.strip()!r}; {hint}use mt10, mt50 or v3 task names such as "
                    f"drawer-open, pick-place, door-open ({len(MT50_TASKS)} tasks, listed in vla_align.sim.metaworld.MT50_TASKS)"
                )
            out.append(task)
    if not out:
        raise UserError("name at least one Meta-World task, e.g. mt10, mt50 or drawer-open")
    return list(dict.fromkeys(out))


def default_max_steps(task: str) -> int:
    """The episode cap of ``task``: :data:`MAX_STEPS`, or more where the expert needs it."""
    return TASK_MAX_STEPS.get(task, MAX_STEPS)


def _check_size(image_size: int) -> None:
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise UserError(f"image_size must be in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, got {image_size}")


class MetaWorldEnv:
    """One Meta-World v3 task with a camera: ``reset(seed) -> (frame, state)``,
    ``step(action) -> (frame, state, success, done)``.

    ``frame`` is (H, W, 3) uint8, ``state`` (4,) float32 (:data:`STATE_NAMES`). ``done`` is True
    once the task succeeds or after ``max_steps`` steps; ``success`` is this step's success flag.
    :meth:`expert_action` is the scripted expert's action for the current state. Holds a MuJoCo
    model and an offscreen GL context (~160 MB): :meth:`close` it, or use it as a context manager.
    """

    def __init__(self, task: str, image_size: int = 84, camera: Camera = CAMERA, max_steps: int | None = None) -> None:
        (self.task,) = resolve_tasks([task])
        _check_size(image_size)
        self.max_steps = default_max_steps(self.task) if max_steps is None else int(max_steps)
        if not 1 <= self.max_steps <= ENV_MAX_STEPS:
            raise UserError(f"max_steps must be in 1..{ENV_MAX_STEPS} (Meta-World's horizon), got {max_steps}")
        mujoco, envs, policies = _modules()
        self.image_size, self.camera = image_size, camera
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = envs[f"{self.task}-goal-observable"](seed=0)
        env._freeze_rand_vec = False  # new object / goal positions at every reset ...
        env.seeded_rand_vec = True  # ... drawn from env.np_random, which reset() seeds
        self._env = env
        self._policy = policies[self.task]()
        self.fps = round(1.0 / float(env.dt), 6)
        model = env.model
        model.vis.quality.offsamples = 0  # no MSAA: read before the GL context exists
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), image_size)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), image_size)
        try:
            self._renderer = mujoco.Renderer(model, image_size, image_size)
        except Exception as e:  # no EGL / OSMesa library, no display for glfw, ...
            env.close()
            raise UserError(
                f"MuJoCo offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: {e}; set "
                "MUJOCO_GL=egl (or osmesa) in the environment before mujoco or metaworld is first imported, "
                "and check that libEGL (or libOSMesa) is installed"
            ) from None
        flags = self._renderer.scene.flags
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            flags[flag] = 0
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._camera.azimuth, self._camera.elevation = camera.azimuth, camera.elevation
        self._camera.distance = camera.distance
        self._camera.lookat[:] = camera.lookat
        self._obs: np.ndarray | None = None
        self.steps = 0
        self.succeeded = False

    # -- the simulator without rendering (the expert loop renders into its own buffers) --

    def reset_sim(self, seed: int) -> None:
        """New layout from ``seed`` (an int >= 0); the same seed gives the same layout and rollout."""
        if int(seed) < 0:
            raise UserError(f"env seeds must be >= 0, got {seed}")
        self._env.seed(int(seed))
        obs, _ = self._env.reset()
        self._obs = obs
        self.steps, self.succeeded = 0, False

    def step_sim(self, action: np.ndarray) -> bool:
        """Apply ``action`` (clipped to [-1, 1]); returns this step's success flag."""
        if self._obs is None:
            raise RuntimeError("call reset(seed) before step(action)")
        if self.steps >= self.max_steps:
            raise RuntimeError(f"the episode is over ({self.max_steps} steps); call reset(seed)")
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        obs, _, _, _, info = self._env.step(a)
        self._obs = obs
        self.steps += 1
        success = bool(info["success"])
        self.succeeded |= success
        return success

    def state(self) -> np.ndarray:
        """(4,) float32: hand xyz (m) and gripper opening (0 closed .. 1 open)."""
        assert self._obs is not None, "call reset(seed) first"
        return np.asarray(self._obs[:4], dtype=np.float32)

    def render(self, out: np.ndarray | None = None) -> np.ndarray:
        """The camera's (H, W, 3) uint8 upright RGB frame of the current state (into ``out`` when given)."""
        self._renderer.update_scene(self._env.data, camera=self._camera)
        return np.asarray(self._renderer.render(out=out))

    def expert_action(self) -> np.ndarray:
        """(4,) float32: the scripted expert's action (``metaworld.policies``), clipped to [-1, 1]."""
        assert self._obs is not None, "call reset(seed) first"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": the env clips anyway
            action = self._policy.get_action(self._obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    # -- the closed-loop interface --

    def reset(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        self.reset_sim(seed)
        return self.render(), self.state()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool]:
        success = self.step_sim(action)
        done = self.succeeded or self.steps >= self.max_steps
        return self.render(), self.state(), success, done

    def close(self) -> None:
        renderer, self._renderer = getattr(self, "_renderer", None), None
        if renderer is not None:
            renderer.close()
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()

    def __enter__(self) -> MetaWorldEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_env(task: str, image_size: int = 84, camera: Camera = CAMERA, max_steps: int | None = None) -> MetaWorldEnv:
    """A :class:`MetaWorldEnv` for ``task`` (``drawer-open-v3`` or ``drawer-open``)."""
    return MetaWorldEnv(task, image_size=image_size, camera=camera, max_steps=max_steps)


def expert_episode(
    env: MetaWorldEnv,
    seed: int,
    instruction: str | None = None,
    extra_steps: int = SUCCESS_EXTRA_STEPS,
) -> Episode:
    """One scripted-expert demonstration of ``env.task`` with env seed ``seed``.

    ``frames[t]`` / ``state[t]`` are what was seen before ``actions[t]`` (the clipped expert action).
    The episode ends ``extra_steps`` steps after the first success (so the success state is in the
    frames) or after ``env.max_steps`` steps; ``success`` is whether the task succeeded at any step.
    ``instruction`` defaults to :func:`~vla_align.data.metaworld_instructions.instruction_for`
    ``(task, seed)``, a deterministic draw from the task's set.
    """
    if extra_steps < 0:
        raise UserError(f"extra_steps must be >= 0, got {extra_steps}")
    cap, size = env.max_steps, env.image_size
    frames = np.empty((cap, size, size, 3), dtype=np.uint8)  # (T, H, W, 3)
    states = np.empty((cap, 4), dtype=np.float32)  # (T, 4)
    actions = np.empty((cap, 4), dtype=np.float32)  # (T, 4)
    env.reset_sim(seed)
    end = cap
    for t in range(cap):
        env.render(out=frames[t])
        states[t] = env.state()
        actions[t] = env.expert_action()
        if env.step_sim(actions[t]) and end == cap:
            end = min(cap, t + 1 + extra_steps)
        if t + 1 >= end:
            break
    n = min(end, env.steps)
    return Episode(
        frames=frames[:n],
        actions=actions[:n],
        instruction=instruction if instruction is not None else instruction_for(env.task, seed),
        task=env.task,
        fps=env.fps,
        seed=int(seed),
        success=env.succeeded,
        state=states[:n],
    )
