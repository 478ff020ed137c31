"""``vla-align data inject DIR --out OUT``: a copy of a dataset with faults injected on purpose.

The data steps of chapter 5.7 (``data align``, ``data dedup``, ``data vote``) are measured on faults
whose truth is known. This writes a new dataset (the source is only read) with any of:

* ``--lag-ms L``: each episode's camera delayed by a lag drawn uniformly from [-L, L] ms and rounded to
  control steps: recorded frame t shows the scene of step t - lag (clamped to the episode), while the
  actions and the state (the controller's side) are unchanged. A positive lag is a late camera.
* ``--wrong-instruction P``: a share P of the training episodes get the instruction of another episode
  with a different one (an annotation attached to the wrong demonstration).
* ``--duplicates P``: copies of a share P of the training episodes appended to the training split; half
  exact, half re-rendered with small pixel noise (Gaussian, ``--noise-pixels`` grey levels) and action
  noise (``--noise-actions`` × each channel's standard deviation; discrete actions are kept).

The truth goes to ``OUT/meta/vla_align/faults.json``::

    {"source": "DIR", "seed": 0, "lag_steps": {"12": -7, ...}, "wrong_instruction": {"3": {"true": ..., "given": ...}},
     "duplicates": {"1000": {"of": 17, "noisy": false}, ...}}

Episode indices are those of OUT. Splits keep their order; with duplicates, the later splits move up by
the number of copies (their episodes keep their seeds and order).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic, safety
from ..errors import UserError
from .episode import Episode
from .info_checks import parse_splits
from .lerobot import FrameTable, episode_at, read_dataset, read_info
from .lerobot_write import write_dataset

FAULTS_PATH = Path("meta") / "vla_align" / "faults.json"


@dataclass
class Faults:
    lag_ms: float = 0.0  # camera lag drawn uniformly from [-lag_ms, lag_ms]
    wrong_instruction: float = 0.0  # share of training episodes with another episode's instruction
    duplicates: float = 0.0  # share of training episodes copied (half exact, half noisy)
    noise_pixels: float = 2.0  # std of the pixel noise of a noisy copy, in grey levels
    noise_actions: float = 0.01  # std of the action noise of a noisy copy, × each channel's std
    seed: int = 0
    truth: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.lag_ms < 0 or self.lag_ms > 10_000:
            raise UserError(f"--lag-ms {self.lag_ms}: give a lag between 0 and 10000 ms")
        for name in ("wrong_instruction", "duplicates"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"--{name.replace('_', '-')} {value}: a share between 0 and 1")
        if self.noise_pixels < 0 or self.noise_actions < 0:
            raise UserError("--noise-pixels / --noise-actions must be >= 0")
        if not (self.lag_ms or self.wrong_instruction or self.duplicates):
            raise UserError("no fault asked for: pass --lag-ms, --wrong-instruction and/or --duplicates")


def lagged(frames: np.ndarray, lag: int) -> np.ndarray:
    """Frames of a camera ``lag`` steps late (early if negative): row t shows row clip(t - lag)."""
    n = len(frames)
    return frames[np.clip(np.arange(n) - lag, 0, n - 1)]


def _plan(t: FrameTable, splits: dict[str, tuple[int, int]], f: Faults) -> tuple[list[tuple[int, str]], dict[str, Any]]:
    """The output episodes in order, as (source position, kind), and the truth (indices of the output)."""
    rng = np.random.default_rng(f.seed)
    pos_of = {int(i): p for p, i in enumerate(t.episode_ids)}
    train = [pos_of[i] for i in range(*splits["train"]) if i in pos_of] if "train" in splits else []
    copies: list[int] = (
        rng.choice(train, size=round(f.duplicates * len(train)), replace=False).tolist() if f.duplicates else []
    )
    order: list[tuple[int, str]] = []
    new_splits: dict[str, tuple[int, int]] = {}
    for name, (start, end) in sorted(splits.items(), key=lambda kv: kv[1]):
        first = len(order)
        order += [(pos_of[i], "plain") for i in range(start, end) if i in pos_of]
        if name == "train":
            order += [(int(p), "noisy" if k % 2 else "exact") for k, p in enumerate(copies)]
        new_splits[name] = (first, len(order))
    truth: dict[str, Any] = {"splits": new_splits}
    if f.duplicates:
        truth["duplicates"] = {
            str(i): {"of": int(t.episode_ids[p]), "noisy": kind == "noisy"}
            for i, (p, kind) in enumerate(order)
            if kind != "plain"
        }
    if f.wrong_instruction:
        first, end = new_splits.get("train", (0, 0))
        plain = [i for i in range(first, end) if order[i][1] == "plain"]
        chosen = rng.choice(plain, size=round(f.wrong_instruction * len(plain)), replace=False)
        wrong = {}
        for i in sorted(int(c) for c in chosen):
            true = t.instructions[order[i][0]]
            others = [s for s in t.tasks if s != true]
            if not others:
                raise UserError(f"{t.root}: every episode has the instruction {true!r}; none to swap in")
            wrong[str(i)] = {"true": true, "given": others[int(rng.integers(len(others)))]}
        truth["wrong_instruction"] = wrong
    if f.lag_ms:
        fps = t.fps
        lags = np.rint(rng.uniform(-f.lag_ms, f.lag_ms, size=len(order)) * fps / 1000.0).astype(int)
        truth["lag_steps"] = {str(i): int(v) for i, v in enumerate(lags)}
    return order, truth


def _stream(t: FrameTable, order: list[tuple[int, str]], truth: dict[str, Any], f: Faults) -> Iterator[Episode]:
    rng = np.random.default_rng([f.seed, 1])
    wrong = truth.get("wrong_instruction", {})
    lags = truth.get("lag_steps", {})
    std = t.actions.std(0) if t.actions.ndim == 2 else None
    for i, (p, kind) in enumerate(order):
        ep = episode_at(t, p)
        if kind == "noisy":
            noise = rng.normal(0.0, f.noise_pixels, size=ep.frames.shape)
            ep.frames = np.clip(ep.frames + noise, 0, 255).round().astype(np.uint8)
            if std is not None:
                ep.actions = (ep.actions + rng.normal(size=ep.actions.shape) * f.noise_actions * std).astype(
                    ep.actions.dtype
                )
        if str(i) in wrong:
            ep.instruction = wrong[str(i)]["given"]
        if str(i) in lags:
            ep.frames = lagged(ep.frames, lags[str(i)])
        yield ep


def inject(src: Path, out: Path, f: Faults, overwrite: bool = False) -> dict[str, Any]:
    """Write the faulty copy of ``src`` to ``out``; returns the truth (also in ``out/meta/vla_align/faults.json``)."""
    f.check()
    safety.check_outside(out, [src])  # the source is never modified
    info = read_info(src)
    splits = parse_splits(info, Path(src) / "meta" / "info.json")
    table = read_dataset(src)
    order, truth = _plan(table, splits, f)
    extra = {k: v for k, v in (info.get("vla_align") or {}).items() if k != "action_spec"}
    write_dataset(
        out,
        _stream(table, order, truth, f),
        action_spec=table.action_spec,
        fps=table.fps,
        splits=truth.pop("splits"),
        robot_type=str(info.get("robot_type") or "unknown"),
        extra=extra,
        overwrite=overwrite,
        total_episodes=len(order),
        description="injecting faults",
    )
    truth = {"source": str(src), "seed": f.seed, "params": {k: getattr(f, k) for k in _PARAMS}, **truth}
    atomic.write_json(Path(out) / FAULTS_PATH, truth)
    return truth


_PARAMS = ("lag_ms", "wrong_instruction", "duplicates", "noise_pixels", "noise_actions")


def read_truth(root: Path) -> dict[str, Any]:
    """The faults injected into the dataset at ``root`` (``data inject`` wrote them)."""
    path = Path(root) / FAULTS_PATH
    if not path.is_file():
        raise UserError(f"{path} does not exist: {root} was not written by `vla-align data inject`")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def add_command(sims: Any, parser_class: Any) -> None:
    q = sims.add_parser(
        "inject",
        help="write a copy of a dataset with known faults (camera lag, wrong instructions, duplicates)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    q.add_argument("dir", metavar="DIR", help="the source dataset (only read)")
    q.add_argument("--out", required=True, help="the faulty copy (a new folder)")
    q.add_argument("--lag-ms", type=float, default=0.0, help="camera lag per episode, uniform in [-L, L] ms")
    q.add_argument("--wrong-instruction", type=float, default=0.0, help="share of training episodes mislabelled")
    q.add_argument("--duplicates", type=float, default=0.0, help="share of training episodes copied (half noisy)")
    q.add_argument("--noise-pixels", type=float, default=2.0, help="pixel noise std of a noisy copy (grey levels)")
    q.add_argument("--noise-actions", type=float, default=0.01, help="action noise std of a noisy copy (x std)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--overwrite", action="store_true", help="replace OUT if it is a dataset")
    q.set_defaults(func=cmd_inject)


def cmd_inject(args: argparse.Namespace) -> None:
    faults = Faults(
        args.lag_ms, args.wrong_instruction, args.duplicates, args.noise_pixels, args.noise_actions, args.seed
    )
    truth = inject(Path(args.dir), Path(args.out), faults, args.overwrite)
    parts = []
    if "lag_steps" in truth:
        lags = np.abs(np.array(list(truth["lag_steps"].values())))
        parts.append(f"camera lag on {int((lags > 0).sum())} episodes (|lag| up to {lags.max()} steps)")
    if "wrong_instruction" in truth:
        parts.append(f"{len(truth['wrong_instruction'])} wrong instructions")
    if "duplicates" in truth:
        parts.append(f"{len(truth['duplicates'])} duplicates")
    print(f"wrote {args.out}: {'; '.join(parts)}; the truth is in {Path(args.out) / FAULTS_PATH}")
