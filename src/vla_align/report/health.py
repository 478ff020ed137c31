"""The model-based half of the report: embeddings of the held-out split and the health indicators.

* AMat (alignment confusion) per pair, by instruction class (the most frequent classes; the rest pooled);
* the InfoNCE MI lower bound per pair on the split, and across difficulty (expert path-length terciles,
  and per level / task when the split mixes several);
* linear CKA and mean CCA between the image, text and action subspaces;
* γ_VA(f): the image embedding of every frame, mapped onto the action channels by ridge regression fitted
  on half of the episodes, against the actions (one-hot for discrete), on the other half;
* the camera–controller offset: P50 over the split's episodes of ``vla-align data align``'s estimate
  (cross-correlation of frame motion with the state / actions; only meaningful at control rates ≥ 5 Hz,
  turn-based data reports "not applicable"). A run trained with ``--data.align`` reads the corrected view,
  so its report shows the residual offset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.lerobot import FrameTable
from ..data.windows import ChunkSampler
from ..diagnostics import alignment_confusion, modality_similarity, per_class_hit_rate
from ..diagnostics.three_view import episode_coherence, project
from ..losses.contrastive import group_positives, info_nce, mutual_information_bound
from ..modalities import PAIR_MODALITIES, PAIRS
from .flags import TURN_BASED_FPS

if TYPE_CHECKING:
    from ..model import TriModalModel

MAX_CLASSES = 40  # AMat classes shown; rarer instruction classes are pooled into "(other)"
OTHER = "(other)"
AMAT_DIRECTIONS = (("image", "text"), ("action", "text"), ("image", "action"))
COHERENCE_EPISODES = 200  # episodes whose every frame is embedded for γ_VA
OFFSET_MIN_FPS = TURN_BASED_FPS  # below it the data is turn-based: no sub-step timing
RIDGE = 1e-2


@dataclass
class Health:
    split: str
    samples: int
    amat: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)  # "image->text": (C, C), classes
    hit_rate: dict[str, dict[str, float]] = field(default_factory=dict)  # "image->text": class -> top-10 hit
    mi: dict[str, float] = field(default_factory=dict)  # pair -> bound (nats); log N in "log_n"
    mi_groups: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> pair -> bound
    similarity: dict[str, float] = field(default_factory=dict)  # cka/<pair>, cca/<pair>
    freqs: np.ndarray | None = None
    gamma: np.ndarray | None = None
    band: tuple[float, float] | None = None
    band_coherence: float | None = None
    offset_p50_ms: float | None = None
    fps: float | None = None  # the split's control rate (Hz)
    notes: list[str] = field(default_factory=list)
    projection: np.ndarray | None = None  # (D + 1, C) ridge map image embedding -> action channels


def action_channels(table: FrameTable, rows: np.ndarray) -> np.ndarray:
    """(N, C) per-step action signal: one-hot ids (discrete) or standardised vectors (continuous)."""
    a = table.actions[rows]
    if a.ndim == 1:
        result: np.ndarray = np.eye(table.action_spec.num_actions, dtype=np.float64)[a]
        return result
    a = a.astype(np.float64)
    scaled: np.ndarray = (a - table.actions.mean(0)) / (table.actions.std(0) + 1e-8)
    return scaled


def _classes(labels: list[str]) -> list[str]:
    keep = {c for c, _ in Counter(labels).most_common(MAX_CLASSES)}
    return [c if c in keep else OTHER for c in labels]


@torch.no_grad()
def embed_frames(model: TriModalModel, table: FrameTable, rows: np.ndarray, batch: int = 256) -> np.ndarray:
    device = next(model.parameters()).device
    out = [
        model.encode_image(torch.from_numpy(table.frames[rows[i : i + batch]]).to(device)).float().cpu()
        for i in range(0, len(rows), batch)
    ]
    return torch.cat(out).numpy().astype(np.float64)  # (N, D)


def fit_projection(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Ridge regression (with bias) from embeddings (N, D) to action channels (N, C) -> (D + 1, C)."""
    x = np.concatenate([z, np.ones((len(z), 1))], axis=1)
    gram = x.T @ x + RIDGE * len(x) * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ a)


def offset_p50_ms(table: FrameTable) -> float | None:
    """P50 of the episodes' |camera ↔ controller offset| in ms, by the estimator of ``vla-align data
    align`` (model-free: frame motion against the state / actions); None when no episode aligns."""
    from ..data.align import AlignConfig, estimate_offsets
    from ..errors import DatasetError

    try:
        offsets, _ = estimate_offsets(table, AlignConfig())
    except DatasetError:  # too short, no signal: nothing to report
        return None
    values = [abs(o.offset_ms) for o in offsets if o.status == "ok" and o.offset_ms is not None]
    return float(np.median(values)) if values else None


def compute_health(model: TriModalModel, table: FrameTable, split: str, seed: int = 0) -> Health:
    from ..evaluate import embed_samples

    sampler = ChunkSampler(table, model.cfg.action.chunk_len, model.cfg.policy.history)
    rows = sampler.one_per_episode(seed, "random")
    z = embed_samples(model, sampler, rows, 256)
    batch = sampler.batch(rows)
    labels = _classes(list(batch.text))
    h = Health(split=split, samples=len(rows), fps=float(table.fps))

    # AMat and per-class hit rates; text galleries hold each distinct instruction once.
    first: dict[str, int] = {}
    for i, t in enumerate(batch.text):
        first.setdefault(t, i)
    text_rows = np.array(list(first.values()))
    classes = sorted(set(labels), key=lambda c: (c == OTHER, c))
    for q, g in AMAT_DIRECTIONS:
        gz = z[g][text_rows] if g == "text" else z[g]
        gl = [labels[i] for i in text_rows] if g == "text" else labels
        matrix, names = alignment_confusion(z[q], gz, labels, gl, k=1, classes=classes)
        h.amat[f"{q}->{g}"] = (matrix.numpy(), [str(n) for n in names])
        hits, names = per_class_hit_rate(z[q], gz, labels, gl, k=10, classes=classes)
        h.hit_rate[f"{q}->{g}"] = {str(n): float(v) for n, v in zip(names, hits.tolist(), strict=True)}

    # MI lower bounds: all samples, then by difficulty group.
    groups = batch.text_group
    h.mi["log_n"] = float(np.log(len(rows)))
    for pair, value in _mi(model, z, groups, np.arange(len(rows))).items():
        h.mi[pair] = value
    lengths = table.episode_length[sampler.row_episode[rows]]
    cuts = np.quantile(lengths, [1 / 3, 2 / 3])
    bucket = np.digitize(lengths, cuts, right=True)  # 0 short, 1 medium, 2 long
    for b, name in enumerate(("short path", "medium path", "long path")):
        idx = np.flatnonzero(bucket == b)
        if len(idx) >= 8:
            lo, hi = int(lengths[idx].min()), int(lengths[idx].max())
            h.mi_groups[f"{name} ({lo}-{hi} steps, n={len(idx)})"] = _mi(model, z, groups, idx)
    envs = [table.env_tasks[e] for e in sampler.row_episode[rows]]
    if len(set(envs)) > 1:
        for env in sorted(set(envs)):
            idx = np.flatnonzero(np.array(envs) == env)
            if len(idx) >= 8:
                h.mi_groups[f"{env} (n={len(idx)})"] = _mi(model, z, groups, idx)

    h.similarity = modality_similarity({m: z[m] for m in ("image", "text", "action")})
    _spectral(model, table, h, seed)
    return h


def _mi(model: TriModalModel, z: dict[str, torch.Tensor], groups: torch.Tensor, idx: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    sel = torch.from_numpy(idx)
    for pair in PAIRS:
        a, b = PAIR_MODALITIES[pair]
        pos = group_positives(groups[sel]) if "text" in (a, b) else None
        loss = info_nce(z[a][sel], z[b][sel], model.logit_scale(pair).detach().cpu(), pos)
        out[pair] = mutual_information_bound(loss, len(idx))
    return out


def _spectral(model: TriModalModel, table: FrameTable, h: Health, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = min(COHERENCE_EPISODES, table.num_episodes)
    episodes = np.sort(rng.choice(table.num_episodes, size=n, replace=False))
    fit_eps, test_eps = episodes[0::2], episodes[1::2]

    def rows_of(eps: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [np.arange(table.episode_start[e], table.episode_start[e] + table.episode_length[e]) for e in eps]
        )

    if len(test_eps) == 0:
        h.notes.append("coherence: fewer than two episodes")
        return
    fit_rows = rows_of(fit_eps)
    w = fit_projection(embed_frames(model, table, fit_rows), action_channels(table, fit_rows))
    h.projection = w
    test_rows = rows_of(test_eps)
    v = project(embed_frames(model, table, test_rows), w)  # (N, C)
    a = action_channels(table, test_rows)
    # Concatenated held-out episodes: episodes are short, the spectrum needs many Welch segments.
    spec = episode_coherence(v, a, table.fps)
    if spec is None:
        h.notes.append("coherence: not enough steps")
    else:
        h.freqs, h.gamma, h.band, h.band_coherence = spec
    if table.fps >= OFFSET_MIN_FPS:
        h.offset_p50_ms = offset_p50_ms(table)
    else:
        h.notes.append(f"offset: not applicable at {table.fps:g} Hz (turn-based data has no sub-step timing)")


def health_metrics(h: Health) -> dict[str, Any]:
    """Flat ``health/...`` keys for metrics.json."""
    out: dict[str, Any] = {}
    if h.band_coherence is not None:
        out["health/coherence/band_average"] = h.band_coherence
    if h.offset_p50_ms is not None:
        out["health/offset_p50_ms"] = h.offset_p50_ms
    for k, v in h.similarity.items():
        out[f"health/{k}"] = v
    for direction, (matrix, _) in h.amat.items():  # mean top-1 share of the own class (NaN rows skipped)
        out[f"health/amat/{direction.replace('->', '_to_')}/diag_mean"] = float(np.nanmean(np.diag(matrix)))
    return out
