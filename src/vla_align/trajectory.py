"""Offline trajectory matching (chapter 5.8): ADE, FDE and DTW between predicted and expert trajectories.

All three compare two sequences of vectors (action chunks or state trajectories) with the Euclidean
distance per step, d_t = ||pred_t − target_t||_2:

* ``ade``  average displacement error: the mean of d_t over the valid steps of a trajectory;
* ``fde``  final displacement error: d_t at the *last valid* step (the largest t with mask True);
* ``dtw``  dynamic time warping, which lets the two sequences run at different speeds (and have
  different lengths). Convention (the one of ``dtaidistance.dtw_ndim.distance`` and
  ``tslearn.metrics.dtw``)::

      dtw(a, b)               = sqrt( min_path Σ_{(i, j) ∈ path} ||a_i − b_j||² )
      dtw(a, b, squared=True) =       min_path Σ_{(i, j) ∈ path} ||a_i − b_j||²     (= dtw(a, b) ** 2)

  over monotone, continuous warping paths from (0, 0) to (T1 − 1, T2 − 1) with steps (1, 0),
  (0, 1), (1, 1), no window and no slope penalty. It is therefore *not* the sum of Euclidean
  distances along the path: for two equally long sequences matched step by step it is
  sqrt(Σ_t d_t²), not Σ_t d_t. It is in the units of the vectors and grows like sqrt(T).

Masks are (..., T) bool with True for valid steps (chunks padded at episode ends). ADE / FDE of a
trajectory without a valid step are NaN; DTW is computed on the valid steps only, taken in order
(the masked-out steps are removed, not skipped over by the path). ``trajectory_metrics`` averages
per-trajectory values over the trajectories that have a valid step (each trajectory weighs the
same, whatever its length) and reports ``traj/ade``, ``traj/fde`` and ``traj/dtw``.

ADE / FDE are torch (differentiable, any device, computed in the inputs' dtype); DTW runs in float64
numpy, with the O(T1·T2) recursion vectorised along anti-diagonals and over the batch (a wavefront
that holds three diagonals, O(B·(T1 + T2)) memory).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["ade", "dtw", "dtw_batch", "fde", "step_distances", "trajectory_metrics"]

ArrayLike = Tensor | np.ndarray


def _tensor(x: object, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(x).__name__}")
    return x if x.is_floating_point() else x.double()


def _check_pair(pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None) -> tuple[Tensor, Tensor, Tensor]:
    """Validated (..., T, A) pred / target and a (..., T) bool mask (all True when None)."""
    p, t = _tensor(pred, "pred"), _tensor(target, "target")
    if p.ndim < 2:
        raise ValueError(f"pred must be (..., T, A) with at least 2 dimensions, got shape {tuple(p.shape)}")
    if p.shape[-2] < 1 or p.shape[-1] < 1:
        raise ValueError(f"pred needs at least one step and one dimension, got shape {tuple(p.shape)}")
    if t.shape != p.shape:
        raise ValueError(f"target shape {tuple(t.shape)} must equal pred shape {tuple(p.shape)} (..., T, A)")
    if mask is None:
        return p, t, torch.ones(p.shape[:-1], dtype=torch.bool, device=p.device)
    m = torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask
    if not isinstance(m, Tensor):
        raise TypeError(f"mask must be a torch.Tensor or a numpy array, got {type(mask).__name__}")
    if m.shape != p.shape[:-1]:
        raise ValueError(
            f"mask shape {tuple(m.shape)} must be pred's shape without the last axis, {tuple(p.shape[:-1])}"
        )
    if m.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = valid step), got dtype {m.dtype}")
    return p, t, m.to(p.device)


def step_distances(pred: ArrayLike, target: ArrayLike) -> Tensor:
    """Euclidean distance per step, ||pred_t − target_t||_2: (..., T, A) x 2 -> (..., T)."""
    p, t, _ = _check_pair(pred, target, None)
    result: Tensor = torch.linalg.vector_norm(p - t, dim=-1)  # (..., T)
    return result


def ade(pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Average displacement error per trajectory: (..., T, A) x 2, mask (..., T) -> (...,).

    Mean over the valid steps of ||pred_t − target_t||_2; NaN for a trajectory without a valid step.
    A single (T, A) trajectory gives a 0-d tensor.
    """
    p, t, m = _check_pair(pred, target, mask)
    d = torch.linalg.vector_norm(p - t, dim=-1)  # (..., T)
    total = torch.where(m, d, torch.zeros_like(d)).sum(-1)  # (...,)
    count = m.sum(-1)  # (...,)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def fde(pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> Tensor:
    """Final displacement error per trajectory: ||pred_t − target_t||_2 at the last valid step -> (...,).

    "Last valid" is the largest t with mask True (masks need not be prefixes); NaN without a valid step.
    """
    p, t, m = _check_pair(pred, target, mask)
    steps = torch.arange(m.shape[-1], device=m.device)  # (T,)
    last = torch.where(m, steps, -1).amax(-1)  # (...,)  -1 = no valid step
    idx = last.clamp(min=0)[..., None, None].expand(*last.shape, 1, p.shape[-1])  # (..., 1, A)
    d = torch.linalg.vector_norm(p.gather(-2, idx) - t.gather(-2, idx), dim=-1)[..., 0]  # (...,)
    return torch.where(last >= 0, d, torch.full_like(d, float("nan")))


def _as_sequence(x: ArrayLike, name: str) -> np.ndarray:
    """(T,) or (T, A) -> float64 (T, A)."""
    arr = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a (T,) or (T, A) sequence, got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name} must have at least one step, got shape {arr.shape}")
    return arr


def _dtw_wavefront(x: np.ndarray, y: np.ndarray, n_len: np.ndarray, m_len: np.ndarray) -> np.ndarray:
    """Minimal summed squared cost D[b, n_b, m_b] per pair: x (B, n, A), y (B, m, A), lengths (B,) -> (B,).

    D[i, j] = ||x_{i-1} − y_{j-1}||² + min(D[i−1, j−1], D[i−1, j], D[i, j−1]), D[0, 0] = 0, the rest of
    row / column 0 at +inf, filled one anti-diagonal k = i + j at a time for all pairs at once. Each diagonal
    is stored as an (n + 1, B) array indexed by i with the batch innermost, so its three predecessors are
    contiguous slices of the two previous diagonals; with y reversed in time the cost of a diagonal is a
    contiguous slice of x minus one of y too. Only three diagonals are held, and every numpy call works on
    a whole (L, B) block in place, so the Python overhead is a few calls per diagonal. The cost is summed
    over the A dimensions in order (the order of dtaidistance's C loop, so results are bit-identical).
    D[i, j] depends only on cells (i', j') <= (i, j), so pair b's value is read off diagonal n_b + m_b.
    """
    bsz, n, dims = x.shape
    m = y.shape[1]
    xs = np.ascontiguousarray(x.transpose(2, 1, 0))  # (A, n, B)
    ys = np.ascontiguousarray(y[:, ::-1].transpose(2, 1, 0))  # (A, m, B), time reversed
    diags = [np.full((n + 1, bsz), np.inf) for _ in range(3)]  # diagonals k mod 3, indexed by i
    diags[0][0] = 0.0  # k = 0: D[0, 0]
    diff, best, out = np.empty((dims, min(n, m), bsz)), np.empty((min(n, m), bsz)), np.empty(bsz)
    ends = n_len + m_len
    order = np.argsort(ends, kind="stable")
    bounds = np.searchsorted(ends[order], np.arange(n + m + 2))  # pairs ending on diagonal k: bounds[k:k+2]
    for k in range(2, n + m + 1):
        prev2, prev1, cur = diags[(k - 2) % 3], diags[(k - 1) % 3], diags[k % 3]
        i0, i1 = max(1, k - m), min(n, k - 1)  # rows of this diagonal; j = k − i
        d = diff[:, : i1 - i0 + 1]
        np.subtract(xs[:, i0 - 1 : i1], ys[:, m - k + i0 : m - k + i1 + 1], out=d)  # x_{i−1} − y_{j−1}
        np.multiply(d, d, out=d)
        t = best[: i1 - i0 + 1]
        np.minimum(prev2[i0 - 1 : i1], prev1[i0 - 1 : i1], out=t)  # D[i−1, j−1], D[i−1, j]
        np.minimum(t, prev1[i0 : i1 + 1], out=t)  # D[i, j−1]
        c = cur[i0 : i1 + 1]
        np.add.reduce(d, axis=0, out=c)  # Σ over dimensions, in order
        c += t
        if k == 2:
            prev2[0] = np.inf  # this buffer holds diagonal 3 next, where D[0, 3] = inf
        rows = order[bounds[k] : bounds[k + 1]]
        if len(rows):
            out[rows] = cur[n_len[rows], rows]
    return out


def dtw(a: ArrayLike, b: ArrayLike, squared: bool = False) -> float:
    """Dynamic time warping between a (T1, A) and b (T2, A) (or 1-D (T,) sequences), in float64.

    Returns sqrt(min over warping paths of Σ ||a_i − b_j||²) (the dtaidistance / tslearn convention);
    ``squared=True`` returns that minimum sum itself, i.e. exactly ``dtw(a, b) ** 2`` (same optimal path).
    T1 and T2 may differ; A must match.
    """
    x, y = _as_sequence(a, "a"), _as_sequence(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"b has {y.shape[1]} dimensions per step but a has {x.shape[1]}; they must match")
    total = float(_dtw_wavefront(x[None], y[None], np.array([len(x)]), np.array([len(y)]))[0])
    return total if squared else float(np.sqrt(total))


def _compress(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's valid steps to the front, in order: (B, T, A), (B, T) -> (B, T, A), lengths (B,)."""
    order = np.argsort(~m, axis=1, kind="stable")  # valid steps first, original order kept
    return np.take_along_axis(x, order[:, :, None], axis=1), m.sum(1)


def dtw_batch(
    a: ArrayLike,  # (B, T1, A)
    b: ArrayLike,  # (B, T2, A)
    mask_a: ArrayLike | None = None,  # (B, T1) bool valid steps of a
    mask_b: ArrayLike | None = None,  # (B, T2) bool valid steps of b
    squared: bool = False,
) -> Tensor:
    """Per-pair DTW (the convention of :func:`dtw`) on the valid steps of each row -> (B,) float64.

    NaN for a row where either sequence has no valid step.
    """
    x = a.detach().cpu().double().numpy() if isinstance(a, Tensor) else np.asarray(a, dtype=np.float64)
    y = b.detach().cpu().double().numpy() if isinstance(b, Tensor) else np.asarray(b, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"a must be (B, T1, A), got shape {x.shape}")
    if y.ndim != 3 or y.shape[0] != x.shape[0] or y.shape[2] != x.shape[2]:
        raise ValueError(f"b must be (B, T2, A) with a's B and A, got shape {y.shape} beside a's {x.shape}")
    masks = []
    for name, mask, seq in (("mask_a", mask_a, x), ("mask_b", mask_b, y)):
        if mask is None:
            masks.append(np.ones(seq.shape[:2], dtype=bool))
            continue
        mk = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        if mk.shape != seq.shape[:2] or mk.dtype != np.bool_:
            raise ValueError(f"{name} must be a bool array of shape {seq.shape[:2]}, got {mk.dtype} {mk.shape}")
        masks.append(mk)
    (x, n_len), (y, m_len) = _compress(x, masks[0]), _compress(y, masks[1])
    out = np.full(x.shape[0], np.nan)
    ok = np.nonzero((n_len > 0) & (m_len > 0))[0]
    if len(ok):
        n, m = int(n_len[ok].max()), int(m_len[ok].max())  # trailing padding of the longest is never needed
        out[ok] = _dtw_wavefront(x[ok, :n], y[ok, :m], n_len[ok], m_len[ok])
    return torch.from_numpy(out if squared else np.sqrt(out))


def trajectory_metrics(pred: ArrayLike, target: ArrayLike, mask: ArrayLike | None = None) -> dict[str, float]:
    """``traj/ade``, ``traj/fde``, ``traj/dtw``: per-trajectory values averaged over trajectories with a valid step.

    pred, target: (B, T, A) or a single (T, A); mask: (B, T) / (T,) bool, None = all valid. The same mask
    applies to both (DTW on the valid steps of each). Raises ValueError when no trajectory has a valid step.
    """
    p, t, m = _check_pair(pred, target, mask)
    if p.ndim == 2:
        p, t, m = p[None], t[None], m[None]
    if p.ndim != 3:
        raise ValueError(f"pred must be (B, T, A) or (T, A), got shape {tuple(p.shape)}")
    valid = m.any(-1)  # (B,)
    if not bool(valid.any()):
        raise ValueError("mask has no valid step in any trajectory; trajectory metrics are undefined")
    with torch.no_grad():
        values = {
            "traj/ade": ade(p, t, m),
            "traj/fde": fde(p, t, m),
            "traj/dtw": dtw_batch(p, t, m, m).to(p.device),
        }
    return {key: float(v[valid].double().mean()) for key, v in values.items()}
