"""Welch CSD / coherence against scipy.signal, gradients, the default band, and the low-frequency-first loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from vla_align.errors import ConfigError
from vla_align.losses.spectral import (
    SpectralConfig,
    band_average_coherence,
    band_weight,
    coherence,
    coherence_loss,
    default_band,
    default_nperseg,
    lowfreq_reconstruction_loss,
    lowfreq_weights,
    welch_csd,
)

FS = 10.0
SEGMENTS = [(64, None), (50, 10), (32, 31), (16, 0), (15, None)]  # (nperseg, noverlap)


def _noise_pair(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal(shape)


def _sine_pair(seed: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / FS
    shared = 3 * np.sin(2 * np.pi * 0.7 * t) + 2 * np.sin(2 * np.pi * 2.1 * t + 1.0)
    x = shared + 0.5 * rng.standard_normal(length)
    y = 0.8 * np.roll(shared, 2) + 0.5 * rng.standard_normal(length)  # delayed, scaled copy + noise
    return x, y


def _ours(x: np.ndarray, y: np.ndarray, nperseg: int, noverlap: int | None) -> tuple[np.ndarray, np.ndarray]:
    f, g = coherence(torch.from_numpy(x), torch.from_numpy(y), FS, nperseg, noverlap)
    return f.numpy(), g.numpy()


@pytest.mark.parametrize(("nperseg", "noverlap"), SEGMENTS)
@pytest.mark.parametrize("kind", ["noise", "sine"])
def test_coherence_matches_scipy(kind: str, nperseg: int, noverlap: int | None) -> None:
    x, y = _noise_pair(0, (256,)) if kind == "noise" else _sine_pair(0, 256)
    f_ref, g_ref = scipy.signal.coherence(x, y, fs=FS, window="hann", nperseg=nperseg, noverlap=noverlap)
    f, g = _ours(x, y, nperseg, noverlap)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-12)
    assert np.abs(g - g_ref).max() < 1e-5
    assert g.min() >= 0 and g.max() <= 1


def test_sine_coherence_is_high_at_the_shared_tones() -> None:
    # Sanity that the comparison above is not vacuous: the shared tones are coherent, the rest is not.
    x, y = _sine_pair(1, 512)
    f, g = _ours(x, y, 100, None)
    assert g[np.argmin(np.abs(f - 0.7))] > 0.95 and g[np.argmin(np.abs(f - 2.1))] > 0.95
    assert np.median(g) < 0.6


@pytest.mark.parametrize(("nperseg", "noverlap"), [(32, None), (20, 5)])
def test_batched_coherence_matches_scipy_per_channel(nperseg: int, noverlap: int | None) -> None:
    x, y = _noise_pair(2, (3, 4, 128))
    y = 0.6 * x + y  # partially coherent
    _, g = _ours(x, y, nperseg, noverlap)  # (3, 4, F)
    for b in range(3):
        for c in range(4):
            _, g_ref = scipy.signal.coherence(
                x[b, c], y[b, c], fs=FS, window="hann", nperseg=nperseg, noverlap=noverlap
            )
            assert np.abs(g[b, c] - g_ref).max() < 1e-5


@pytest.mark.parametrize(("nperseg", "noverlap"), [(64, None), (15, 3)])
def test_welch_csd_matches_scipy_csd_and_welch(nperseg: int, noverlap: int | None) -> None:
    x, y = _sine_pair(3, 200)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    _, sxy = welch_csd(xt, yt, FS, nperseg, noverlap)
    _, ref = scipy.signal.csd(x, y, fs=FS, window="hann", nperseg=nperseg, noverlap=noverlap)
    np.testing.assert_allclose(sxy.numpy(), ref, rtol=1e-10, atol=1e-12)
    _, sxx = welch_csd(xt, xt, FS, nperseg, noverlap)
    _, pxx = scipy.signal.welch(x, fs=FS, window="hann", nperseg=nperseg, noverlap=noverlap)
    np.testing.assert_allclose(sxx.real.numpy(), pxx, rtol=1e-10, atol=1e-12)
    assert sxx.imag.abs().max() < 1e-12


def test_gradcheck_coherence() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 24, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 24, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: coherence(a, b, FS, 8, 3)[1], (x, y))


def test_gradcheck_coherence_loss() -> None:
    g = torch.Generator().manual_seed(1)
    v = torch.randn(2, 2, 24, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.randn(2, 2, 24, generator=g, dtype=torch.float64, requires_grad=True)
    for kind in ("box", "hann"):
        assert torch.autograd.gradcheck(lambda p, q, k=kind: coherence_loss(p, q, FS, 8, weight_kind=k), (v, a))


def test_constant_channel_gives_zero_coherence_and_finite_gradient() -> None:
    x = torch.full((40,), 0.3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    _, gamma = coherence(x, y, FS, 16)
    assert torch.all(gamma == 0)
    gamma.sum().backward()
    assert x.grad is not None and y.grad is not None
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_coherence_loss_identical_vs_independent() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(8, 3, 64, generator=g, dtype=torch.float64)
    assert coherence_loss(a, a, FS) < 1e-9
    assert coherence_loss(3 * a + 1, a, FS) < 1e-9  # coherence ignores gain and offset
    noise = torch.randn(8, 3, 64, generator=g, dtype=torch.float64)
    assert coherence_loss(noise, a, FS) > 0.4
    assert float(band_average_coherence(a, a, FS).min()) > 1 - 1e-9
    assert band_average_coherence(noise, a, FS).shape == (8, 3)


def test_coherence_loss_mask_drops_padded_segments() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 2, 48, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 48, dtype=torch.bool)
    mask[1, 32:] = False
    v = a.clone()
    v[1, :, 32:] = torch.randn(2, 16, generator=g, dtype=torch.float64)  # garbage only in the padding
    assert coherence_loss(v, a, FS, nperseg=16, mask=mask) < 1e-9
    assert coherence_loss(v, a, FS, nperseg=16) > 0.01
    short = torch.zeros(2, 48, dtype=torch.bool)
    short[:, :20] = True  # one valid segment at most: no sample counts
    assert coherence_loss(v, a, FS, nperseg=16, mask=short) == 0
    assert torch.isnan(band_average_coherence(v, a, FS, nperseg=16, mask=short)).all()


@pytest.mark.parametrize(("fs", "window_len"), [(10, 12), (10, 16), (10, 200), (50, 50), (1, 12), (30, 90), (5, 1000)])
def test_default_band_has_three_bins(fs: float, window_len: int) -> None:
    n = default_nperseg(window_len, fs)
    lo, hi = default_band(fs, window_len)
    freqs = torch.fft.rfftfreq(n, d=1.0 / fs, dtype=torch.float64)
    w = band_weight(freqs, (lo, hi))
    assert w.sum() >= 3
    assert w[0] == 0  # DC is never in band
    assert hi <= 0.4 * fs + 1e-9
    assert (window_len - n) // (n - n // 2) + 1 >= 2  # at least two Welch segments


def test_default_band_is_the_chapter_band_for_10s_segments() -> None:
    lo, hi = default_band(10.0, 200)
    assert math.isclose(lo, 0.1) and math.isclose(hi, 1.0)


@pytest.mark.parametrize(("fs", "window_len", "nperseg"), [(10, 11, None), (10, 8, None), (10, 64, 6), (10, 20, 16)])
def test_default_band_raises_when_impossible(fs: float, window_len: int, nperseg: int | None) -> None:
    with pytest.raises(ConfigError, match=r"loss\.spectral"):
        default_band(fs, window_len, nperseg)


def test_band_weight_kinds() -> None:
    freqs = torch.arange(11, dtype=torch.float64) * 0.5  # 0 .. 5 Hz
    box = band_weight(freqs, (1.0, 2.5))
    assert box.tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    hann = band_weight(freqs, (1.0, 2.5), kind="hann")
    assert torch.all((hann > 0) == (box > 0))
    assert torch.allclose(hann[2:6], hann[2:6].flip(0))  # symmetric taper


def test_lowfreq_loss_zero_and_mask() -> None:
    g = torch.Generator().manual_seed(4)
    target = torch.randn(3, 16, 2, generator=g)
    assert lowfreq_reconstruction_loss(target, target) == 0
    pred = target + 0.1 * torch.randn(3, 16, 2, generator=g)
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[0, 10:] = False
    mask[2, 5:] = False
    base = lowfreq_reconstruction_loss(pred, target, mask)
    pred2, target2 = pred.clone(), target.clone()
    pred2[~mask] = 100.0
    target2[~mask] = -7.0
    assert torch.allclose(lowfreq_reconstruction_loss(pred2, target2, mask), base)
    assert lowfreq_reconstruction_loss(pred2, target2) > 100 * base


@pytest.mark.parametrize("length", [16, 15])
def test_lowfreq_loss_prefers_low_frequency_errors(length: int) -> None:
    t = torch.arange(length, dtype=torch.float64)
    target = torch.zeros(1, length, 1, dtype=torch.float64)
    low = torch.cos(2 * math.pi * 1 * t / length)[None, :, None]
    high = torch.cos(2 * math.pi * (length // 2 - 1) * t / length)[None, :, None]
    assert torch.isclose(low.square().sum(), high.square().sum())  # equal energy
    loss_low = lowfreq_reconstruction_loss(low, target, decay=1.0)
    loss_high = lowfreq_reconstruction_loss(high, target, decay=1.0)
    assert loss_low > 2 * loss_high
    flat = [lowfreq_reconstruction_loss(e, target, decay=0.0) for e in (low, high)]
    assert torch.isclose(flat[0], flat[1])


def test_lowfreq_loss_decay0_is_mse() -> None:
    g = torch.Generator().manual_seed(5)
    for length in (16, 15):
        pred = torch.randn(4, length, 3, generator=g, dtype=torch.float64)
        target = torch.randn(4, length, 3, generator=g, dtype=torch.float64)
        loss = lowfreq_reconstruction_loss(pred, target, decay=0.0)
        assert torch.isclose(loss, torch.nn.functional.mse_loss(pred, target), rtol=1e-12)
        assert torch.isclose(lowfreq_weights(length, 0.0, torch.float64).sum(), torch.tensor(1.0, dtype=torch.float64))
        mask = torch.arange(length)[None, :] < torch.tensor([length, 9, 5, 1])[:, None]  # (4, T)
        sq = ((pred - target) ** 2 * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, A) per-sample MSE
        assert torch.isclose(lowfreq_reconstruction_loss(pred, target, mask, decay=0.0), sq.mean(), rtol=1e-12)


def test_spectral_config_validation() -> None:
    cfg = SpectralConfig(band=[0.1, 1], weight=0.5)  # type: ignore[arg-type]  # JSON gives lists
    assert cfg.band == (0.1, 1.0)
    assert SpectralConfig(band="0.2,2").band == (0.2, 2.0)  # type: ignore[arg-type]  # CLI gives a string
    assert SpectralConfig(band="auto").band is None  # type: ignore[arg-type]
    for kwargs, field in [
        ({"weight": -1.0}, "weight"),
        ({"recon_weight": float("nan")}, "recon_weight"),
        ({"recon_decay": -0.5}, "recon_decay"),
        ({"nperseg": 4}, "nperseg"),
        ({"band": (1.0, 0.5)}, "band"),
        ({"band": (1.0,)}, "band"),
        ({"weight_kind": "triangle"}, "weight_kind"),
    ]:
        with pytest.raises(ConfigError, match=rf"loss\.spectral\.{field}\b"):
            SpectralConfig(**kwargs)  # type: ignore[arg-type]


def test_coherence_loss_rejects_single_segment_and_runs_in_float32() -> None:
    a = torch.randn(2, 3, 24, generator=torch.Generator().manual_seed(6))
    with pytest.raises(ConfigError, match="two Welch segments"):
        coherence_loss(a, a, FS, nperseg=20, band=(0.5, 3.0))  # one segment: γ ≡ 1 would say nothing
    v = (a + 0.3 * torch.randn(2, 3, 24, generator=torch.Generator().manual_seed(7))).requires_grad_()
    loss = coherence_loss(v, a, FS)
    loss.backward()
    assert loss.dtype == torch.float32 and 0 < float(loss.detach()) < 1
    assert v.grad is not None and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "nperseg"), [((8, 7, 32), 16), ((7, 600), 100), ((3, 900), 300), ((2, 2100), 1024)])
def test_coherence_matches_scipy_at_loss_and_report_sizes(
    shape: tuple[int, ...], nperseg: int, dtype: torch.dtype
) -> None:
    # The loss' windows (loss.spectral.window = 32 -> nperseg 16) and the report's concatenated episodes.
    x, y = _noise_pair(3, shape)
    y = 0.7 * x + y
    tx, ty = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
    _, g = coherence(tx, ty, FS, nperseg)
    _, g_ref = scipy.signal.coherence(tx.double().numpy(), ty.double().numpy(), fs=FS, window="hann", nperseg=nperseg)
    assert g.dtype == dtype and g.shape == g_ref.shape
    assert np.abs(g.double().numpy() - g_ref).max() < (1e-9 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_small_segment_path_equals_fft_path_values_and_gradients(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # With several torch threads, small segment batches take the multiply-add DFT instead of the FFT; both
    # paths must give the same coherence and the same gradient.
    from vla_align.losses import spectral

    x, y = (torch.from_numpy(a).requires_grad_(True) for a in _noise_pair(4, (4, 3, 32)))
    segs = torch.randn(5, 3, 16, dtype=torch.float64)
    got = spectral._rfft_on_calling_thread(segs)
    assert torch.allclose(got, torch.fft.rfft(segs, dim=-1), rtol=0, atol=1e-12)
    monkeypatch.setattr(spectral.torch, "get_num_threads", lambda: threads)
    loss = spectral.coherence_loss(x, 0.5 * x + y, FS, nperseg=16, band=(FS / 16, 4 * FS / 16))
    gx, gy = torch.autograd.grad(loss, (x, y))
    monkeypatch.undo()
    ref = spectral.coherence_loss(x, 0.5 * x + y, FS, nperseg=16, band=(FS / 16, 4 * FS / 16))
    rx, ry = torch.autograd.grad(ref, (x, y))
    assert torch.allclose(loss, ref, rtol=1e-10, atol=0)
    assert torch.allclose(gx, rx, rtol=1e-8, atol=1e-12) and torch.allclose(gy, ry, rtol=1e-8, atol=1e-12)
