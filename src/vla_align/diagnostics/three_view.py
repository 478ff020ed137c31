"""The chapter's three-view failure report (5.9): attention heat map + spectral coherence + action timeline.

A :class:`ThreeView` holds everything one panel draws, independent of the simulator:

* **view 1** the frame at the key step (the first divergence from the expert, or the last frame) with the
  policy's Grad-CAM / attention heat map;
* **view 2** γ_VA(f) of the episode (projected image embedding against the actions) with the band the
  chapter's health threshold refers to;
* **view 3** the trajectory over time with its velocity, acceleration and jerk, the physical limits
  (±limit lines) and every step that breaks one of them flagged ("physical red lines").

``build_three_view`` computes the coherence and violations from raw arrays; :mod:`.figures` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..physics import DERIVATIVES, PhysicalLimits, kinematics, violations

__all__ = ["ThreeView", "build_three_view", "episode_coherence", "synthetic_three_view"]

MIN_COHERENCE_STEPS = 12  # shorter episodes get no spectrum (two Welch segments of 8 need 12 steps)


@dataclass
class ThreeView:
    title: str
    frame: np.ndarray  # (H, W, 3) uint8 at the key step
    heat: np.ndarray | None  # (H, W) in [0, 1]
    key_step: int
    signal: np.ndarray  # (T, S) trajectory the kinematics are taken of (positions, or actions as positions)
    signal_names: list[str]
    dt: float
    limits: PhysicalLimits | None
    derivatives: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (T_k, S)
    flags: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (T,) bool: limit broken at step t
    freqs: np.ndarray | None = None  # (F,)
    gamma: np.ndarray | None = None  # (F,) mean over action channels
    band: tuple[float, float] | None = None
    band_coherence: float | None = None
    actions: np.ndarray | None = None  # (T,) ids or (T, A): what the policy did
    expert_actions: np.ndarray | None = None  # same shape: what the expert would have done at each state
    action_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def violation_steps(self) -> dict[str, list[int]]:
        return {name: np.flatnonzero(f).tolist() for name, f in self.flags.items()}

    @property
    def violation_count(self) -> int:
        return int(sum(int(f.sum()) for f in self.flags.values()))


def episode_coherence(
    v: np.ndarray,  # (T, C) projected image embedding per step
    a: np.ndarray,  # (T, C) actions (one-hot or normalised continuous) per step
    fs: float,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], float] | None:
    """γ_VA(f) averaged over the channels where both signals move, the default band and the in-band mean;
    None when the episode is too short for two Welch segments or no channel varies."""
    from ..losses.spectral import coherence, default_band, default_nperseg

    t = len(v)
    if t < MIN_COHERENCE_STEPS:
        return None
    live = (v.std(0) > 1e-9) & (a.std(0) > 1e-9)  # (C,)
    if not live.any():
        return None
    nperseg = default_nperseg(t, fs)
    x = torch.as_tensor(v[:, live].T, dtype=torch.float64)  # (C', T)
    y = torch.as_tensor(a[:, live].T, dtype=torch.float64)
    freqs, gamma = coherence(x, y, fs, nperseg)  # (F,), (C', F)
    band = default_band(fs, t, nperseg)
    g = gamma.mean(0).numpy()  # (F,)
    f = freqs.numpy()
    inside = (f >= band[0] - 1e-9) & (f <= band[1] + 1e-9)
    return f, g, band, float(g[inside].mean())


def build_three_view(
    title: str,
    frame: np.ndarray,
    signal: np.ndarray,  # (T, S)
    signal_names: list[str],
    dt: float,
    limits: PhysicalLimits | None,
    key_step: int = -1,
    heat: np.ndarray | None = None,
    projected_image: np.ndarray | None = None,  # (T, C)
    action_channels: np.ndarray | None = None,  # (T, C)
    actions: np.ndarray | None = None,
    expert_actions: np.ndarray | None = None,
    action_names: list[str] | None = None,
    notes: list[str] | None = None,
) -> ThreeView:
    """Compute the derivatives, the limit flags and the episode's coherence spectrum into a ThreeView."""
    x = torch.as_tensor(np.asarray(signal, dtype=np.float64))  # (T, S)
    if x.ndim != 2 or len(x) < 1:
        raise ValueError(f"signal must be (T, S) with T >= 1, got {tuple(x.shape)}")
    view = ThreeView(
        title=title,
        frame=frame,
        heat=heat,
        key_step=key_step if key_step >= 0 else len(x) - 1,
        signal=x.numpy(),
        signal_names=list(signal_names),
        dt=dt,
        limits=limits,
        actions=actions,
        expert_actions=expert_actions,
        action_names=list(action_names or []),
        notes=list(notes or []),
    )
    if len(x) >= len(DERIVATIVES) + 1:
        values, _ = kinematics(x, dt, signal="position" if limits is None else limits.signal)
        view.derivatives = {k: v.numpy() for k, v in values.items()}
        if limits is not None:
            view.flags = {k: v.numpy() for k, v in violations(x, limits).items()}
    else:
        view.notes.append(f"{len(x)} steps: too short for jerk")
    if projected_image is not None and action_channels is not None:
        spec = episode_coherence(projected_image, action_channels, 1.0 / dt)
        if spec is None:
            view.notes.append("no coherence spectrum: episode too short or no action channel varies")
        else:
            view.freqs, view.gamma, view.band, view.band_coherence = spec
    return view


def synthetic_three_view(seed: int = 0, steps: int = 120, fps: float = 10.0) -> ThreeView:
    """A continuous 2-D end-effector trajectory with one injected jerk spike, for tests and demos.

    The limits come from the smooth part (99th percentile), so the spike (steps 60-62) must be flagged.
    """
    from ..physics import fit_limits

    rng = np.random.default_rng(seed)
    t = np.arange(steps) / fps
    smooth = np.stack([0.3 * np.sin(0.5 * t), 0.2 * np.cos(0.3 * t)], axis=1)  # (T, 2) metres
    fitted = fit_limits([smooth], 1.0 / fps, percentile=99.0)
    headroom = {name: [1.2 * v for v in lim] for name, lim in fitted.items()}  # 20 % above the smooth part
    limits = replace(
        fitted, velocity=headroom["velocity"], acceleration=headroom["acceleration"], jerk=headroom["jerk"]
    )
    traj = smooth.copy()
    traj[60:63, 0] += np.array([0.02, 0.05, 0.02])  # a jolt the limits must catch
    actions = np.diff(traj, axis=0, prepend=traj[:1]) * fps  # (T, 2) commanded velocity
    image = (actions @ rng.normal(size=(2, 2))) + 0.05 * rng.normal(size=(steps, 2))  # image embedding, projected
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    frame[40:, :] = 90  # a floor
    frame[20:30, 28:38] = (200, 60, 60)  # the object
    heat = np.zeros((64, 64))
    heat[18:32, 26:40] = 1.0
    return build_three_view(
        "synthetic continuous trajectory",
        frame,
        traj,
        ["x (m)", "y (m)"],
        1.0 / fps,
        limits,
        key_step=61,
        heat=heat,
        projected_image=image,
        action_channels=actions,
        actions=actions,
        action_names=["vx (m/s)", "vy (m/s)"],
        notes=["synthetic: a 5 cm jolt injected at steps 60-62"],
    )


def project(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Embeddings (N, D) through a ridge map with bias (D + 1, C) -> action channels (N, C)."""
    result: np.ndarray = np.concatenate([z, np.ones((len(z), 1))], axis=1) @ w
    return result
