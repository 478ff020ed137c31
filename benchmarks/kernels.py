"""Speed and agreement of the numeric kernels against their reference implementations.

    .venv/bin/python benchmarks/kernels.py [--repeats 15] [--threads 1 2] [--quick] [--out DIR]

* DTW: ``vla_align.trajectory.dtw_batch`` (an anti-diagonal wavefront over the whole batch) against a
  Python loop over ``dtaidistance.dtw_ndim.distance(..., use_c=True)`` (its C inner loop), on 256 pairs
  of 200 x 4 and on the 64 pairs of 8 x 4 that evaluation's chunks of 8 actions give. The kernel runs in
  float64 whatever the input dtype; float32 rows feed both sides the same float32 values.
* Coherence: ``vla_align.losses.spectral.coherence`` against ``scipy.signal.coherence`` (window 'hann',
  scipy's defaults otherwise) at the sizes the spectral loss uses (windows of loss.spectral.window = 32
  steps, nperseg 16, 8 windows x 7 action dims), the report's per-episode coherence (concatenated held-out
  episodes: 7 channels, nperseg = 10 s of steps at 10 and 30 Hz) and two long segments (256, 1,024).

Every size runs at each ``--threads`` value (``torch.set_num_threads`` in this process) in float32 and
float64. Ours and the reference alternate within each repeat, in a shuffled order (whichever runs first
after the other pays for the evicted caches, so a fixed order biases the ratio); the table reports the
largest absolute difference to the reference, the median wall ms, the median process CPU ms (all threads)
and the speed-up, reference wall / ours wall.

With 2 threads on cores another process keeps busy, torch's OpenMP parallel regions (any op over ATen's grain
of 32,768 elements, MKL's FFT and GEMM) can each stall for a scheduler slice; ``OMP_WAIT_POLICY=PASSIVE`` in
the environment (it must be set before torch is imported) removes most of that. Run on an idle machine for
the figures that matter.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import torch
from common import cpu_name, write_table

from vla_align.losses.spectral import coherence
from vla_align.trajectory import dtw_batch


@dataclass
class Case:
    kernel: str
    size: str
    ours: Callable[[], object]
    ref: Callable[[], object]
    diff: float


def _timed(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall ms, process CPU ms) per function, repeats interleaved in a shuffled order."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up: caches, lazy imports, thread pools
    keys = list(fns)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(keys)
        for k in keys:
            c0, t0 = time.process_time(), time.perf_counter()
            fns[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return {k: (1e3 * statistics.median(wall[k]), 1e3 * statistics.median(cpu[k])) for k in fns}


def _dtw_case(pairs: int, steps: int, dims: int, dtype: torch.dtype) -> Case | None:
    try:
        from dtaidistance import dtw_ndim
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    a = torch.randn(pairs, steps, dims, generator=g, dtype=torch.float64).to(dtype)
    b = torch.randn(pairs, steps, dims, generator=g, dtype=torch.float64).to(dtype)
    xs, ys = a.double().numpy(), b.double().numpy()

    def ref() -> np.ndarray:
        return np.array([dtw_ndim.distance(xs[i], ys[i], use_c=True) for i in range(pairs)])

    diff = float(np.abs(dtw_batch(a, b).numpy() - ref()).max())
    return Case("DTW vs dtaidistance C", f"{pairs} x {steps} x {dims}", lambda: dtw_batch(a, b), ref, diff)


def _coherence_case(shape: tuple[int, ...], nperseg: int, fs: float, dtype: torch.dtype) -> Case:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    y = (0.7 * x.double() + torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)
    xn, yn = x.numpy(), y.numpy()

    def ref() -> object:
        return scipy.signal.coherence(xn, yn, fs=fs, window="hann", nperseg=nperseg)

    ours = coherence(x, y, fs, nperseg)[1].double().numpy()
    diff = float(np.abs(ours - scipy.signal.coherence(xn, yn, fs=fs, nperseg=nperseg)[1]).max())
    size = f"{' x '.join(map(str, shape))}, nperseg {nperseg}"
    return Case("coherence vs scipy", size, lambda: coherence(x, y, fs, nperseg), ref, diff)


def _cases(dtype: torch.dtype, quick: bool) -> list[Case]:
    dtw_sizes = [(64, 8, 4)] if quick else [(64, 8, 4), (256, 200, 4)]
    coh_sizes: list[tuple[tuple[int, ...], int, float]] = [((8, 7, 32), 16, 10.0)]  # the spectral loss
    if not quick:
        coh_sizes += [((7, 2000), 100, 10.0), ((7, 3000), 300, 30.0), ((4, 4096), 256, 100.0)]
        coh_sizes += [((4, 8192), 1024, 100.0)]
    out = [c for s in dtw_sizes if (c := _dtw_case(*s, dtype)) is not None]
    return out + [_coherence_case(shape, n, fs, dtype) for shape, n, fs in coh_sizes]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timed repeats per size (>= 9)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch.set_num_threads values")
    parser.add_argument("--quick", action="store_true", help="smoke run: the small sizes, 3 repeats")
    parser.add_argument("--out", type=Path, default=None, help="also write DIR/table.md")
    args = parser.parse_args()
    repeats = 3 if args.quick else max(9, args.repeats)
    lines = [
        f"machine: {cpu_name()}, torch {torch.__version__}, {repeats} interleaved repeats, median ms",
        "",
        "| kernel | size | dtype | threads | max abs diff | ours ms | ref ms | ours CPU ms | ref CPU ms | speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for threads in args.threads:
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.float64):
            for case in _cases(dtype, args.quick):
                t = _timed({"ours": case.ours, "ref": case.ref}, repeats)
                (ow, oc), (rw, rc) = t["ours"], t["ref"]
                lines.append(
                    f"| {case.kernel} | {case.size} | {str(dtype).removeprefix('torch.')} | {threads} | "
                    f"{case.diff:.1e} | {ow:.3f} | {rw:.3f} | {oc:.3f} | {rc:.3f} | {rw / ow:.2f}x |"
                )
                print(lines[-1], flush=True)
    if args.out is None:
        print("\n".join(lines))
    else:
        write_table(lines, args.out)


if __name__ == "__main__":
    main()
