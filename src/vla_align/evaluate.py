"""Retrieval evaluation on a held-out split (chapter 5.8), with a multi-positive protocol.

Protocol (also written into metrics.json under ``retrieval/protocol``):
  * samples: one (frame, instruction, next-T-action chunk) triplet per episode of the split, the
    frame drawn uniformly from the episode with a fixed seed (``eval.frame``/``eval.seed``);
  * galleries: per modality, the distinct items of those samples (identical frames, instruction
    strings or action chunks are one gallery item, so exact duplicates never tie with themselves);
  * relevance: a gallery item is relevant to a query item when the two occur together in at least
    one sample (so "go to the red ball" is relevant to every frame of every episode with that
    instruction);
  * queries: every distinct item of the query modality; ``image+text`` queries are the distinct
    (frame, instruction) pairs embedded as norm(z_V + z_L) (late fusion);
  * metrics: R@K = hit rate (any relevant item in the top K), MRR, nDCG@10 with binary gains;
    ties count at their expected value over random tie order; averaged over queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import check_int, check_seed, check_split, out_of_range
from .data.lerobot import FrameTable
from .data.windows import ChunkSampler
from .losses import group_positives, info_nce, mutual_information_bound
from .modalities import PAIR_MODALITIES, PAIRS
from .model import TriModalModel
from .sim.base import SimConfig

PROTOCOL = (
    "one random frame per held-out episode (seeded); galleries = distinct items per modality; "
    "relevant = co-occurs in a sample; R@K = hit rate; ties at expected value; "
    "image+text query = norm(z_V + z_L)"
)
DIRECTIONS: tuple[tuple[str, str], ...] = (
    ("image", "text"),
    ("text", "image"),
    ("image", "action"),
    ("action", "image"),
    ("text", "action"),
    ("action", "text"),
    ("image+text", "action"),
)


@dataclass
class EvalConfig:
    split: str = "test"  # the held-out split evaluated
    frame: Literal["random", "first"] = "random"  # which frame of each episode is its retrieval sample
    seed: int = 0  # seed of the random frames
    ks: tuple[int, ...] = (1, 5, 10)  # the K of the R@K retrieval metrics
    ndcg_k: int = 10  # the cut-off K of nDCG@K
    batch_size: int = 512  # samples per forward pass
    max_episodes: int = 0  # 0 = the whole split
    sim: SimConfig = field(default_factory=SimConfig)  # closed-loop rollouts (runs with a policy)

    def __post_init__(self) -> None:
        check_split("eval.split", self.split)
        check_seed("eval.seed", self.seed)
        if not self.ks:
            raise out_of_range("eval.ks", self.ks, "one or more cut-offs K of R@K", "e.g. 1 5 10")
        for k in self.ks:
            check_int("eval.ks", k, 1, why="the K of R@K")
        check_int("eval.ndcg_k", self.ndcg_k, 1, why="the cut-off of nDCG@K")
        check_int("eval.batch_size", self.batch_size, 1)
        check_int("eval.max_episodes", self.max_episodes, 0, why="at most this many episodes, 0 = the whole split")


def _unique(keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """First index of each distinct key and, per sample, the index of its distinct key."""
    first: dict[object, int] = {}
    inverse = np.empty(len(keys), dtype=np.int64)
    firsts: list[int] = []
    for i, k in enumerate(keys):
        j = first.setdefault(k, len(firsts))
        if j == len(firsts):
            firsts.append(i)
        inverse[i] = j
    return np.asarray(firsts, dtype=np.int64), inverse


@torch.no_grad()
def embed_samples(model: TriModalModel, sampler: ChunkSampler, rows: np.ndarray, batch_size: int) -> dict[str, Tensor]:
    device = next(model.parameters()).device
    model.eval()
    parts: dict[str, list[Tensor]] = {"image": [], "text": [], "action": []}
    for start in range(0, len(rows), batch_size):
        batch = sampler.batch(rows[start : start + batch_size]).to(device)
        emb = model(batch)
        for m in parts:
            parts[m].append(emb.get(m).float().cpu())
    return {m: torch.cat(v) for m, v in parts.items()}


def evaluate_retrieval(model: TriModalModel, table: FrameTable, cfg: EvalConfig) -> dict[str, float | str]:
    from .metrics import retrieval_scores

    sampler = ChunkSampler(table, model.cfg.action.chunk_len, model.cfg.policy.history)
    rows = sampler.one_per_episode(cfg.seed, cfg.frame)
    if cfg.max_episodes:
        rows = rows[: cfg.max_episodes]
    z = embed_samples(model, sampler, rows, cfg.batch_size)
    z["image+text"] = F.normalize(z["image"] + z["text"], dim=-1)

    batch = sampler.batch(rows)
    image_keys = [table.frames[r].tobytes() for r in rows]
    keys: dict[str, list[bytes]] = {
        "image": image_keys,
        "text": [t.encode() for t in batch.text],
        "action": [
            a.numpy().tobytes() + m.numpy().tobytes() for a, m in zip(batch.action, batch.action_mask, strict=True)
        ],
        "image+text": [i + b"\0" + t.encode() for i, t in zip(image_keys, batch.text, strict=True)],
    }
    uniq = {m: _unique(k) for m, k in keys.items()}

    out: dict[str, float | str] = {"retrieval/protocol": PROTOCOL, "retrieval/samples": float(len(rows))}
    for q, g in DIRECTIONS:
        (q_first, q_inv), (g_first, g_inv) = uniq[q], uniq[g]
        relevance = torch.zeros(len(q_first), len(g_first), dtype=torch.bool)
        relevance[torch.from_numpy(q_inv), torch.from_numpy(g_inv)] = True
        scores = z[q][q_first] @ z[g][g_first].T  # (Q, G)
        name = f"retrieval/{q}_to_{g}"
        for metric, value in retrieval_scores(scores, relevance, cfg.ks, cfg.ndcg_k).items():
            out[f"{name}/{metric}"] = value
        out[f"{name}/queries"] = float(len(q_first))
        out[f"{name}/gallery"] = float(len(g_first))

    # InfoNCE mutual-information bound per pair over the whole eval set (chapter 5.6: I >= log N - L).
    groups = batch.text_group
    with torch.no_grad():
        for pair in PAIRS:
            a, b = PAIR_MODALITIES[pair]
            positives = group_positives(groups) if "text" in (a, b) else None
            loss = info_nce(z[a], z[b], model.logit_scale(pair).detach().cpu(), positives)
            out[f"health/mi_bound/{pair}"] = mutual_information_bound(loss, len(rows))
    return out


@torch.no_grad()
def evaluate_trajectories(model: TriModalModel, table: FrameTable, cfg: EvalConfig) -> dict[str, float | str]:
    """Offline trajectory matching (chapter 5.8) for continuous policies: from one frame per held-out
    episode (the retrieval protocol's frames), the predicted chunk against the expert's next ``chunk``
    actions, in the dataset's action units: ``traj/ade``, ``traj/fde``, ``traj/dtw`` (masked past the end).

    Sampling heads (flow) draw with a fixed generator, so the numbers are reproducible.
    """
    from .trajectory import trajectory_metrics

    if not model.continuous or model.policy is None:
        return {}
    device = next(model.parameters()).device
    sampler = ChunkSampler(table, model.cfg.action.chunk_len, model.cfg.policy.history)
    rows = sampler.one_per_episode(cfg.seed, cfg.frame)
    if cfg.max_episodes:
        rows = rows[: cfg.max_episodes]
    k = model.cfg.policy.chunk
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    preds, targets, masks = [], [], []
    model.eval()
    for start in range(0, len(rows), cfg.batch_size):
        batch = sampler.batch(rows[start : start + cfg.batch_size])
        state = batch.state.to(device) if batch.state.numel() else None
        pred = model.act_chunk(batch.image.to(device), batch.text, state, gen)  # (B, k, A)
        preds.append(pred.float().cpu())
        targets.append(batch.action[:, :k].float())
        masks.append(batch.action_mask[:, :k])
    out: dict[str, float | str] = dict(trajectory_metrics(torch.cat(preds), torch.cat(targets), torch.cat(masks)))
    out["traj/protocol"] = (
        f"one frame per held-out episode; predicted {k}-step chunk vs the expert's next {k} actions in "
        "action units; ADE/FDE Euclidean; DTW = sqrt of the minimal sum of squared distances"
    )
    out["traj/samples"] = float(len(rows))
    return out
