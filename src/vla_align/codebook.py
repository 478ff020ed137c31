"""A VQ codebook shared by image, text and action (chapter 5.5: one discrete vocabulary across V/L/A).

K unit-norm codes e_1..e_K live in the shared space Z (dim D). A vector z is assigned to the code of
highest cosine similarity (``nearest code on the unit sphere``):

    k*(z) = argmax_k cos(z, e_k),      z_q = e_{k*}     (z and e_k normalised first)

and passes the straight-through estimator forward, ẑ = z + sg(z_q − z), so the value is the code
and the gradient is the identity. With ẑ_i = z_i / ‖z_i‖ and N vectors:

    L_codebook = 1/N Σ_i ‖sg(ẑ_i) − z_q,i‖²          (moves the codes; 0 with EMA updates)
    L_commit   = 1/N Σ_i ‖ẑ_i − sg(z_q,i)‖²           (pulls the embeddings to their code; weight β)

both equal 2 − 2·cos for unit vectors, so they lie in [0, 4]. With ``ema=True`` the codes are not
parameters but exponential moving averages of the vectors assigned to them (VQ-VAE-2 style):

    n_k ← γ n_k + (1 − γ) |{i : k*(z_i) = k}|
    m_k ← γ m_k + (1 − γ) Σ_{i : k*(z_i) = k} ẑ_i
    e_k = m_k / n_k                                   (normalised when used: a spherical k-means step)

Codes unused for ``restart_after`` consecutive updates are restarted on a random vector of the
current batch (the generator is seeded by the update count, so a resumed run restarts the same
codes). Under ``torch.distributed`` the counts and sums are summed across ranks and restarts are
broadcast from rank 0, so every rank keeps the same codebook.

Health metrics: the perplexity exp(H(p)) of the code histogram p of a batch (K for uniform usage,
1 when a single code is used), the fraction of the K codes a batch uses, and the cross-modal code
agreement: the fraction of paired samples whose two embeddings land on the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .config import check_float, check_int


@dataclass
class CodebookConfig:
    weight: float = 0.0  # λ of the codebook objective (0 = off)
    codes: int = 256  # K
    beta: float = 0.25  # commitment weight: the ``vq_commit`` term is weighted λ·β
    ema: bool = True  # codes as moving averages of their vectors (no ``vq_codebook`` term)
    decay: float = 0.99  # γ of the EMA updates
    restart_after: int = 0  # restart codes unused for this many updates (0 = never)
    agreement: float = 1.0  # relative weight of the cross-modal agreement term (λ·agreement)
    temperature: float = 0.1  # τ of the soft code assignments of the agreement term

    def __post_init__(self) -> None:
        check_float("loss.codebook.weight", self.weight, 0.0, why="λ of the codebook objective, 0 = off")
        check_int("loss.codebook.codes", self.codes, 2, why="K codes")
        check_float("loss.codebook.beta", self.beta, 0.0, why="the commitment weight")
        check_float("loss.codebook.decay", self.decay, 0.0, 1.0, lo_open=True, hi_open=True, why="γ of the EMA")
        check_int("loss.codebook.restart_after", self.restart_after, 0, why="updates unused, 0 = never")
        check_float("loss.codebook.agreement", self.agreement, 0.0, why="relative weight of the agreement term")
        check_float("loss.codebook.temperature", self.temperature, 0.0, lo_open=True, why="τ of the soft assignments")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def perplexity(indices: Tensor, codes: int) -> Tensor:
    """exp(entropy) of the histogram of (N,) code ids over ``codes`` codes."""
    p = torch.bincount(indices.reshape(-1), minlength=codes).double() / max(indices.numel(), 1)  # (K,)
    return torch.exp(-(p * p.clamp_min(1e-30).log()).sum())


def usage(indices: Tensor, codes: int) -> float:
    """Fraction of the codes that (N,) ids use."""
    return float(torch.unique(indices).numel()) / codes


def agreement(a: Tensor, b: Tensor) -> float:
    """Fraction of paired samples whose (N,) code ids are equal."""
    return float((a == b).float().mean())


class SharedCodebook(nn.Module):
    """K codes in Z shared by all modalities; ``quantize`` assigns, estimates and (EMA) updates."""

    embed: Tensor  # (K, D) buffers, EMA codes only
    ema_count: Tensor  # (K,)
    ema_sum: Tensor  # (K, D)
    unused: Tensor  # (K,) int64
    updates: Tensor  # () int64

    def __init__(self, cfg: CodebookConfig, dim: int, seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.dim = cfg, dim
        gen = torch.Generator().manual_seed(seed)  # construction does not touch the global RNG
        init = F.normalize(torch.randn(cfg.codes, dim, generator=gen), dim=-1)  # (K, D)
        self.seed = seed
        if cfg.ema:
            self.register_buffer("embed", init.clone())  # (K, D) e_k = m_k / n_k
            self.register_buffer("ema_count", torch.ones(cfg.codes))  # (K,) n_k
            self.register_buffer("ema_sum", init.clone())  # (K, D) m_k
            self.weight: nn.Parameter | None = None
        else:
            self.weight = nn.Parameter(init)  # (K, D)
        self.register_buffer("unused", torch.zeros(cfg.codes, dtype=torch.long))  # (K,) updates since last use
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def codes(self) -> Tensor:
        """(K, D) unit-norm codes."""
        # the parameter is cloned so that a restart after the forward pass cannot touch saved tensors
        raw = self.weight.float().clone() if self.weight is not None else self.embed
        return F.normalize(raw, dim=-1)

    def assign(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(N, D) -> (N,) nearest code ids by cosine and the (N, K) cosine similarities."""
        with torch.autocast(z.device.type, enabled=False):
            sim = F.normalize(z.float(), dim=-1) @ self.codes.t()  # (N, K)
        return sim.argmax(dim=-1), sim

    def quantize(self, z: Tensor, update: bool | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(N, D) -> (ẑ_q straight-through (N, D), code ids (N,), {"commit", "codebook"} losses).

        ``update`` (default: in training mode with gradients on) applies the EMA step and restarts.
        Runs in float32 even under autocast: a bf16 similarity would pick codes by rounding.
        """
        with torch.autocast(z.device.type, enabled=False):
            z_unit = F.normalize(z.float(), dim=-1)  # (N, D)
            codes = self.codes  # (K, D)
            indices = (z_unit @ codes.detach().t()).argmax(dim=-1)  # (N,)
        z_q = codes[indices]  # (N, D)
        losses = {"commit": ((z_unit - z_q.detach()) ** 2).sum(-1).mean()}
        if self.weight is not None:
            losses["codebook"] = ((z_unit.detach() - z_q) ** 2).sum(-1).mean()
        else:
            losses["codebook"] = z_unit.new_zeros(())
        if update is None:
            update = self.training and torch.is_grad_enabled()
        if update:
            self._update(z_unit.detach(), indices)
        return z_unit + (z_q - z_unit).detach(), indices, losses

    @torch.no_grad()
    def _update(self, z: Tensor, indices: Tensor) -> None:  # (N, D) unit vectors, (N,)
        k = self.cfg.codes
        onehot = F.one_hot(indices, k).to(z.dtype)  # (N, K)
        counts, sums = onehot.sum(0), onehot.t() @ z  # (K,), (K, D)
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        if self.cfg.ema:
            g = self.cfg.decay
            self.ema_count.mul_(g).add_(counts, alpha=1 - g)
            self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
            self.embed.copy_(self.ema_sum / self.ema_count.clamp_min(1e-12)[:, None])
        self.updates += 1
        self.unused.add_(1).masked_fill_(counts > 0, 0)
        if self.cfg.restart_after:
            self._restart(z, self.unused >= self.cfg.restart_after)

    def _restart(self, z: Tensor, dead: Tensor) -> None:  # (N, D), (K,) bool
        n_dead = int(dead.sum())
        if n_dead == 0 or len(z) == 0:
            return
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.updates))
        pick = torch.randint(0, len(z), (n_dead,), generator=gen).to(z.device)
        fresh = z[pick]  # (n_dead, D)
        if _distributed():
            dist.broadcast(fresh, src=0)
        rows = dead.nonzero().squeeze(-1)
        if self.cfg.ema:
            self.embed[rows] = fresh
            self.ema_sum[rows] = fresh
            self.ema_count[rows] = 1.0
        else:
            assert self.weight is not None
            self.weight.data[rows] = fresh.to(self.weight.dtype)
        self.unused[rows] = 0

    def soft_assign(self, z: Tensor, temperature: float) -> Tensor:
        """(N, D) -> (N, K) log-softmax of cos(z, e_k) / τ over detached codes."""
        with torch.autocast(z.device.type, enabled=False):
            sim = F.normalize(z.float(), dim=-1) @ self.codes.detach().t()  # (N, K)
            return F.log_softmax(sim / temperature, dim=-1)


def agreement_loss(log_q_a: Tensor, log_q_b: Tensor) -> Tensor:
    """Symmetric swapped prediction between two (N, K) log soft assignments of paired samples:

        ½ · 1/N Σ_i [ KL(sg q_a,i ‖ q_b,i) + KL(sg q_b,i ‖ q_a,i) ]

    Each modality's assignment learns to predict its partner's (detached) one; KL is the
    cross-entropy H(sg q_a, q_b) minus the target's entropy, a constant under the stop-gradient,
    so the gradient is the cross-entropy's and the value is 0 when the assignments coincide.
    """
    p_a, p_b = log_q_a.detach().exp(), log_q_b.detach().exp()  # (N, K) targets
    kl_ab = (p_a * (log_q_a.detach() - log_q_b)).sum(-1)  # (N,)
    kl_ba = (p_b * (log_q_b.detach() - log_q_a)).sum(-1)  # (N,)
    return 0.5 * (kl_ab + kl_ba).mean()
