"""BabyAI (minigrid) environments with agent-view RGB frames, and expert demonstrations by BabyAIBot.

BabyAI is turn-based: an episode's ``fps`` is 1.0, so its LeRobot ``timestamp`` column counts steps.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
from typing import Any, cast

import numpy as np
from PIL import Image

from ...data.episode import Episode
from ...errors import UserError

BABYAI_ACTIONS = ["left", "right", "forward", "pickup", "drop", "toggle", "done"]
DONE = BABYAI_ACTIONS.index("done")
VIEW_TILES = 7  # the agent sees a 7 x 7 grid of tiles
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 28, 224


def _gym() -> Any:
    try:
        import gymnasium
        import minigrid  # noqa: F401  (importing registers the BabyAI-* environments)
    except ImportError:
        raise UserError("BabyAI needs minigrid; install it with `pip install 'vla-align[babyai]'`") from None
    return gymnasium


def env_id(level: str) -> str:
    """``"GoToLocal"`` or ``"BabyAI-GoToLocal-v0"`` -> ``"BabyAI-GoToLocal-v0"`` (case-insensitive)."""
    known = {k.lower(): k for k in _gym().registry if k.startswith("BabyAI-")}
    name = level.strip()
    for candidate in (name, f"BabyAI-{name}-v0", f"BabyAI-{name}"):
        if candidate.lower() in known:
            return str(known[candidate.lower()])
    short = sorted(k.removeprefix("BabyAI-").removesuffix("-v0") for k in known.values())
    close = difflib.get_close_matches(name.removeprefix("BabyAI-").removesuffix("-v0"), short, n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    examples = [x for x in ("GoToLocal", "PickupLoc", "PutNextLocal", "GoToObj", "OpenDoor", "BossLevel") if x in short]
    raise UserError(
        f"unknown BabyAI level {level!r}; {hint}known levels include {', '.join(examples)} "
        f"({len(short)} registered, listed by gymnasium.registry)"
    )


def _check_size(image_size: int) -> None:
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise UserError(f"image_size must be in {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}, got {image_size}")


def make_env(level: str, image_size: int = 56) -> Any:
    """A gymnasium BabyAI env whose ``obs["image"]`` is the agent's RGB view, 7 * ceil(size / 7) px."""
    _check_size(image_size)
    gym = _gym()
    from minigrid.wrappers import RGBImgPartialObsWrapper

    tile_size = math.ceil(image_size / VIEW_TILES)
    wrapper: Any = RGBImgPartialObsWrapper  # minigrid is untyped
    return wrapper(gym.make(env_id(level)), tile_size=tile_size)


def render_frame(obs: dict[str, Any], image_size: int) -> np.ndarray:
    """The observation's RGB view as (image_size, image_size, 3) uint8, box-resized when needed."""
    frame = np.asarray(obs["image"], dtype=np.uint8)  # (7 * tile, 7 * tile, 3)
    if frame.shape[:2] != (image_size, image_size):
        img = Image.fromarray(frame).resize((image_size, image_size), Image.Resampling.BOX)
        frame = np.asarray(img)
    return np.ascontiguousarray(frame)  # (H, W, 3)


def reset(env: Any, seed: int) -> dict[str, Any]:
    """``env.reset(seed=seed)`` without minigrid's "Sampling rejected: ..." prints on stdout."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        obs, _ = env.reset(seed=seed)
    return dict(obs)


def bot_episode(env: Any, seed: int, image_size: int) -> Episode:
    """One expert demonstration: ``frames[t]`` is the view before ``actions[t]`` (BabyAIBot's choice).

    Runs until the env terminates or truncates; ``success`` is whether the final reward is positive.
    A bot that gives up (it raises on a few rare layouts) ends the episode unsuccessfully.
    """
    from minigrid.utils.baby_ai_bot import BabyAIBot

    obs = reset(env, seed)
    instruction = str(obs["mission"])
    bot: Any = cast(Any, BabyAIBot)(env.unwrapped)
    frames: list[np.ndarray] = []
    actions: list[int] = []
    reward, done = 0.0, False
    while not done:
        try:
            action = int(bot.replan())
        except Exception:  # the bot's own planning failures (e.g. a box it opened disappeared)
            if not frames:  # an episode needs one step: record the view and "done"
                frames.append(render_frame(obs, image_size))
                actions.append(DONE)
            break
        frames.append(render_frame(obs, image_size))
        actions.append(action)
        obs, r, terminated, truncated, _ = env.step(action)
        reward, done = float(r), bool(terminated or truncated)
    return Episode(
        frames=np.stack(frames),  # (N, H, W, 3) uint8
        actions=np.asarray(actions, dtype=np.int64),  # (N,)
        instruction=instruction,
        task=str(env.spec.id),
        fps=1.0,
        seed=seed,
        success=reward > 0,
    )
