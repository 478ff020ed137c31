"""Reachability distillation (chapter 5.3, gotcha 9): a student head learns a feasibility checker's soft verdict.

The teacher (:func:`vla_align.physics.reachability_teacher_logits`) is softened with a temperature so that
unreachable samples are penalised without forcing the student's logits to equal the teacher's:
    p = σ(t / T),  L = T² · KL(Bern(p) ‖ Bern(σ(s / T))) = T² · [BCE(s / T, p) − BCE(t / T, p)]
The T² factor keeps gradient magnitudes comparable across temperatures (∂L/∂s = T (σ(s/T) − p) ≈ (s − t) / 4
for large T). :func:`perturb_infeasible` makes the infeasible negatives the student is trained on.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

PerturbMode = Literal["compress", "ripple", "mixed"]


def distillation_loss(
    student_logits: Tensor,  # (B,)
    teacher_logits: Tensor,  # (B,), a target: detached here
    temperature: float = 2.0,
) -> Tensor:
    """Soft binary distillation T² · KL(σ(t/T) ‖ σ(s/T)), mean over the batch; 0 iff s = t.

    The same gradient as the BCE form T² · BCE(s/T, σ(t/T)); the target's entropy is subtracted so that a
    perfect student scores 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = teacher_logits.detach() / temperature
    p = torch.sigmoid(t)
    s = student_logits / temperature
    kl = F.binary_cross_entropy_with_logits(s, p, reduction="none") - F.binary_cross_entropy_with_logits(
        t, p, reduction="none"
    )
    return temperature**2 * kl.mean()


def _valid_lengths(x: Tensor, mask: Tensor | None) -> Tensor:
    """(B,) number of valid steps; masks are assumed to be a valid prefix (chunks padded at episode ends)."""
    if mask is None:
        return torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    return mask.sum(1).clamp_min(1)


def _compress(x: Tensor, lengths: Tensor, speed: float) -> Tensor:
    """Play x (B, T, A) ``speed`` times faster by linear interpolation, holding the last valid step."""
    t = torch.arange(x.shape[1], dtype=x.dtype, device=x.device)  # (T,)
    pos = torch.minimum(t[None, :] * speed, (lengths - 1).to(x.dtype)[:, None])  # (B, T)
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, (lengths - 1)[:, None])
    frac = (pos - lo.to(x.dtype))[..., None]  # (B, T, 1)
    idx_lo = lo[..., None].expand_as(x)
    idx_hi = hi[..., None].expand_as(x)
    return torch.lerp(x.gather(1, idx_lo), x.gather(1, idx_hi), frac)


def _ripple(x: Tensor, valid: Tensor, scale: float, gen: torch.Generator | None) -> Tensor:
    """Add an alternating-sign ripple (the Nyquist frequency) of amplitude ~ scale × the typical step size.

    Per (sample, dim) amplitude = scale · max(RMS valid step, batch-mean RMS step) · U(0.5, 1.5).
    """
    step = (x[:, 1:] - x[:, :-1]).square()  # (B, T − 1, A)
    pair = (valid[:, 1:] & valid[:, :-1]).to(x.dtype)[..., None]  # (B, T − 1, 1)
    rms = ((step * pair).sum(1) / pair.sum(1).clamp_min(1.0)).sqrt()  # (B, A)
    amp = scale * torch.maximum(rms, rms.mean().expand_as(rms))  # (B, A)
    jitter = 0.5 + torch.rand(x.shape, generator=gen, dtype=x.dtype, device=x.device)  # (B, T, A)
    sign = 1.0 - 2.0 * (torch.arange(x.shape[1], device=x.device) % 2).to(x.dtype)  # (T,) +1, −1, ...
    return x + amp[:, None, :] * jitter * sign[None, :, None] * valid[..., None].to(x.dtype)


@torch.no_grad()
def perturb_infeasible(
    x: Tensor,  # (B, T, A) feasible action chunks
    gen: torch.Generator | None = None,
    scale: float = 1.0,
    mask: Tensor | None = None,  # (B, T) bool valid prefix
    mode: PerturbMode = "mixed",
    signal: Literal["position", "velocity"] = "position",
) -> Tensor:
    """Infeasible negatives (B, T, A) made from feasible chunks; padded steps are left unchanged.

    compress: play the chunk (1 + scale)× faster (velocity ×s, acceleration ×s², jerk ×s³; a velocity
    signal is also multiplied by s). ripple: add a Nyquist-frequency ripple of ~scale typical steps, which
    multiplies jerk far more than velocity. mixed: each sample gets one of the two at random (``gen``).
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()
    speed = 1.0 + scale
    compressed = _compress(x, _valid_lengths(x, mask), speed)
    if signal == "velocity":
        compressed = compressed * speed
    rippled = _ripple(x, valid, scale, gen)
    if mode == "compress":
        out = compressed
    elif mode == "ripple":
        out = rippled
    elif mode == "mixed":
        pick = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5  # (B,)
        out = torch.where(pick[:, None, None], compressed, rippled)
    else:
        raise ValueError(f"mode must be 'compress', 'ripple' or 'mixed', got {mode!r}")
    return torch.where(valid[..., None], out, x)
