"""`vla-align data vote --run RUN --data DIR`: mutual-vote filtering (chapter 5.7, 三对相似度一致性过滤).

A trained run's encoders embed every episode of ``DIR`` (all splits, or ``--split``):

* image: up to ``frames`` evenly spaced frames of the episode;
* instruction: each distinct instruction string once;
* action: up to ``chunks`` evenly spaced, non-overlapping action chunks of the episode.

An episode's parts are pooled (``pool``): ``mean`` = the mean of the unit part embeddings, renormalised;
``max`` = the similarity of the best-matching part (for image-action pairs only the frames take the
max, the action side is mean-pooled). Then each modality of the episode is checked by the other two:

* the **instruction** by image->text and action->text: the rank of the episode's own instruction among
  the distinct instructions of the voted episodes. A vote passes when that rank is <= ``top_k``.
* the **action** by image->action and text->action: the rank of the episode's own action among the
  actions of the episodes with another instruction (those with the same instruction are positives too:
  the same instruction in a similar scene legitimately gives a similar action; for image->action, the
  episodes of the instruction the image itself retrieves first are left out too, so that a wrong
  instruction does not make a right action look wrong). A vote passes when the episode is in the top
  ``action_top`` fraction of its candidates (at least the top 1).

A modality that *neither* of its two votes supports is flagged, e.g. "instruction disagrees (image rank
r1, action rank r2 of G instructions)". ``check`` says which modalities may be flagged: the instruction
by default, ``action`` or ``both`` for the action check. The text is judged by the image and action views only, and the action by the
image and text views, so a wrong instruction never votes for itself.

The continuous score behind the rule: each vote's ``slack`` = own similarity - that of the K-th best
competitor (K = ``top_k``, or the action cut-off), >= 0 exactly when the vote passes; a modality's
agreement = the larger slack of its two votes; an episode's ``agreement`` = the smaller agreement of the
checked modalities. Episodes with ``agreement < threshold`` are flagged; the default threshold 0 is the
vote rule above, a positive one flags more, a negative one fewer. Every episode's record (ranks,
margins over the best other item, slacks, agreement) is written, so other thresholds can be chosen later.

Why the action check is opt-in: on BabyAI (7 discrete actions, short episodes) a small run's action
embeddings tell episodes apart poorly; in a 300-episode smoke run the image->action and text->action
votes passed for only 26-47 % of the episodes, so the action check flagged ~38 % of them, mostly clean.
Turn it on (``--check both``) when the summary's action pass rates are high (continuous, smooth actions).
The summary warns when a check flags more than a quarter of the episodes: then the run, not the data,
is the likelier culprit.

Memorisation: a run trained on the noisy episodes can learn their wrong pairs (a network fits clean
pairs first and the noisy ones late), and then votes for them. Recommended: vote with a run that never
saw these episodes (trained on other episodes of the same kind, e.g. the other half of the data; then
swap), or train with ``--train.keep-checkpoints N`` and vote with an early kept checkpoint
(``--checkpoint step-NNNNNN``, once held-out retrieval has risen well above chance; which step is best
is not yet measured at scale: ``benchmarks/vote_faults.py`` measures it). The
summary notes memorisation when the training split is flagged far less often than the held-out ones
(a 300-episode BabyAI smoke run at its final step: 0 % of train, 71 % of val + test). Then train
again without the flagged episodes: ``vla-align train ... --data.exclude DIR.vote.json``.

The result is the quality file ``<DIR>.vote.json`` beside the dataset (:mod:`vla_align.data.sidecar`);
``DIR`` is never modified.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .data import sidecar
from .data.lerobot import FrameTable
from .data.windows import ChunkSampler
from .errors import UserError

if TYPE_CHECKING:
    from .model import TriModalModel

Pool = Literal["mean", "max"]
Check = Literal["both", "instruction", "action"]
WEAK_SHARE = 0.25  # a check flagging more than this share of the episodes gets a warning
VOTES = ("image_to_text", "action_to_text", "image_to_action", "text_to_action")


@dataclass
class VoteConfig:
    top_k: int = 3  # an instruction vote passes when the own instruction ranks <= top_k
    action_top: float = 0.05  # an action vote passes when the own episode is in this top fraction
    threshold: float = 0.0  # flag episodes whose agreement < threshold (0 = the vote rule)
    check: Check = "instruction"  # which modalities may be flagged (the action check is opt-in: see the module)
    pool: Pool = "mean"  # how an episode's frames / chunks are pooled
    frames: int = 8  # frames per episode (evenly spaced)
    chunks: int = 8  # action chunks per episode (evenly spaced, non-overlapping)
    batch_size: int = 256  # encoder batch

    def __post_init__(self) -> None:
        for name in ("top_k", "frames", "chunks", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0.0 < self.action_top < 1.0:
            raise UserError(f"--action-top must be a fraction in (0, 1), e.g. 0.05, got {self.action_top!r}")
        if not math.isfinite(self.threshold):
            raise UserError(f"--threshold must be a finite number (a similarity difference), got {self.threshold!r}")
        if self.pool not in ("mean", "max"):
            raise UserError(f"--pool must be mean or max, got {self.pool!r}")
        if self.check not in ("both", "instruction", "action"):
            raise UserError(f"--check must be both, instruction or action, got {self.check!r}")


@dataclass
class VoteTable:
    """Per episode (positions of the voted table): one array per vote and field, plus the verdict."""

    rank: dict[str, np.ndarray]  # vote -> (E,) 1-based rank of the own item among its candidates
    candidates: dict[str, np.ndarray]  # vote -> (E,) candidates ranked (own included)
    cutoff: dict[str, np.ndarray]  # vote -> (E,) a vote passes when rank <= cutoff
    margin: dict[str, np.ndarray]  # vote -> (E,) own similarity - best competitor
    slack: dict[str, np.ndarray]  # vote -> (E,) own similarity - cutoff-th best competitor (>= 0: passes)
    instruction_agreement: np.ndarray  # (E,)
    action_agreement: np.ndarray  # (E,)
    agreement: np.ndarray  # (E,)
    flag_instruction: np.ndarray  # (E,) bool
    flag_action: np.ndarray  # (E,) bool


# --- embeddings -------------------------------------------------------------------------------------


def spaced(length: int, count: int, step: int = 1) -> np.ndarray:
    """Up to ``count`` evenly spaced offsets among ``0, step, 2 step, ... < length`` (first and last kept;
    ``count`` 1: the last, where a finished demonstration shows what its instruction asked for)."""
    starts = np.arange(0, length, step)
    if len(starts) <= count:
        return starts
    if count == 1:
        return starts[-1:]
    return starts[np.unique(np.round(np.linspace(0, len(starts) - 1, count)).astype(np.int64))]


def part_rows(table: FrameTable, count: int, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rows of up to ``count`` evenly spaced parts of every episode, and the episode (position) of each."""
    rows, owner = [], []
    for e in range(table.num_episodes):
        offsets = spaced(int(table.episode_length[e]), count, step)
        rows.append(int(table.episode_start[e]) + offsets)
        owner.append(np.full(len(offsets), e, dtype=np.int64))
    return np.concatenate(rows), np.concatenate(owner)


@torch.no_grad()
def embed_episodes(model: TriModalModel, table: FrameTable, cfg: VoteConfig) -> dict[str, Tensor]:
    """Unit embeddings (float32, CPU): ``image`` parts (M, D) with ``image_owner`` (M,), ``action`` parts
    (C, D) with ``action_owner`` (C,), ``text`` (G, D) of ``distinct`` instructions and ``text_id`` (E,)."""
    device = next(model.parameters()).device
    model.eval()
    sampler = ChunkSampler(table, model.cfg.action.chunk_len, model.cfg.policy.history)
    frame_rows, frame_owner = part_rows(table, cfg.frames)
    chunk_rows, chunk_owner = part_rows(table, cfg.chunks, model.cfg.action.chunk_len)
    distinct = sorted(set(table.instructions))
    index = {t: i for i, t in enumerate(distinct)}
    image, action, text = [], [], []
    # like eval: bf16 autocast on CUDA, plain float32 on the CPU (sim.base.inference_autocast)
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with precision:
        for s in range(0, len(frame_rows), cfg.batch_size):
            batch = torch.from_numpy(table.frames[frame_rows[s : s + cfg.batch_size]]).to(device)
            image.append(model.encode_image(batch).float().cpu())
        for s in range(0, len(chunk_rows), cfg.batch_size):
            b = sampler.batch(chunk_rows[s : s + cfg.batch_size])
            action.append(model.encode_action(b.action.to(device), b.action_mask.to(device)).float().cpu())
        for s in range(0, len(distinct), cfg.batch_size):
            text.append(model.encode_text(distinct[s : s + cfg.batch_size]).float().cpu())
    return {
        "image": F.normalize(torch.cat(image), dim=-1),  # (M, D)
        "image_owner": torch.from_numpy(frame_owner),  # (M,)
        "action": F.normalize(torch.cat(action), dim=-1),  # (C, D)
        "action_owner": torch.from_numpy(chunk_owner),  # (C,)
        "text": F.normalize(torch.cat(text), dim=-1),  # (G, D)
        "text_id": torch.tensor([index[t] for t in table.instructions], dtype=torch.long),  # (E,)
    }


def pool_mean(parts: Tensor, owner: Tensor, n: int) -> Tensor:
    """(M, D) unit part embeddings -> (n, D): per owner the mean, renormalised."""
    total = torch.zeros(n, parts.shape[1], dtype=parts.dtype).index_add_(0, owner, parts)
    return F.normalize(total, dim=-1)


def part_scores(parts: Tensor, owner: Tensor, n: int, gallery: Tensor, pool: Pool) -> Tensor:
    """(n, G) similarity of each owner's parts to each gallery row: of the mean-pooled parts, or the
    best part (``max``)."""
    if pool == "mean":
        return pool_mean(parts, owner, n) @ gallery.T
    scores = torch.full((n, gallery.shape[0]), -math.inf)
    scores.scatter_reduce_(0, owner[:, None].expand(-1, gallery.shape[0]), parts @ gallery.T, reduce="amax")
    return scores


# --- ranks ------------------------------------------------------------------------------------------


def rank_against(own: Tensor, competitors: Tensor, cutoff: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: the 1-based rank of ``own`` (B,) among itself and ``competitors`` (B, N) (-inf entries are
    not competitors; ties rank the own item first), its margin over the best competitor, and its slack
    over the ``cutoff``-th best competitor (B,) (>= 0 exactly when rank <= cutoff)."""
    rank = 1 + (competitors > own[:, None]).sum(1)
    k = int(cutoff.max())
    top = torch.topk(competitors, min(k, competitors.shape[1]), dim=1).values  # (B, k) best first
    margin = own - top[:, 0]
    kth = top.gather(1, (cutoff - 1).clamp(max=top.shape[1] - 1)[:, None]).squeeze(1)
    return rank, margin, own - kth


def action_cutoff(candidates: Tensor, fraction: float) -> Tensor:
    """How high an action must rank among ``candidates`` (own included) to pass: the top ``fraction``."""
    return torch.clamp(torch.ceil(fraction * candidates.double()).long(), min=1)


def vote_ranks(z: dict[str, Tensor], cfg: VoteConfig, block: int = 512) -> dict[str, dict[str, Tensor]]:
    """The four votes of every episode: ``rank``, ``candidates``, ``cutoff``, ``margin``, ``slack`` (E,)."""
    text, text_id = z["text"], z["text_id"]
    n, g = len(text_id), len(text)
    eye = torch.arange(n)
    out: dict[str, dict[str, Tensor]] = {}
    # instruction votes: the own instruction among the distinct instructions
    s_it = part_scores(z["image"], z["image_owner"], n, text, cfg.pool)  # (E, G)
    s_at = part_scores(z["action"], z["action_owner"], n, text, cfg.pool)  # (E, G)
    cut = torch.full((n,), cfg.top_k, dtype=torch.long)
    for name, s in (("image_to_text", s_it), ("action_to_text", s_at)):
        own = s[eye, text_id]
        rival = s.scatter(1, text_id[:, None], -math.inf)
        rank, margin, slack = rank_against(own, rival, cut)
        out[name] = {"rank": rank, "candidates": torch.full((n,), g), "cutoff": cut, "margin": margin, "slack": slack}
    # action votes: the own episode among the episodes with another instruction (same-instruction ones are
    # positives too; for image -> action also those of the instruction the image votes for, so a wrong
    # instruction does not make the action look wrong), in blocks of query episodes; text -> action
    # reuses s_at (the same similarity)
    counts = torch.bincount(text_id, minlength=g)
    seen = s_it.argmax(1)  # (E,) the instruction each episode's image retrieves first
    cand = {
        "text_to_action": 1 + n - counts[text_id],
        "image_to_action": 1 + n - counts[text_id] - torch.where(seen == text_id, 0, counts[seen]),
    }
    cutoffs = {name: action_cutoff(c, cfg.action_top) for name, c in cand.items()}
    actions = pool_mean(z["action"], z["action_owner"], n)  # (E, D)
    owner = z["image_owner"]
    bounds = torch.searchsorted(owner, torch.arange(0, n + block, block).clamp(max=n))
    found: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {"image_to_action": [], "text_to_action": []}
    for b, start in enumerate(range(0, n, block)):
        stop = min(start + block, n)
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        rows = torch.arange(stop - start)
        same = text_id[None, :] == text_id[start:stop, None]  # (b, E) the own instruction's episodes
        seen_too = same | (text_id[None, :] == seen[start:stop, None])
        s_ia = part_scores(z["image"][lo:hi], owner[lo:hi] - start, stop - start, actions, cfg.pool)  # (b, E)
        s_ta = s_at.T[text_id[start:stop]]  # (b, E) the own instruction's similarity to every episode
        for name, s, skip in (("image_to_action", s_ia, seen_too), ("text_to_action", s_ta, same)):
            own = s[rows, rows + start]
            found[name].append(rank_against(own, s.masked_fill(skip, -math.inf), cutoffs[name][start:stop]))
    for name, parts in found.items():
        rank, margin, slack = (torch.cat([p[i] for p in parts]) for i in range(3))
        out[name] = {"rank": rank, "candidates": cand[name], "cutoff": cutoffs[name], "margin": margin, "slack": slack}
    return out


def vote(model: TriModalModel, table: FrameTable, cfg: VoteConfig) -> VoteTable:
    """Embed the episodes of ``table`` with ``model`` and vote (see the module docstring)."""
    check_votable(table, cfg)
    return decide(vote_ranks(embed_episodes(model, table, cfg), cfg), cfg)


def check_votable(table: FrameTable, cfg: VoteConfig) -> None:
    """Refuse a table with fewer than two distinct instructions, or a ``top_k`` every instruction passes."""
    distinct = set(table.instructions)
    if len(distinct) < 2:
        only = next(iter(distinct), "")
        raise UserError(
            f"{table.root}: all {table.num_episodes} voted episodes share one instruction ({only!r}); there is "
            "no other instruction to vote against: vote on a dataset (or --split) with several instructions"
        )
    if cfg.top_k >= len(distinct):
        raise UserError(
            f"--top-k {cfg.top_k}: the voted episodes have only {len(distinct)} distinct instructions, so every "
            f"instruction vote would pass; choose --top-k below {len(distinct)}"
        )


def decide(votes: dict[str, dict[str, Tensor]], cfg: VoteConfig) -> VoteTable:
    """The agreement scores and flags from the four votes of every episode (see the module docstring)."""
    arr = {v: {k: t.numpy() for k, t in votes[v].items()} for v in VOTES}
    slack = {v: arr[v]["slack"].astype(np.float64) for v in VOTES}
    inst = np.maximum(slack["image_to_text"], slack["action_to_text"])
    act = np.maximum(slack["image_to_action"], slack["text_to_action"])
    checked = {"both": [inst, act], "instruction": [inst], "action": [act]}[cfg.check]
    agreement = np.minimum.reduce(checked)
    return VoteTable(
        rank={v: arr[v]["rank"] for v in VOTES},
        candidates={v: arr[v]["candidates"] for v in VOTES},
        cutoff={v: arr[v]["cutoff"] for v in VOTES},
        margin={v: arr[v]["margin"].astype(np.float64) for v in VOTES},
        slack=slack,
        instruction_agreement=inst,
        action_agreement=act,
        agreement=agreement,
        flag_instruction=(inst < cfg.threshold) & (cfg.check != "action"),
        flag_action=(act < cfg.threshold) & (cfg.check != "instruction"),
    )


# --- the quality file -------------------------------------------------------------------------------


def _reason(result: VoteTable, e: int) -> str:
    r, c = result.rank, result.candidates
    parts = []
    if result.flag_instruction[e]:
        parts.append(
            f"instruction disagrees (image rank {r['image_to_text'][e]}, action rank {r['action_to_text'][e]} "
            f"of {c['image_to_text'][e]} instructions)"
        )
    if result.flag_action[e]:
        parts.append(
            f"action disagrees (image rank {r['image_to_action'][e]} of {c['image_to_action'][e]}, instruction "
            f"rank {r['text_to_action'][e]} of {c['text_to_action'][e]} episodes)"
        )
    return "; ".join(parts)


def _round(x: float) -> float:
    return round(float(x), 5)


def records(table: FrameTable, result: VoteTable, split_of: dict[int, str]) -> tuple[list[dict[str, Any]], ...]:
    """The per-episode records and the flagged list of the quality file."""
    episodes, flagged = [], []
    for e in range(table.num_episodes):
        eid = int(table.episode_ids[e])
        votes = {
            v: {
                "rank": int(result.rank[v][e]),
                "of": int(result.candidates[v][e]),
                "pass_at": int(result.cutoff[v][e]),
                "margin": _round(result.margin[v][e]),
                "slack": _round(result.slack[v][e]),
            }
            for v in VOTES
        }
        episodes.append(
            {
                "episode_index": eid,
                "split": split_of.get(eid, ""),
                "instruction": table.instructions[e],
                "agreement": _round(result.agreement[e]),
                "instruction_agreement": _round(result.instruction_agreement[e]),
                "action_agreement": _round(result.action_agreement[e]),
                "votes": votes,
            }
        )
        reasons = [m for m, f in (("instruction", result.flag_instruction), ("action", result.flag_action)) if f[e]]
        if reasons:
            flagged.append(
                {
                    "episode_index": eid,
                    "split": split_of.get(eid, ""),
                    "reasons": reasons,
                    "reason": _reason(result, e),
                    "agreement": _round(result.agreement[e]),
                }
            )
    return episodes, flagged


def split_names(root: Path, info: dict[str, Any], ids: np.ndarray) -> dict[int, str]:
    """Episode index -> split name, from the split file beside the dataset (else info.json's splits)."""
    from .data.info_checks import parse_splits
    from .data.split_file import check_split_file, load_split_file, resolve_split_file

    path = resolve_split_file(root, "")
    if path is not None:
        table = check_split_file(load_split_file(path), path, root, ids)
        return {int(i): name for name, members in table.items() for i in members}
    out: dict[int, str] = {}
    for name, (start, end) in parse_splits(info, root / "meta" / "info.json").items():
        out.update({int(i): name for i in ids if start <= i < end})
    return out


def summary(result: VoteTable, split_of: dict[int, str], ids: np.ndarray) -> dict[str, Any]:
    n = len(result.agreement)
    either = result.flag_instruction | result.flag_action
    per_split: dict[str, list[int]] = {}
    for eid, f in zip(ids, either, strict=True):
        counts = per_split.setdefault(split_of.get(int(eid), ""), [0, 0])
        counts[0] += 1
        counts[1] += int(f)
    return {
        "episodes": n,
        "instructions": int(result.candidates["image_to_text"][0]),
        "flagged": int(either.sum()),
        "flagged_instruction": int(result.flag_instruction.sum()),
        "flagged_action": int(result.flag_action.sum()),
        "share": _round(either.mean()),
        "pass_rate": {v: _round((result.rank[v] <= result.cutoff[v]).mean()) for v in VOTES},
        "by_split": {k: {"episodes": v[0], "flagged": v[1]} for k, v in sorted(per_split.items())},
    }


# --- the command ------------------------------------------------------------------------------------


def check_compatible(run_dir: Path, dataset: dict[str, Any], table: FrameTable) -> None:
    """Refuse a dataset whose action space or frame size differs from the one the run was trained on."""
    from .data.episode import ActionSpec

    spec = ActionSpec.from_dict(dataset["info"]["action_spec"])
    got = table.action_spec
    if (spec.kind, spec.dim, spec.num_actions) != (got.kind, got.dim, got.num_actions):

        def say(s: ActionSpec) -> str:
            return f"{s.num_actions} discrete actions" if s.kind == "discrete" else f"{s.dim}-d continuous actions"

        raise UserError(
            f"{table.root}: its actions ({say(got)}) are not those run {run_dir} was trained on ({say(spec)}); "
            "vote with a run trained on this kind of data"
        )
    want = tuple(int(x) for x in dataset.get("image_shape") or ())
    if want and want != table.image_shape:
        raise UserError(
            f"{table.root}: its frames are {table.image_shape[0]}x{table.image_shape[1]} px, run {run_dir} was "
            f"trained on {want[0]}x{want[1]}; vote with a run trained at this frame size"
        )


def cmd_vote(args: argparse.Namespace) -> dict[str, Any]:
    """Vote on every episode of ``--data`` (default: the run's dataset) and write the vote file beside it."""
    from . import checkpoint
    from .data.lerobot import read_dataset, read_info
    from .runs import load_model, load_run_config
    from .train import resolve_device

    started, cpu0 = time.perf_counter(), time.process_time()
    cfg = VoteConfig(
        top_k=args.top_k,
        action_top=args.action_top,
        threshold=args.threshold,
        check=args.check,
        pool=args.pool,
        frames=args.frames,
        chunks=args.chunks,
        batch_size=args.batch_size,
    )
    run_dir = Path(args.run)
    run_cfg, extra = load_run_config(run_dir)
    if "dataset" not in extra:
        raise UserError(f"{run_dir / 'config.json'}: has no 'dataset' section; was this run trained by vla-align?")
    root = Path(args.data) if args.data else Path(extra["dataset"]["path"])
    info = read_info(root)
    out = Path(args.out) if args.out else sidecar.default_path(root, "vote")
    sidecar.check_writable(out, "vote", args.overwrite, root)
    options = run_cfg.data.frame_options(root)
    first = read_dataset(root, split=args.split, max_episodes=1, **options)  # cheap checks before reading it all
    check_compatible(run_dir, extra["dataset"], first)
    table = read_dataset(root, split=args.split, **options)
    device = resolve_device(args.device, "--device")
    model, _ = load_model(run_dir, device)
    weights = run_dir / "checkpoint"
    if args.checkpoint:
        weights = checkpoint.snapshot_dir(run_dir, args.checkpoint)
        checkpoint.load_weights(model, weights)
    result = vote(model, table, cfg)
    all_ids = read_dataset_ids(root, table)
    split_of = split_names(root, info, all_ids)
    episodes, flagged = records(table, result, split_of)
    params = {
        "run": str(run_dir.resolve()),
        "checkpoint": str(weights.resolve()),
        "split": args.split or "all",
        **asdict(cfg),
    }
    summ = summary(result, split_of, table.episode_ids)
    summ["wall_s"], summ["cpu_s"] = round(time.perf_counter() - started, 2), round(time.process_time() - cpu0, 2)
    doc = sidecar.document(root, "vote", len(all_ids), params, summ, episodes, flagged)
    sidecar.write(out, doc)
    print_summary(summ, out, root, cfg)
    return doc


def read_dataset_ids(root: Path, table: FrameTable) -> np.ndarray:
    """Every episode index of the dataset (the voted table may hold one split only)."""
    import pyarrow.parquet as pq

    ids = [
        pq.read_table(f, columns=["episode_index"]).column(0).to_numpy()
        for f in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    ]
    return np.sort(np.concatenate(ids)).astype(np.int64) if ids else table.episode_ids


def print_summary(summ: dict[str, Any], out: Path, root: Path, cfg: VoteConfig) -> None:
    n = summ["episodes"]

    def share(k: int) -> str:
        return f"{k:>6}  {100.0 * k / max(n, 1):5.1f} %"

    print(
        f"mutual vote on {n} episodes, {summ['instructions']} distinct instructions (top-k {cfg.top_k}, "
        f"action top {100 * cfg.action_top:g} %, threshold {cfg.threshold:g})"
    )
    print(f"  {'flagged':<28}{share(summ['flagged'])}")
    print(f"  {'  instruction disagrees':<28}{share(summ['flagged_instruction'])}")
    print(f"  {'  action disagrees':<28}{share(summ['flagged_action'])}")
    for split, c in summ["by_split"].items():
        if split:
            print(f"  {'  in split ' + split:<28}{c['flagged']:>6}  of {c['episodes']}")
    rates = ", ".join(f"{v} {100 * r:.0f} %" for v, r in summ["pass_rate"].items())
    print(f"  votes passed: {rates}")
    for name in ("instruction", "action"):
        if summ[f"flagged_{name}"] > WEAK_SHARE * n:
            print(
                f"warning: the {name} check flags {100 * summ[f'flagged_{name}'] / n:.0f} % of the episodes: the run's "
                "votes are probably too weak to judge them (see the pass rates); vote with a better-trained run or "
                "checkpoint, or loosen --top-k / --action-top / --threshold before excluding them"
            )
    memorised = memorisation_note(summ["by_split"])
    if memorised:
        print(memorised)
    print(f"written to {out}")
    print(f"second pass, without the flagged training episodes: vla-align train ... --data {root} --data.exclude {out}")


def memorisation_note(by_split: dict[str, dict[str, int]], min_episodes: int = 10) -> str:
    """A note when the training split is flagged far less often than the held-out splits: the run fits the
    pairs it was trained on (noisy ones included), so its votes on them are not to be trusted."""
    train = by_split.get("train")
    held = [v for k, v in by_split.items() if k not in ("train", "")]
    held_n, held_f = sum(v["episodes"] for v in held), sum(v["flagged"] for v in held)
    if not train or train["episodes"] < min_episodes or held_n < min_episodes:
        return ""
    train_share, held_share = train["flagged"] / train["episodes"], held_f / held_n
    if held_share < 0.05 or train_share > 0.5 * held_share:
        return ""
    return (
        f"note: {100 * train_share:.0f} % of the training episodes flagged against {100 * held_share:.0f} % of the "
        "held-out ones: the run has memorised its training pairs (wrong ones too); vote on them with an early "
        "--checkpoint or a run trained on other episodes"
    )


def add_command(sims: Any, parser_class: Any) -> None:
    """Register ``vla-align data vote``."""
    d = VoteConfig()
    q = sims.add_parser(
        "vote",
        help="mutual-vote filtering: flag episodes whose instruction or action the other two modalities "
        "disagree with (DIR.vote.json)",
        description="Embed every episode with a trained run and check each instruction by the image->text and "
        "action->text votes (with --check both, also each action by the image->action and text->action votes); "
        "a modality neither vote supports is flagged. Writes DIR.vote.json beside the dataset (never inside "
        "it); train again without the flagged episodes with --data.exclude DIR.vote.json. Vote with a run that "
        "has not memorised the noisy pairs: one trained on other episodes, or an early kept checkpoint "
        "(--checkpoint).",
    )
    q.add_argument("--run", required=True, metavar="RUN", help="a trained run directory")
    q.add_argument("--data", metavar="DIR", help="the dataset to vote on (default: the run's dataset; read only)")
    q.add_argument("--split", default=None, help="vote on this split only (default: every episode)")
    q.add_argument(
        "--checkpoint",
        metavar="step-NNNNNN|last",
        help="vote with this kept checkpoint (train.keep_checkpoints); an early one has memorised less noise",
    )
    q.add_argument(
        "--top-k", type=int, default=d.top_k, help=f"an instruction vote passes at rank <= K (default {d.top_k})"
    )
    q.add_argument(
        "--action-top",
        type=float,
        default=d.action_top,
        help=f"an action vote passes in this top fraction of the episodes (default {d.action_top})",
    )
    q.add_argument(
        "--threshold",
        type=float,
        default=d.threshold,
        help="flag episodes whose agreement score is below this (default 0 = flagged when neither vote passes)",
    )
    q.add_argument(
        "--check",
        choices=["both", "instruction", "action"],
        default=d.check,
        help=f"which modalities may be flagged (default {d.check}; the action check suits runs whose action votes "
        "pass for most episodes, see the summary)",
    )
    q.add_argument(
        "--pool", choices=["mean", "max"], default=d.pool, help=f"pooling of frames / chunks (default {d.pool})"
    )
    q.add_argument("--frames", type=int, default=d.frames, help=f"frames per episode (default {d.frames})")
    q.add_argument("--chunks", type=int, default=d.chunks, help=f"action chunks per episode (default {d.chunks})")
    q.add_argument("--batch-size", type=int, default=d.batch_size, help="encoder batch size")
    q.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    q.add_argument("--out", metavar="FILE", help="where to write the vote file (default: DIR.vote.json beside DIR)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing vote file")
    q.set_defaults(func=cmd_vote)
