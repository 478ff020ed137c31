"""The Balancer interface and per-objective gradients (chapter 5.10: multi-objective balancing).

A balancer turns the named, already prior-weighted scalar losses {L_i} of one step (the caller
multiplies each term by its config λ first) into one gradient per parameter, written into
``p.grad``. Two families:

* one backward of a weighted sum, g = Σ_i m_i ∇L_i (``fixed``: m_i = 1; ``uncertainty``:
  m_i = exp(−s_i)/2), as cheap as plain training;
* per-objective gradients g_i = ∇L_i first, then a combination (``gradnorm``: Σ_i w_i g_i;
  ``pcgrad``: Σ_i PC(g_i); ``pcgrad_gradnorm``: Σ_i PC(w_i g_i)); these cost K backward passes or
  one batched vector-Jacobian product (:func:`per_objective_grads`).

Which parameters are "shared"
-----------------------------
Decided per parameter tensor from the autograd graph, not by naming a trunk: objective i
*reaches* tensor p when p is a leaf of L_i's graph, and p is *shared* when two or more of the
step's objectives reach it. In the tri-modal model every encoder is shared by two pair losses:

* image encoder + image head: image_text, image_action (+ policy, through its image input);
* text encoder + text head: image_text, text_action (+ policy, through its instruction input);
* action encoder + action head: text_action, image_action;
* ``log_logit_scale`` (one (3,) tensor, one entry per pair): every pair loss, so shared;
* policy fusion and head: policy only, so not shared (nor are the encoders while the policy's
  inputs are detached, or a pair's tensors while a curriculum keeps the other pairs off).

Projections (PCGrad) and gradient norms (GradNorm) are taken over the concatenation of all shared
tensors, an objective's gradient being 0 on the shared tensors it does not reach; both need only
the K×K Gram matrix of the g_i there (:func:`shared_gram`), and the result is Σ_i c_i g_i. A tensor reached
by one objective receives that objective's gradient times its multiplier, unprojected (PCGrad
would leave it unchanged anyway: the other gradients are 0 there).
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError

VJPMode = Literal["auto", "batched", "loop"]
Grads = dict[str, list[Tensor | None]]  # objective name -> one gradient (or None: not reached) per parameter


@dataclass
class VJPStatus:
    """Which path :func:`per_objective_grads` took (process-wide, for logs and benchmarks)."""

    batched_error: str = ""  # the first error of the batched path in "auto" mode; "" = none seen
    last_path: str = ""  # "batched", "loop" or "" (nothing computed yet)
    loop_on_cpu: bool = True  # "auto" uses the loop for CPU losses (measured faster, see per_objective_grads)


VJP_STATUS = VJPStatus()


def trainable(params: Iterable[Tensor]) -> list[Tensor]:
    """The parameters that require a gradient, in order, without duplicates."""
    seen: set[int] = set()
    out: list[Tensor] = []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def reached_params(losses: Mapping[str, Tensor], params: Sequence[Tensor]) -> dict[str, list[bool]]:
    """For each loss, which of ``params`` are leaves of its autograd graph (a walk over grad_fn nodes)."""
    index = {id(p): j for j, p in enumerate(params)}
    out: dict[str, list[bool]] = {}
    for name, loss in losses.items():
        hit = [False] * len(params)
        out[name] = hit
        if not loss.requires_grad:
            continue
        if loss.grad_fn is None:  # the loss is itself a leaf
            if id(loss) in index:
                hit[index[id(loss)]] = True
            continue
        stack = [loss.grad_fn]
        seen = {loss.grad_fn}
        while stack:
            node = stack.pop()
            variable = getattr(node, "variable", None)  # AccumulateGrad nodes hold their leaf
            if variable is not None and id(variable) in index:
                hit[index[id(variable)]] = True
            for nxt, _ in node.next_functions:
                if nxt is not None and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
    return out


def per_objective_grads(
    losses: Mapping[str, Tensor],
    params: Iterable[Tensor],
    *,
    retain_graph: bool = False,
    mode: VJPMode = "auto",
) -> Grads:
    """g_i = ∂L_i/∂θ for every loss, one entry per parameter (None where L_i does not reach it).

    ``batched``: one vector-Jacobian product of the stacked losses with the K×K identity
    (``is_grads_batched``, i.e. vmap over the backward pass). ``loop``: one ``autograd.grad`` per
    objective, over the tensors it reaches. ``auto``: the loop for CPU losses; otherwise the batched
    path (always retaining the graph, so a failure mid-way leaves it intact), remembering its first
    failure in :data:`VJP_STATUS` and using the loop from then on.

    Why the loop on CPU: the batched product pushes K cotangents through every node of the graph,
    also where only one objective flows (K× the work there), while the loop walks each objective's
    own subgraph; on the BabyAI model (batch 256, 1 or 2 CPU threads) the batched path took 1.9-2.0×
    the loop's time (benchmarks/balancers.py). Its fewer, larger kernels are what can win on a GPU.
    The per-objective results of both paths agree to float rounding.
    """
    params = list(params)
    names = list(losses)
    out: Grads = {n: [None] * len(params) for n in names}
    reach = reached_params(losses, params)
    used = [j for j in range(len(params)) if params[j].requires_grad and any(reach[n][j] for n in names)]
    if not used:
        return out
    loop_here = VJP_STATUS.loop_on_cpu and all(losses[n].device.type == "cpu" for n in names)
    batched = mode == "batched" or (
        mode == "auto" and not loop_here and len(names) > 1 and not VJP_STATUS.batched_error
    )
    if batched and _batched_grads(losses, params, used, reach, out, mode, retain_graph):
        VJP_STATUS.last_path = "batched"
        return out
    todo = [(n, [j for j in used if reach[n][j]]) for n in names]
    todo = [(n, js) for n, js in todo if js]
    for k, (n, js) in enumerate(todo):
        keep = retain_graph or k < len(todo) - 1
        grads = torch.autograd.grad(losses[n], [params[j] for j in js], retain_graph=keep, allow_unused=True)
        for j, g in zip(js, grads, strict=True):
            out[n][j] = g
    VJP_STATUS.last_path = "loop"
    return out


def _batched_grads(
    losses: Mapping[str, Tensor],
    params: list[Tensor],
    used: list[int],
    reach: dict[str, list[bool]],
    out: Grads,
    mode: VJPMode,
    retain_graph: bool,
) -> bool:
    """The batched path of :func:`per_objective_grads` into ``out``; False when the graph does not
    support it (``auto`` mode: remembered in :data:`VJP_STATUS`, the caller falls back to the loop)."""
    names = list(losses)
    stacked = torch.stack([losses[n].reshape(()) for n in names])  # (K,)
    eye = torch.eye(len(names), dtype=stacked.dtype, device=stacked.device)
    try:
        rows = torch.autograd.grad(
            stacked,
            [params[j] for j in used],
            grad_outputs=eye,
            is_grads_batched=True,
            allow_unused=True,
            retain_graph=True if mode == "auto" else retain_graph,
        )
    except RuntimeError as exc:
        if mode == "batched":
            raise
        VJP_STATUS.batched_error = str(exc).strip().splitlines()[0][:200]
        warnings.warn(
            f"batched per-objective gradients are not supported by this graph ({VJP_STATUS.batched_error}); "
            "falling back to one backward pass per objective",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    for row_j, j in zip(rows, used, strict=True):
        if row_j is None:
            continue
        for i, n in enumerate(names):
            if reach[n][j]:
                out[n][j] = row_j[i]
    return True


def shared_mask(grads: Grads) -> list[bool]:
    """Per parameter: True when two or more objectives reach it."""
    rows = list(grads.values())
    if not rows:
        return []
    return [sum(row[j] is not None for row in rows) >= 2 for j in range(len(rows[0]))]


def shared_gram(grads: Grads, names: Sequence[str], shared: Sequence[bool]) -> Tensor:
    """(K, K) float64 CPU Gram matrix G_ab = ⟨g_a, g_b⟩ over the shared tensors (0 where unreached).

    One dot product per pair of objectives per shared tensor, reading the gradients in place (no
    (K, N) matrix is built), and one device-to-host transfer at the end.
    """
    k = len(names)
    slots: list[tuple[int, int]] = []
    dots: list[Tensor] = []
    for j, is_shared in enumerate(shared):
        if not is_shared:
            continue
        reached = [(a, g.reshape(-1)) for a, n in enumerate(names) if (g := grads[n][j]) is not None]
        for x, (a, ga) in enumerate(reached):
            for b, gb in reached[x:]:
                slots.append((a, b))
                dots.append(torch.dot(ga, gb))
    gram = torch.zeros(k, k, dtype=torch.float64)
    if dots:
        for (a, b), value in zip(slots, torch.stack(dots).double().cpu().tolist(), strict=True):
            gram[a, b] += value
            if a != b:
                gram[b, a] += value
    return gram


def accumulate(param: Tensor, grad: Tensor) -> None:
    """param.grad += grad (created when None), like a backward pass."""
    grad = grad.detach().to(param.dtype)
    if param.grad is None:
        param.grad = grad.clone().reshape(param.shape)
    else:
        param.grad.add_(grad.reshape(param.shape))


def accumulate_combination(param: Tensor, terms: Sequence[tuple[float, Tensor]]) -> None:
    """param.grad += Σ c·g over ``terms`` (created when None), written in place."""
    for c, g in terms:
        g = g.detach().reshape(param.shape)
        if param.grad is None:
            param.grad = g.to(param.dtype) * c if c != 1.0 else g.to(param.dtype).clone()
        else:
            param.grad.add_(g, alpha=c)


class Balancer(nn.Module, ABC):
    """Writes one combined gradient of several named losses into ``p.grad``.

    ``names``: every loss term the run can produce, in a fixed order (learned state is indexed by
    it, so state_dict keys never change). A term may be absent at a step (a curriculum, a policy
    loss that starts at step 500); a learned state entry starts at its initial value and is
    updated only at steps where its term is present. A loss name not in ``names`` raises
    ``ValueError``: silently weighting an unknown term by 1 would hide a misconfiguration.

    ``floors``: per-name minimum multiplier (prior/distillation terms that an adaptive algorithm
    must not silence); every returned multiplier is >= its floor.
    """

    def __init__(self, names: Sequence[str], floors: Mapping[str, float] | None = None) -> None:
        super().__init__()
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a balancer needs distinct loss names, got {names}")
        floors = dict(floors or {})
        unknown = sorted(set(floors) - set(names))
        if unknown:
            raise ConfigError(
                f"loss.balancer.floors names {unknown[0]!r}, which is not a loss term of this run; "
                f"use one of {', '.join(names)}"
            )
        self.names: tuple[str, ...] = tuple(names)
        self.floors: dict[str, float] = {n: float(floors.get(n, 0.0)) for n in names}

    def active(self, losses: Mapping[str, Tensor]) -> list[str]:
        """The names present in ``losses``, in constructor order (so dict order never matters)."""
        unknown = [n for n in losses if n not in self.names]
        if unknown:
            raise ValueError(
                f"loss term {unknown[0]!r} is not one of this balancer's names ({', '.join(self.names)}); "
                "build the balancer with every term the run can produce"
            )
        for n, v in losses.items():
            if v.numel() != 1:
                raise ValueError(f"loss term {n!r} must be a scalar, got shape {tuple(v.shape)}")
        return [n for n in self.names if n in losses]

    @abstractmethod
    def backward(self, losses: Mapping[str, Tensor], params: Iterable[Tensor], step: int) -> dict[str, float]:
        """Accumulate the combined gradient into ``p.grad`` for every ``p`` in ``params`` a loss
        reaches (the graph is freed); return the multiplier applied to each term of ``losses``."""

    def log_values(self) -> dict[str, float]:
        """Scalars for metrics.jsonl (``balance/...``); empty for stateless balancers."""
        return {}


def weighted_backward(losses: Mapping[str, Tensor], weights: Mapping[str, float], params: Sequence[Tensor]) -> None:
    """One backward pass of Σ_i m_i L_i, accumulated into ``p.grad`` (unreached parameters untouched)."""
    if not params or not losses:
        return
    terms = [weights[n] * v.reshape(()) for n, v in losses.items() if v.requires_grad]
    if not terms:
        return
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    grads = torch.autograd.grad(total, list(params), allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        if g is not None:
            accumulate(p, g)


class PerObjectiveBalancer(Balancer):
    """Computes g_i for every active term and writes Σ_i c_i g_i into the shared tensors, the c_i
    chosen by :meth:`coefficients` from the Gram matrix of the g_i over the shared tensors (every
    balancer here is such a combination: GradNorm c = w, PCGrad c = Σ_r C_r, see ``pcgrad``); each
    unshared tensor gets its single objective's gradient times that objective's multiplier."""

    def __init__(self, names: Sequence[str], floors: Mapping[str, float] | None = None, vjp: VJPMode = "auto") -> None:
        super().__init__(names, floors)
        self.vjp: VJPMode = vjp

    @abstractmethod
    def coefficients(
        self, names: list[str], gram: Tensor, losses: Mapping[str, Tensor], step: int
    ) -> tuple[list[float], dict[str, float]]:
        """(K, K) Gram matrix over the shared tensors -> the K coefficients c_i of the shared gradient
        Σ_i c_i g_i, and the per-name multipliers (applied to the unshared tensors, and returned)."""

    def backward(self, losses: Mapping[str, Tensor], params: Iterable[Tensor], step: int) -> dict[str, float]:
        names = self.active(losses)
        params = trainable(params)
        grads = per_objective_grads({n: losses[n] for n in names}, params, mode=self.vjp)
        shared = shared_mask(grads)
        coef, mult = self.coefficients(names, shared_gram(grads, names, shared), losses, step)
        for j, p in enumerate(params):
            scale = coef if shared[j] else [mult[n] for n in names]
            terms = [(scale[i], g) for i, n in enumerate(names) if (g := grads[n][j]) is not None]
            if terms:
                accumulate_combination(p, terms)
        return mult


class LearnedStateMixin(nn.Module):
    """A lazily created Adam over the module's own parameters whose state travels in state_dict
    (``_extra_state``), so a resumed run takes exactly the steps the uninterrupted one would."""

    lr: float
    _optimizer: torch.optim.Adam | None = None  # created at the first update

    def optimizer(self) -> torch.optim.Adam:
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(list(self.parameters()), lr=self.lr)
        return self._optimizer

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": None if self._optimizer is None else self._optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        opt_state = state.get("optimizer") if isinstance(state, dict) else None
        if opt_state is None:
            self._optimizer = None
        else:
            self.optimizer().load_state_dict(opt_state)

    def masked_step(self, param: nn.Parameter, grad: Tensor, active: Tensor) -> None:
        """One Adam step on ``param`` with ``grad``; entries where ``active`` is False keep their value
        (their Adam moments decay as under a zero gradient; entries never active keep zero moments)."""
        before = param.detach().clone()
        param.grad = torch.where(active, grad, torch.zeros_like(grad))
        self.optimizer().step()
        param.grad = None
        with torch.no_grad():
            param.copy_(torch.where(active, param, before))
