"""Matplotlib figures for the report, returned as ``data:image/png;base64,...`` URIs (no files, no network).

Figure words follow the report's language inside :func:`language`: Chinese labels with a CJK font when one
is installed (WenQuanYi Micro Hei first), English otherwise (with a note, never boxes for missing glyphs).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from ..diagnostics.three_view import ThreeView
from .text import FIGURE_TEXT

DPI = 80
THRESHOLD_STYLE = {"color": "#c0392b", "linestyle": "--", "linewidth": 1.0}
# CJK fonts, most preferred first; the file-name hints find ones installed after matplotlib's font cache.
CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC", "SimHei")
CJK_FILE_HINTS = ("wqy", "notosanscjk", "notosanssc", "sourcehansans", "simhei")
_LABELS: ContextVar[Mapping[str, str]] = ContextVar("figure_labels", default=FIGURE_TEXT["en"])


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def cjk_font() -> str | None:
    """The first of :data:`CJK_FONTS` matplotlib can use, registering system font files it has not cached
    yet; ``None`` when there is none."""
    from matplotlib import font_manager

    def known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((name for name in CJK_FONTS if name in names), None)

    if (found := known()) is not None:
        return found
    for path in font_manager.findSystemFonts():
        if any(hint in path.lower().replace("-", "").replace("_", "") for hint in CJK_FILE_HINTS):
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
    return known()


def label(key: str, **values: Any) -> str:
    """The figure word ``key`` in the current :func:`language`, formatted with ``values``."""
    text = _LABELS.get()[key]
    return text.format(**values) if values else text


@contextmanager
def language(lang: str) -> Iterator[str | None]:
    """Draw figures in ``lang``; yields the CJK font used for Chinese, ``None`` when the labels are
    English (``lang`` is English, or no CJK font is installed)."""
    font = cjk_font() if lang != "en" else None
    effective = lang if font is not None and lang in FIGURE_TEXT else "en"
    rc: dict[str, Any] = {}
    if font is not None:
        rc = {"font.family": "sans-serif", "font.sans-serif": [font, "DejaVu Sans"], "axes.unicode_minus": False}
    token = _LABELS.set(FIGURE_TEXT[effective])
    try:
        with _plt().rc_context(rc):
            yield font
    finally:
        _LABELS.reset(token)


def to_uri(fig: Any) -> str:
    """Render and close ``fig``; PNG as a data URI."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_uri(frame: np.ndarray, scale: int = 3) -> str:
    """A (H, W, 3) uint8 frame as a nearest-neighbour upscaled PNG data URI."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(frame))
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    ylabel: str = "",
    thresholds: Mapping[str, float] | None = None,
    logy: bool = False,
) -> str:
    """One line per series of (step, value) points; dashed horizontal lines for named thresholds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    for name, points in series.items():
        if points:
            x, y = zip(*points, strict=True)
            ax.plot(x, y, label=name, linewidth=1.2, marker="o" if len(points) < 12 else None, markersize=3)
    for name, value in (thresholds or {}).items():
        ax.axhline(value, **THRESHOLD_STYLE)
        ax.annotate(name, (0.01, value), xycoords=("axes fraction", "data"), fontsize=7, color="#c0392b", va="bottom")
    if logy:
        ax.set_yscale("symlog", linthresh=1e-2)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(label("step"), fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=6, ncol=2)
    return to_uri(fig)


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, vmax: float = 1.0) -> str:
    """A (R, C) matrix in [0, vmax] with labelled axes (the AMat)."""
    plt = _plt()
    r, c = matrix.shape
    size = min(9.0, 2.5 + 0.22 * max(r, c))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(np.nan_to_num(matrix, nan=0.0), vmin=0.0, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(c), [str(x)[:28] for x in cols], rotation=90, fontsize=6)
    ax.set_yticks(range(r), [str(x)[:28] for x in rows], fontsize=6)
    ax.set_xlabel(label("retrieved_class"), fontsize=8)
    ax.set_ylabel(label("query_class"), fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return to_uri(fig)


def bar_chart(values: Mapping[str, float], title: str, threshold: float | None = None, xmax: float = 1.0) -> str:
    plt = _plt()
    names = list(values)
    fig, ax = plt.subplots(figsize=(5.6, 0.6 + 0.22 * len(names)))
    ax.barh(range(len(names)), [values[n] for n in names], color="#2e86c1")
    ax.set_yticks(range(len(names)), [n[:40] for n in names], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, xmax)
    if threshold is not None:
        ax.axvline(threshold, **THRESHOLD_STYLE)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
    return to_uri(fig)


def coherence_chart(
    freqs: np.ndarray, gamma: np.ndarray, band: tuple[float, float], threshold: float, title: str
) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    _draw_coherence(ax, freqs, gamma, band, threshold)
    ax.set_title(title, fontsize=10)
    return to_uri(fig)


def _draw_coherence(ax: Any, freqs: np.ndarray, gamma: np.ndarray, band: tuple[float, float], threshold: float) -> None:
    ax.axvspan(band[0], band[1], color="#f9e79f", alpha=0.6, label=label("band", lo=band[0], hi=band[1]))
    ax.plot(freqs, gamma, color="#1f618d", linewidth=1.4, marker="o", markersize=2.5, label="γ_VA(f)")
    ax.axhline(threshold, **THRESHOLD_STYLE, label=label("threshold", value=threshold))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(label("frequency"), fontsize=8)
    ax.set_ylabel(label("coherence"), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper right")
    ax.grid(alpha=0.3)


def histograms(hists: Mapping[str, Sequence[float]], edges: Sequence[float], title: str) -> str:
    """Gradient-cosine histograms per objective pair (per-tensor cosines), one small panel each."""
    plt = _plt()
    names = list(hists)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.6 * rows), squeeze=False)
    centres = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
    width = float(np.diff(edges).mean())
    for ax, name in zip(axes.flat, names, strict=False):
        counts = np.asarray(hists[name], dtype=float)
        ax.bar(centres, counts, width=width * 0.9, color=np.where(centres < 0, "#c0392b", "#27ae60"))
        ax.set_title(name, fontsize=6)
        ax.tick_params(labelsize=5)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return to_uri(fig)


def three_view_figure(view: ThreeView, threshold: float = 0.6) -> str:
    """Frame + heat map | coherence spectrum | actions and velocity / acceleration / jerk with limits."""
    plt = _plt()
    fig = plt.figure(figsize=(11.5, 4.4))
    grid = fig.add_gridspec(4, 3, width_ratios=[1.0, 1.2, 1.8], hspace=0.55, wspace=0.3)
    _draw_attention_view(fig.add_subplot(grid[:, 0]), view)
    _draw_coherence_view(fig.add_subplot(grid[:, 1]), view, threshold)
    steps = np.arange(len(view.signal))
    _draw_action_timeline(fig.add_subplot(grid[0, 2]), view, steps)
    limits = dict(view.limits.items()) if view.limits is not None else {}
    for row, name in enumerate(("velocity", "acceleration", "jerk"), start=1):
        _draw_derivative(fig.add_subplot(grid[row, 2]), view, steps, name, limits, legend=row == 1)
    fig.suptitle(view.title, fontsize=9)
    return to_uri(fig)


def _draw_attention_view(ax: Any, view: ThreeView) -> None:
    """View 1: the frame at the key step, under the attention heat map when there is one."""
    from ..diagnostics.attention import overlay

    shown = view.frame if view.heat is None else overlay(view.frame, view.heat, alpha=0.6)
    ax.imshow(shown)
    ax.set_title(label("view1", step=view.key_step), fontsize=8)
    ax.axis("off")


def _draw_coherence_view(ax: Any, view: ThreeView, threshold: float) -> None:
    """View 2: the episode's γ_VA(f) with its band, or a placeholder when it has no spectrum."""
    if view.freqs is not None and view.gamma is not None and view.band is not None:
        _draw_coherence(ax, view.freqs, view.gamma, view.band, threshold)
        ax.set_title(label("view2", value=view.band_coherence), fontsize=8)
    else:
        ax.text(0.5, 0.5, label("no_spectrum"), ha="center", va="center", fontsize=8)
        ax.set_title(label("view2_none"), fontsize=8)
        ax.axis("off")


def _draw_action_timeline(ax: Any, view: ThreeView, steps: np.ndarray) -> None:
    """View 3, top row: discrete action ids (policy solid, expert dashed), continuous actions per dimension
    against the expert's suggestion at the same state, or else the signal itself."""
    if view.actions is not None and np.asarray(view.actions).ndim == 1:
        ax.step(steps[: len(view.actions)], view.actions, where="post", color="#1f618d", label=label("policy"))
        if view.expert_actions is not None:
            exp = np.asarray(view.expert_actions, dtype=float)
            ax.step(steps[: len(exp)], exp, where="post", color="#e67e22", linestyle="--", label=label("expert_here"))
        if view.action_names:
            ax.set_yticks(range(len(view.action_names)), view.action_names, fontsize=5)
    elif (
        view.actions is not None
        and np.asarray(view.actions).ndim == 2
        and view.expert_actions is not None
        and np.asarray(view.expert_actions).shape == np.asarray(view.actions).shape
    ):  # continuous: policy (solid) vs the expert's suggestion at the same state (dashed), per dimension
        acts, exp = np.asarray(view.actions, dtype=float), np.asarray(view.expert_actions, dtype=float)
        for d in range(acts.shape[1]):
            name = view.action_names[d].split(" (")[0] if d < len(view.action_names) else f"a{d}"
            (line,) = ax.plot(steps[: len(acts)], acts[:, d], linewidth=1.0, label=name)
            legend_name = label("expert_dashed") if d == 0 else None
            ax.plot(
                steps[: len(exp)], exp[:, d], linewidth=0.8, linestyle="--", color=line.get_color(), label=legend_name
            )
    else:
        for d in range(view.signal.shape[1]):
            ax.plot(steps, view.signal[:, d], linewidth=1.0, label=view.signal_names[d])
    ax.axvline(view.key_step, color="#7d3c98", linewidth=0.8)
    ax.set_title(label("view3"), fontsize=8)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=5, loc="upper right", ncol=2)


def _draw_derivative(
    ax: Any, view: ThreeView, steps: np.ndarray, name: str, limits: dict[str, list[float]], legend: bool
) -> None:
    """View 3, one lower row: derivative ``name`` per signal dimension, its ±limits (dashed) and every step
    that breaks one (x at the step's largest magnitude); a legend when ``legend``."""
    values = view.derivatives.get(name)
    if values is not None and len(values):
        x = steps[len(steps) - len(values) :]
        for d in range(values.shape[1]):
            ax.plot(x, values[:, d], linewidth=0.9, label=view.signal_names[d])
            if name in limits:
                lim = limits[name][d]
                ax.axhline(lim, **{**THRESHOLD_STYLE, "linewidth": 0.6})
                ax.axhline(-lim, **{**THRESHOLD_STYLE, "linewidth": 0.6})
        flags = view.flags.get(name)
        if flags is not None and flags.any():
            hit = np.flatnonzero(flags)
            peak = np.abs(values).max(1)  # (T_k,)
            ax.scatter(hit, peak[hit - (len(steps) - len(values))], marker="x", color="#c0392b", s=18, zorder=3)
    ax.axvline(view.key_step, color="#7d3c98", linewidth=0.8)
    ax.set_ylabel(label(name)[:5], fontsize=6)
    ax.tick_params(labelsize=5)
    if legend and values is not None:
        ax.legend(fontsize=5, loc="upper right", ncol=3)
