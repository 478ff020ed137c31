"""A memory bank of past embeddings as extra InfoNCE columns (chapter 5.7, "memory-bank negatives").

Per modality, a FIFO queue of the last ``size`` training samples' embeddings, DETACHED, with each
entry's instruction group (``task_index``) and the step that wrote it. The pair InfoNCE of (a, b)
then scores the rows z_a against [z_b ; queue_b] and the rows z_b against [z_a ; queue_a]: with a
batch of B and a full queue of Q the softmax runs over B + Q candidates, so the InfoNCE bound
log N − L can reach log(B + Q) without a bigger batch. Queue entries of the row's instruction group
are positives when ``loss.shared_instruction_positives`` is on (the pair's in-batch rule: pairs with
text only), all the others negatives. The queue is written after the step's loss is computed, so a
batch never meets its own embeddings in the queue.

Why detached past embeddings (cross-batch memory, XBM) rather than MoCo's momentum encoder:

* no second copy of the three encoders to keep, move to the device and update every step;
* exact resume from a small state: the queue tensors, the write pointer and the fill count are all
  of it (they go to ``train_state.pt``), and a step the finite-loss guard skips puts them back;
* the staleness is bounded and known: an entry is at most ``size / batch_size`` steps old, and
  ``max_age`` drops older entries outright (XBM's observation: embeddings drift slowly once the
  first steps are over, ``start_step`` keeps the bank out of the loss until then).

The start matters. At initialisation the encoders map everything to nearly one point, so a queue
filled then holds near-identical entries; their pull (positives) and push (negatives) cancel, the B
in-batch columns carry a share B / (B + Q) of the softmax, and the run never leaves chance (measured
on BabyAI GoToLocal at batch 64 with Q = 4,096 and the bank from step 0: image-text InfoNCE at
log(B + Q) for all 1,000 steps). ``wait_warmup`` (the default) therefore lets the bank in only after
the learning-rate warm-up and one full turn of the queue, ``max(start_step, train.warmup_steps, ⌈Q / B⌉)``.
(It is no cure: on that data the bank still hurts when it joins at step 100, see README.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_int
from ..errors import ConfigError
from ..modalities import MODALITIES, PAIR_MODALITIES, PAIRS, Embeddings, Modality, Pair


@dataclass
class MemoryBankConfig:
    size: int = 0  # past samples kept per modality as extra InfoNCE columns (0 = off)
    pairs: tuple[str, ...] = PAIRS  # the pairs whose InfoNCE gets the queue's columns
    max_age: int = 0  # entries written more than this many steps ago are left out (0 = any age)
    start_step: int = 0  # the queue's columns join the loss from this step on (it fills from step 0)
    wait_warmup: bool = True  # and not before the warm-up and one turn of the queue, max(warmup_steps, ⌈Q / B⌉)

    def __post_init__(self) -> None:
        check_int("loss.memory_bank.size", self.size, 0, why="queued samples per modality, 0 = off")
        check_int("loss.memory_bank.max_age", self.max_age, 0, why="steps, 0 = any age")
        check_int("loss.memory_bank.start_step", self.start_step, 0)
        self.pairs = tuple(self.pairs)
        unknown = [p for p in self.pairs if p not in PAIRS]
        if unknown or not self.pairs or len(set(self.pairs)) != len(self.pairs):
            raise ConfigError(
                f"loss.memory_bank.pairs {list(self.pairs)}: name each pair once, from {', '.join(PAIRS)} "
                "(flag --loss.memory-bank.pairs)"
            )

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def modalities(self, active: tuple[Pair, ...]) -> tuple[Modality, ...]:
        """The modalities to queue: those of the configured pairs that are trained."""
        needed = {m for p in active if p in self.pairs for m in PAIR_MODALITIES[p]}
        return tuple(m for m in MODALITIES if m in needed)

    def check_samples(self, samples: int, where: str) -> None:
        """Refuse a queue larger than the training split: it would hold the same samples many times."""
        if self.size > samples:
            raise ConfigError(
                f"loss.memory_bank.size {self.size} exceeds the {samples} training samples of {where}; "
                f"use at most {samples}"
            )

    def first_step(self, warmup_steps: int, batch_size: int) -> int:
        """The step from which the queue's columns join the loss (``start_step``, and with ``wait_warmup``
        not before the warm-up and one turn of the queue: see the module)."""
        if not self.wait_warmup:
            return self.start_step
        return max(self.start_step, warmup_steps, -(-self.size // batch_size))

    def build(self, dim: int, modalities: tuple[Modality, ...], start: int = 0) -> MemoryBank:
        return MemoryBank(self, dim, modalities, start)


class Queue(nn.Module):
    """One modality's ring buffer: embeddings, instruction groups, write steps, pointer and fill count."""

    emb: Tensor
    group: Tensor
    written: Tensor
    ptr: Tensor
    count: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("emb", torch.zeros(size, dim))  # (Q, D) float32, detached
        self.register_buffer("group", torch.full((size,), -1, dtype=torch.long))  # (Q,) task_index
        self.register_buffer("written", torch.full((size,), -1, dtype=torch.long))  # (Q,) step that wrote it
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # filled slots (<= size)

    def entries(self, step: int, max_age: int) -> tuple[Tensor, Tensor]:
        """The valid entries at ``step``: (n, D) embeddings and (n,) groups, in slot order."""
        n = int(self.count)
        emb, group = self.emb[:n], self.group[:n]
        if max_age:
            fresh = self.written[:n] >= step - max_age  # (n,)
            emb, group = emb[fresh], group[fresh]
        return emb, group

    @torch.no_grad()
    def push(self, z: Tensor, groups: Tensor, step: int) -> None:
        """Write the rows of ``z`` (the last ``size`` of them when more) at the pointer, wrapping around.
        Out of place: the loss of this step may still hold the old tensors in its graph."""
        z, groups = z.detach()[-self.size :], groups[-self.size :]
        slots = (int(self.ptr) + torch.arange(len(z), device=self.emb.device)) % self.size  # (n,)
        self.emb = self.emb.index_copy(0, slots, z.to(self.emb.dtype))
        self.group = self.group.index_copy(0, slots, groups.to(self.group.device, torch.long))
        self.written = self.written.index_copy(0, slots, torch.full_like(slots, step))
        self.ptr = (self.ptr + len(z)) % self.size
        self.count = torch.clamp(self.count + len(z), max=self.size)


class MemoryBank(nn.Module):
    """The queues of the modalities a run's bank pairs need; its ``state_dict`` is the whole state."""

    def __init__(self, cfg: MemoryBankConfig, dim: int, modalities: tuple[Modality, ...], start: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.start = start  # the first step whose loss takes the queue's columns
        self.queues = nn.ModuleDict({m: Queue(cfg.size, dim) for m in modalities})

    def uses(self, pair: Pair, step: int) -> bool:
        """Whether the pair's InfoNCE takes the queue's columns at ``step``."""
        a, b = PAIR_MODALITIES[pair]
        return step >= self.start and pair in self.cfg.pairs and a in self.queues and b in self.queues

    def entries(self, modality: Modality, step: int) -> tuple[Tensor, Tensor]:
        queue = self.queues[modality]
        assert isinstance(queue, Queue)
        return queue.entries(step, self.cfg.max_age)

    def enqueue(self, emb: Embeddings, groups: Tensor, step: int) -> None:
        """Queue this batch's detached embeddings of every queued modality the step computed."""
        for m, queue in self.queues.items():
            z = getattr(emb, m)
            if z is not None:
                assert isinstance(queue, Queue)
                queue.push(z, groups, step)

    def fill(self) -> float:
        """The share of the queue that is filled (the emptiest modality's)."""
        counts = [int(q.count) for q in self.queues.values() if isinstance(q, Queue)]
        return min(counts) / self.cfg.size if counts else 0.0
