"""Spectral alignment of visual motion and actions (chapter 5.3 / 5.4).

Cross-spectral coherence between a visual trajectory projected to the action dims and the action
trajectory, from Welch estimates:
    γ_VA(f) = |S_VA(f)|² / (S_VV(f) S_AA(f)) ∈ [0, 1],   L_spec = Σ_f (1 − γ_VA(f)) ω(f) / Σ_f ω(f)
(the chapter's ∫ (1 − γ) ω df on the discrete Welch grid, normalised by the band's weight). γ = 1 means the
two signals are related by a linear time-invariant filter at f; independent signals give γ ≈ 1/K for K
averaged segments, so coherence needs K ≥ 2 (with one segment γ ≡ 1).

Also the low-frequency-first reconstruction loss for action chunks: squared spectral error with weights that
decay with the frequency index, so coarse motion is fitted before jitter.

Welch conventions follow ``scipy.signal.csd`` / ``coherence`` with their defaults: periodic Hann window,
per-segment mean detrend, one-sided spectrum, 'density' scaling, mean over segments, no boundary padding.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..config import check_float, check_int, out_of_range
from ..errors import ConfigError

WeightKind = Literal["box", "hann"]

CHAPTER_SEGMENT_SECONDS = 10.0  # the chapter's band assumes 10 s segments: first non-DC bin 0.1 Hz
CHAPTER_BAND_TOP_HZ = 1.0  # the chapter's upper band edge: task-level motion lies below ~1 Hz
ACTION_NYQUIST_FRACTION = 0.4  # action content above 0.3-0.5 fs is controller jitter / aliasing
MIN_BAND_BINS = 3
MIN_NPERSEG = 8  # smallest segment with MIN_BAND_BINS non-DC bins at or below 0.4 fs: floor(0.4 * 8) = 3


def _check_segments(length: int, nperseg: int, noverlap: int | None) -> int:
    """Validate Welch parameters for a signal of ``length`` samples; return the hop (nperseg - noverlap)."""
    if nperseg < 1:
        raise ValueError(f"nperseg must be >= 1, got {nperseg}")
    if nperseg > length:
        raise ValueError(f"nperseg={nperseg} is longer than the signal ({length} samples)")
    noverlap = nperseg // 2 if noverlap is None else noverlap
    if not 0 <= noverlap < nperseg:
        raise ValueError(f"noverlap must be in [0, nperseg), got {noverlap} with nperseg={nperseg}")
    return nperseg - noverlap


def _num_segments(length: int, nperseg: int, noverlap: int | None = None) -> int:
    step = nperseg - (nperseg // 2 if noverlap is None else noverlap)
    return 0 if length < nperseg else (length - nperseg) // step + 1


# ATen's internal grain size: an elementwise op or a reduction over fewer elements stays on the calling thread.
PARALLEL_GRAIN = 32768
SMALL_DFT_ELEMENTS = 4 * PARALLEL_GRAIN  # segment batches up to this many DFT products skip the FFT (see below)


@functools.lru_cache(maxsize=32)
def _dft_basis(nperseg: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(2, F, n): cos(2π f t / n) and −sin(2π f t / n), the real and imaginary rows of the one-sided DFT."""
    t = torch.arange(nperseg, dtype=torch.float64)
    f = torch.arange(nperseg // 2 + 1, dtype=torch.float64)
    angle = 2.0 * math.pi * torch.remainder(f[:, None] * t[None, :], nperseg) / nperseg  # (F, n), exact phase
    return torch.stack((torch.cos(angle), -torch.sin(angle))).to(dtype=dtype, device=device)


def _rfft_on_calling_thread(segs: Tensor) -> Tensor:
    """``torch.fft.rfft(segs, dim=-1)`` as broadcast multiply-adds, in pieces below ATen's parallel grain.

    With more than one torch thread, MKL's FFT starts its OpenMP team even for a few kB of segments; when the
    cores are shared (another process, data-loader workers) the team waits for a descheduled thread and a
    20 µs transform takes milliseconds. The spectral loss's segments are that small (nperseg 16), so they
    take this path: O(n²) work, but on the calling thread only and differentiable like the FFT.
    """
    n = segs.shape[-1]
    basis = _dft_basis(n, segs.dtype, segs.device)  # (2, F, n)
    flat = segs.reshape(-1, 1, 1, n)  # (R, 1, 1, n)
    rows = max(1, PARALLEL_GRAIN // basis.numel())
    out = torch.cat([(piece * basis).sum(-1) for piece in torch.split(flat, rows)])  # (R, 2, F)
    return torch.complex(out[:, 0], out[:, 1]).reshape(*segs.shape[:-1], -1)


def _rfft(segs: Tensor) -> Tensor:
    """rfft along the last axis, kept off MKL's OpenMP team when torch runs several threads on the CPU.

    With one thread (or on an accelerator) this is ``torch.fft.rfft``. With several, MKL's FFT starts its team
    even for a few kB; when the cores are shared the team waits for a descheduled thread and a transform of
    microseconds takes milliseconds. So small batches (the loss's) take :func:`_rfft_on_calling_thread`.
    """
    if (
        segs.device.type == "cpu"
        and torch.get_num_threads() > 1
        and segs.numel() * (segs.shape[-1] + 2) <= SMALL_DFT_ELEMENTS
    ):
        return _rfft_on_calling_thread(segs)
    spec: Tensor = torch.fft.rfft(segs, dim=-1)
    return spec


def _segment_spectra(x: Tensor, fs: float, nperseg: int, step: int) -> Tensor:
    """Windowed, detrended segment FFTs scaled so that mean_k conj(X_k) Y_k is the one-sided CSD density.

    x (..., T) real -> (..., K, F) complex, K = (T - nperseg) // step + 1, F = nperseg // 2 + 1.
    Each segment gets sqrt(c / (fs Σ w²)) with c = 2 on bins that stand for a ± frequency pair, 1 on DC
    (and on Nyquist for even nperseg).
    """
    window, scale = _window_and_scale(nperseg, float(fs), x.dtype, x.device)  # (n,), (F,)
    segs = x.unfold(-1, nperseg, step)  # (..., K, n)
    segs = (segs - segs.mean(-1, keepdim=True)) * window
    result: Tensor = _rfft(segs) * scale  # (..., K, F)
    return result


@functools.lru_cache(maxsize=32)
def _window_and_scale(nperseg: int, fs: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Periodic Hann window (n,) and the per-bin density scale sqrt(c_f / (fs Σ w²)) (F,), cached per size."""
    window = torch.hann_window(nperseg, periodic=True, dtype=torch.float64)
    sides = torch.full((nperseg // 2 + 1,), 2.0, dtype=torch.float64)
    sides[0] = 1.0
    if nperseg % 2 == 0:
        sides[-1] = 1.0
    scale = torch.sqrt(sides / (fs * window.square().sum()))
    return window.to(dtype=dtype, device=device), scale.to(dtype=dtype, device=device)


def welch_csd(
    x: Tensor,  # (..., T) real
    y: Tensor,  # (..., T) real, same shape
    fs: float,
    nperseg: int,
    noverlap: int | None = None,  # None = nperseg // 2
) -> tuple[Tensor, Tensor]:
    """Welch cross-spectral density S_xy(f) = mean_k conj(X_k(f)) Y_k(f) · c_f / (fs Σ w²), differentiable.

    Returns freqs (F,) in Hz and S_xy (..., F) complex, F = nperseg // 2 + 1; equals
    ``scipy.signal.csd(x, y, fs, window='hann', nperseg=nperseg, noverlap=noverlap)`` and, for x = y, its
    real part equals ``scipy.signal.welch``.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    step = _check_segments(x.shape[-1], nperseg, noverlap)
    sx = _segment_spectra(x, fs, nperseg, step)  # (..., K, F)
    sy = _segment_spectra(y, fs, nperseg, step)
    freqs = torch.fft.rfftfreq(nperseg, d=1.0 / fs, dtype=x.dtype, device=x.device)  # (F,)
    return freqs, (sx.conj() * sy).mean(-2)


def _pair_spectra(x: Tensor, y: Tensor, fs: float, nperseg: int, step: int) -> tuple[Tensor, Tensor]:
    """:func:`_segment_spectra` of x and y (same shape) in one pass over the stacked pair (half the calls)."""
    spec = _segment_spectra(torch.stack((x, y)), fs, nperseg, step)  # (2, ..., K, F)
    return spec[0], spec[1]


def _coherence_from_segments(sx: Tensor, sy: Tensor, seg_weight: Tensor | None, eps: float) -> Tensor:
    """(..., K, F) segment spectra (+ optional (..., K) segment weights) -> γ (..., F)."""
    if seg_weight is None:
        sxy = (sx.conj() * sy).mean(-2)  # (..., F)
        sxx = sx.abs().square().mean(-2)
        syy = sy.abs().square().mean(-2)
    else:
        w = (seg_weight / seg_weight.sum(-1, keepdim=True).clamp_min(1.0)).unsqueeze(-1)  # (..., K, 1)
        sxy = (w * sx.conj() * sy).sum(-2)
        sxx = (w * sx.abs().square()).sum(-2)
        syy = (w * sy.abs().square()).sum(-2)
    # eps is relative to the mean auto-spectra, so γ stays scale invariant; the floor keeps 0/0 (a constant
    # channel) at γ = 0 with a zero gradient instead of NaN. Both are far below S_xx S_yy on real signals.
    floor = math.sqrt(torch.finfo(sx.real.dtype).tiny)
    denom = sxx * syy + eps * sxx.mean(-1, keepdim=True) * syy.mean(-1, keepdim=True) + floor
    return sxy.abs().square() / denom


def coherence(
    x: Tensor,  # (..., T) real
    y: Tensor,  # (..., T) real, same shape
    fs: float,
    nperseg: int,
    noverlap: int | None = None,
    eps: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    """Magnitude-squared coherence γ(f) = |S_xy|² / (S_xx S_yy + eps · mean_f S_xx · mean_f S_yy + floor).

    Returns freqs (F,) and γ (..., F) in [0, 1]. Matches ``scipy.signal.coherence`` (window='hann') on
    ordinary signals; a constant channel gives γ = 0 with a zero gradient where scipy gives NaN.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    step = _check_segments(x.shape[-1], nperseg, noverlap)
    sx, sy = _pair_spectra(x, y, fs, nperseg, step)  # (..., K, F) each
    freqs = torch.fft.rfftfreq(nperseg, d=1.0 / fs, dtype=x.dtype, device=x.device)
    return freqs, _coherence_from_segments(sx, sy, None, eps)


# --- frequency band ------------------------------------------------------------------------------------


def default_nperseg(window_len: int, fs: float | None = None) -> int:
    """Welch segment length for a window of ``window_len`` samples.

    nperseg = max(8, min(window_len // 2, round(10 s · fs))): half the window gives three 50%-overlapping
    segments (K ≥ 2 is needed for coherence to mean anything); with ``fs`` it is capped at the chapter's 10 s
    segment, since a longer segment only adds resolution below the band while fewer segments add variance.
    """
    n = window_len // 2
    if fs is not None:
        n = min(n, round(CHAPTER_SEGMENT_SECONDS * fs))
    return max(MIN_NPERSEG, n)


def default_band(fs: float, window_len: int, nperseg: int | None = None) -> tuple[float, float]:
    """Coherence band (lo, hi) in Hz for control rate ``fs`` and windows of ``window_len`` samples.

    On the Welch grid f_k = k·Δf, Δf = fs / nperseg (nperseg defaults to :func:`default_nperseg`):
        lo = Δf (first non-DC bin)
        hi = k_hi·Δf,  k_hi = min(floor(0.4·nperseg), max(3, floor(1 Hz / Δf)))
    i.e. the chapter's 0.1–1 Hz (exact for 10 s segments) generalised: start at the lowest resolvable
    frequency, stop at 1 Hz but extend to at least three bins, never above 0.4·fs. Raises ConfigError when
    the window cannot hold two segments or three bins fit below 0.4·fs.
    """
    if fs <= 0:
        raise ConfigError(f"the control rate fs must be > 0 Hz, got {fs}")
    n = default_nperseg(window_len, fs) if nperseg is None else nperseg
    need = n + (n - n // 2)  # two segments at 50% overlap
    if window_len < need:
        raise ConfigError(
            f"coherence needs at least two Welch segments: a window of {window_len} steps is too short for "
            f"nperseg={n} (need >= {need} steps; at least {MIN_NPERSEG + MIN_NPERSEG // 2} with the smallest "
            f"segment of {MIN_NPERSEG}); use longer action windows or set loss.spectral.weight to 0"
        )
    k_cap = math.floor(ACTION_NYQUIST_FRACTION * n + 1e-9)
    if k_cap < MIN_BAND_BINS:
        raise ConfigError(
            f"nperseg={n} leaves {k_cap} non-DC bins at or below {ACTION_NYQUIST_FRACTION}·fs; the band needs "
            f">= {MIN_BAND_BINS}: use nperseg >= {MIN_NPERSEG} (loss.spectral.nperseg, 0 = auto)"
        )
    df = fs / n
    k_hi = min(k_cap, max(MIN_BAND_BINS, math.floor(CHAPTER_BAND_TOP_HZ / df + 1e-9)))
    return df, k_hi * df


def band_weight(freqs: Tensor, band: tuple[float, float], kind: WeightKind = "box") -> Tensor:
    """ω(f) on the grid ``freqs`` (F,), zero outside [lo, hi] (edges inclusive, to 1e-6 of a bin).

    box: ω = 1 in band. hann: ω = sin²(π (f − lo + δ/2) / (hi − lo + δ)), δ the bin spacing: a raised cosine
    over the band widened by half a bin each side, so every in-band bin (edges included) has ω > 0.
    """
    lo, hi = band
    if not lo <= hi:
        raise ConfigError(f"band must satisfy lo <= hi, got {band}")
    spacing = float(freqs[1] - freqs[0]) if len(freqs) > 1 else 1.0
    tol = 1e-6 * spacing
    inside = (freqs >= lo - tol) & (freqs <= hi + tol)  # (F,)
    if kind == "box":
        return inside.to(freqs.dtype)
    if kind == "hann":
        taper = torch.sin(math.pi * (freqs - lo + spacing / 2) / (hi - lo + spacing)).square()
        return torch.where(inside, taper, torch.zeros_like(taper))
    raise ConfigError(f"band weight kind must be 'box' or 'hann', got {kind!r}")


def _band_coherence(
    v: Tensor,
    a: Tensor,
    fs: float,
    nperseg: int | None,
    noverlap: int | None,
    band: tuple[float, float] | None,
    weight_kind: WeightKind,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """γ (B, C, F), normalised band weights (F,), and (B,) bool: samples with >= 2 valid segments."""
    if v.shape != a.shape or v.dim() != 3:
        raise ValueError(f"v and a must both be (B, C, T), got {tuple(v.shape)} and {tuple(a.shape)}")
    length = v.shape[-1]
    n = default_nperseg(length, fs) if nperseg is None else nperseg
    if band is None:
        band = default_band(fs, length, n)  # raises a ConfigError that says what to change
    step = _check_segments(length, n, noverlap)
    if _num_segments(length, n, noverlap) < 2:
        raise ConfigError(
            f"coherence needs at least two Welch segments; windows of {length} steps give one with "
            f"nperseg={n}, noverlap={n - step}: lower loss.spectral.nperseg or use longer windows"
        )
    sv, sa = _pair_spectra(v, a, fs, n, step)  # (B, C, K, F) each
    seg_weight = None
    ok = torch.ones(v.shape[0], dtype=torch.bool, device=v.device)  # (B,)
    if mask is not None:
        seg_valid = mask.unfold(-1, n, step).all(-1)  # (B, K): a segment counts only if all its steps do
        seg_weight = seg_valid.to(v.dtype)[:, None, :]  # (B, 1, K)
        ok = seg_valid.sum(-1) >= 2
    gamma = _coherence_from_segments(sv, sa, seg_weight, eps=1e-12)  # (B, C, F)
    freqs = torch.fft.rfftfreq(n, d=1.0 / fs, dtype=v.dtype, device=v.device)
    w = band_weight(freqs, band, weight_kind)  # (F,)
    if float(w.sum()) <= 0:
        raise ConfigError(f"band {band} Hz holds no Welch bin (spacing {fs / n:g} Hz); widen loss.spectral.band")
    return gamma, w / w.sum(), ok


def coherence_loss(
    v: Tensor,  # (B, C, T) visual trajectory projected to C action dims
    a: Tensor,  # (B, C, T) action trajectory
    fs: float,
    nperseg: int | None = None,  # None = default_nperseg(T, fs)
    noverlap: int | None = None,  # None = nperseg // 2
    band: tuple[float, float] | None = None,  # None = default_band(fs, T, nperseg)
    weight_kind: WeightKind = "box",
    mask: Tensor | None = None,  # (B, T) bool valid steps
) -> Tensor:
    """L_spec = mean_{B,C} Σ_f (1 − γ(f)) ω(f) / Σ_f ω(f), a scalar in [0, 1].

    With ``mask`` only segments whose steps are all valid are averaged, and samples left with fewer than two
    such segments drop out of the mean (a zero loss with a graph if none is left).
    """
    gamma, w, ok = _band_coherence(v, a, fs, nperseg, noverlap, band, weight_kind, mask)
    per = ((1.0 - gamma) * w).sum(-1)  # (B, C)
    keep = ok.to(per.dtype)[:, None].expand_as(per)  # (B, C)
    return (per * keep).sum() / keep.sum().clamp_min(1.0)


def band_average_coherence(
    v: Tensor,  # (B, C, T)
    a: Tensor,  # (B, C, T)
    fs: float,
    nperseg: int | None = None,
    noverlap: int | None = None,
    band: tuple[float, float] | None = None,
    mask: Tensor | None = None,  # (B, T) bool
) -> Tensor:
    """Mean in-band γ_VA per (B, C) channel (box weights); NaN for samples with < 2 valid segments.

    A diagnostic: the chapter's health threshold is γ_VA ≥ 0.6 in band.
    """
    gamma, w, ok = _band_coherence(v, a, fs, nperseg, noverlap, band, "box", mask)
    mean = (gamma * w).sum(-1)  # (B, C)
    return torch.where(ok[:, None], mean, torch.full_like(mean, float("nan")))


# --- low-frequency-first reconstruction ----------------------------------------------------------------


def lowfreq_weights(length: int, decay: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-sided bin weights (T // 2 + 1,): w_k ∝ m_k / (1 + k)^decay, Σ_k w_k = 1.

    m_k = 2 for bins that stand for a ± frequency pair, 1 for DC (and Nyquist when T is even), so the
    weights are an honest weighting of the full spectrum: decay = 0 gives w_k = m_k / T.
    """
    k = torch.arange(length // 2 + 1, dtype=dtype)
    mult = torch.full_like(k, 2.0)
    mult[0] = 1.0
    if length % 2 == 0:
        mult[-1] = 1.0
    w = mult / (1.0 + k) ** decay
    return w / w.sum()


def lowfreq_reconstruction_loss(
    pred: Tensor,  # (B, T, A)
    target: Tensor,  # (B, T, A)
    mask: Tensor | None = None,  # (B, T) bool valid steps
    decay: float = 1.0,
) -> Tensor:
    """Low-frequency-first spectral reconstruction loss (scalar).

    Padded steps are zeroed in both, D_k = rFFT_t(pred − target) (B, F, A), F = T // 2 + 1, and
        L = mean_{B,A} Σ_k w_k |D_k|² / n_b,   w = lowfreq_weights(T, decay),  n_b = valid steps of sample b.
    By Parseval (Σ_full |D_k|² = T Σ_t d_t²), decay = 0 gives exactly the per-sample masked MSE
    mean_{B,A} Σ_t d_t² / n_b (the plain MSE without a mask); decay > 0 shifts weight to low frequencies.
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"pred and target must both be (B, T, A), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if decay < 0:
        raise ValueError(f"decay must be >= 0, got {decay}")
    diff = pred - target  # (B, T, A)
    length = diff.shape[1]
    if mask is None:
        count = torch.full((diff.shape[0],), float(length), dtype=diff.dtype, device=diff.device)  # (B,)
    else:
        diff = diff * mask[..., None].to(diff.dtype)
        count = mask.sum(1).to(diff.dtype).clamp_min(1.0)
    spec = torch.fft.rfft(diff, dim=1)  # (B, F, A)
    w = lowfreq_weights(length, decay, diff.dtype).to(diff.device)  # (F,)
    per = (w[None, :, None] * spec.abs().square()).sum(1) / count[:, None]  # (B, A)
    result: Tensor = per.mean()
    return result


# --- config ---------------------------------------------------------------------------------------------


@dataclass
class SpectralConfig:
    weight: float = 0.0  # weight of L_spec (coherence loss); 0 = off
    nperseg: int = 0  # Welch segment length in steps; 0 = default_nperseg(window, fs)
    band: tuple[float, float] | None = None  # (lo, hi) Hz; None = default_band(fs, window, nperseg)
    weight_kind: WeightKind = "box"  # ω(f) inside the band: "box" or "hann"
    recon_weight: float = 0.0  # weight of the low-frequency-first reconstruction loss; 0 = off
    recon_decay: float = 1.0  # w_k ∝ 1 / (1 + k)^decay
    window: int = 32  # steps per episode window for L_spec (episodes shorter than this are skipped)
    windows: int = 8  # episode windows per training step for L_spec (window * windows extra image encodes)

    def __post_init__(self) -> None:
        for name in ("weight", "recon_weight", "recon_decay"):
            check_float(f"loss.spectral.{name}", getattr(self, name), 0.0, why="0 = off" if "weight" in name else "")
        check_int("loss.spectral.window", self.window, 2 * MIN_NPERSEG, why="steps per episode window")
        check_int("loss.spectral.windows", self.windows, 1, why="episode windows per training step")
        check_int("loss.spectral.nperseg", self.nperseg, 0, why="Welch segment length, 0 = auto")
        if self.nperseg != 0 and self.nperseg < MIN_NPERSEG:
            raise ConfigError(
                f"loss.spectral.nperseg must be 0 (auto) or >= {MIN_NPERSEG} so that {MIN_BAND_BINS} bins fit "
                f"below {ACTION_NYQUIST_FRACTION}·fs, got {self.nperseg}"
            )
        if self.weight_kind not in ("box", "hann"):
            raise ConfigError(f"loss.spectral.weight_kind must be 'box' or 'hann', got {self.weight_kind!r}")
        self.band = self._parse_band(self.band)

    @staticmethod
    def _parse_band(band: object) -> tuple[float, float] | None:
        if band is None or (isinstance(band, str) and band.strip().lower() in ("", "none", "auto")):
            return None
        parts: list[object] = []
        if isinstance(band, str):
            parts = list(band.replace(",", " ").split())
        elif isinstance(band, list | tuple):
            parts = list(band)
        try:
            if len(parts) != 2:
                raise ValueError
            lo, hi = (float(p) for p in parts)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise out_of_range(
                "loss.spectral.band", band, "two frequencies lo hi in Hz", "or null / auto for the default band"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise out_of_range("loss.spectral.band", band, "two finite frequencies with 0 <= lo < hi", "Hz")
        return lo, hi
