"""How well `vla-align data dedup` finds injected copies: precision, recall and cost on a real dataset.

    OMP_NUM_THREADS=1 python benchmarks/dedup_faults.py /tmp/dd/goto2k --out /tmp/dd/goto2k_dups

Reads a clean dataset DIR, writes a copy of it (``--out``) with injected duplicates: ``--exact`` of the
episodes (a fraction) copied byte for byte and ``--noisy`` re-rendered (Gaussian pixel noise of
``--sigma`` grey levels, the image shifted by ``--shift`` px, continuous actions and state plus noise of
``--action-noise`` of each dimension's standard deviation; discrete actions unchanged), each copy of a
different random source episode and placed in a random split. The ground truth stays here; dedup runs on
the copy exactly as the command does (the library call behind it) and is scored per pair (a copy and its
source in one cluster): precision, recall and false positives, with wall time and CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name  # noqa: E402

from vla_align.data.dedup import DedupParams, dedup_dataset  # noqa: E402
from vla_align.data.episode import Episode  # noqa: E402
from vla_align.data.lerobot import episode_at, read_dataset, write_dataset  # noqa: E402
from vla_align.data.split_file import episodes_of_split  # noqa: E402


def rerender(
    ep: Episode, rng: np.random.Generator, sigma: float, shift: int, noise: float, std: dict[str, np.ndarray]
) -> Episode:
    """A noisy copy: pixel noise, a camera shift (edge pixels repeated), small action / state noise."""
    x = ep.frames.astype(np.float32) + rng.normal(0.0, sigma, ep.frames.shape)  # (T, H, W, C)
    if shift:
        x = np.concatenate([np.repeat(x[:, :, :1], shift, axis=2), x[:, :, :-shift]], axis=2)  # right by `shift`
    frames = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    actions = ep.actions
    if actions.ndim == 2:
        actions = (actions + rng.normal(0.0, 1.0, actions.shape) * noise * std["action"]).astype(np.float32)
    state = ep.state
    if state is not None:
        state = (state + rng.normal(0.0, 1.0, state.shape) * noise * std["state"]).astype(np.float32)
    return Episode(frames, actions, ep.instruction, ep.task, ep.fps, ep.seed, ep.success, state)


def inject(src: Path, out: Path, exact: float, noisy: float, args: argparse.Namespace) -> dict[int, tuple[int, str]]:
    """Write ``out`` = ``src`` plus copies; returns {copy's new index: (source's new index, "exact" | "noisy")}."""
    rng = np.random.default_rng(args.seed)
    t = read_dataset(src, split=None)
    names = list(t.info.get("splits") or {"train": f"0:{t.num_episodes}"})
    from vla_align.data.info_checks import parse_splits

    ranges = parse_splits(t.info, src / "meta" / "info.json")
    members = {n: episodes_of_split(src, ranges, n, t.episode_ids, "info").tolist() for n in names}
    e = t.num_episodes
    n_exact, n_noisy = round(e * exact), round(e * noisy)
    sources = rng.choice(e, size=n_exact + n_noisy, replace=False)
    kinds = ["exact"] * n_exact + ["noisy"] * n_noisy
    std = {"action": np.asarray(t.actions, np.float64).reshape(len(t.actions), -1).std(0)}
    if t.state is not None:
        std["state"] = t.state.std(0)
    placed: dict[str, list[tuple[int, str, int]]] = {n: [(p, "", -1) for p in members[n]] for n in names}
    for k, (s, kind) in enumerate(zip(sources.tolist(), kinds, strict=True)):
        split = names[int(rng.integers(len(names)))]
        at = int(rng.integers(len(placed[split]) + 1))
        placed[split].insert(at, (s, kind, k))
    order = [item for n in names for item in placed[n]]
    new_of_src = {p: i for i, (p, kind, _) in enumerate(order) if not kind}
    truth = {i: (new_of_src[p], kind) for i, (p, kind, _) in enumerate(order) if kind}
    splits, start = {}, 0
    for n in names:
        splits[n] = (start, start + len(placed[n]))
        start += len(placed[n])

    def episodes() -> Iterator[Episode]:
        for p, kind, _ in order:
            ep = episode_at(t, p)
            yield rerender(ep, rng, args.sigma, args.shift, args.action_noise, std) if kind == "noisy" else ep

    write_dataset(
        out,
        episodes(),
        action_spec=t.action_spec,
        fps=t.fps,
        splits=splits,
        robot_type=str(t.info.get("robot_type")),
        extra={k: v for k, v in t.info.get("vla_align", {}).items() if k != "action_spec"},
        overwrite=True,
    )
    return truth


def pairs_of(doc: dict[str, Any]) -> set[tuple[int, int]]:
    clusters: dict[int, list[int]] = {}
    for r in doc["episodes"]:
        clusters.setdefault(r["cluster"], []).append(r["episode_index"])
    out = set()
    for m in clusters.values():
        m = sorted(m)
        out |= {(a, b) for k, a in enumerate(m) for b in m[k + 1 :]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path, help="a clean dataset")
    p.add_argument("--out", type=Path, help="where the copy with duplicates goes (default: a temporary folder)")
    p.add_argument("--exact", type=float, default=0.05)
    p.add_argument("--noisy", type=float, default=0.05)
    p.add_argument("--sigma", type=float, default=3.0, help="pixel noise of the re-renders (grey levels)")
    p.add_argument("--shift", type=int, default=1, help="camera shift of the re-renders (px)")
    p.add_argument("--action-noise", type=float, default=0.02, help="action / state noise (fraction of the std)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    tmp = None if args.out else tempfile.mkdtemp(prefix="dedup_faults_")
    out = args.out if tmp is None else Path(tmp) / "data"
    try:
        truth = inject(args.dir, out, args.exact, args.noisy, args)
        baseline = dedup_dataset(args.dir, DedupParams())["summary"]  # copies already in the clean data
        wall, cpu = time.perf_counter(), time.process_time()
        doc = dedup_dataset(out, DedupParams())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    want = {tuple(sorted((c, s))): kind for c, (s, kind) in truth.items()}
    got = pairs_of(doc)
    hit = {pr: k for pr, k in want.items() if pr in got}
    fp = len(got - set(want))
    precision = len(hit) / len(got) if got else 1.0
    recall = len(hit) / len(want) if want else 1.0
    s = doc["summary"]
    print(
        f"dedup on {out}: {s['episodes']} episodes; machine: {cpu_name()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.2f}"
    )
    print(f"clean dataset {args.dir}: {baseline['flagged']} episode(s) flagged before injection")
    print(f"re-renders: sigma {args.sigma} grey levels, shift {args.shift} px, action noise {args.action_noise} std")
    print(
        "| injected exact | found | injected noisy | found | flagged | precision | recall | false-positive pairs | wall s | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ne, nn = sum(k == "exact" for k in want.values()), sum(k == "noisy" for k in want.values())
    fe, fn = sum(k == "exact" for k in hit.values()), sum(k == "noisy" for k in hit.values())
    print(
        f"| {ne} | {fe} | {nn} | {fn} | {s['flagged']} | {precision:.3f} | {recall:.3f} | {fp} | {wall:.1f} | {cpu:.1f} |"
    )
    print(
        f"cross-split clusters {s['cross_split_clusters']}, train copies of held-out episodes "
        f"{s['train_copies_of_held_out']}; pairs compared {s['pairs_compared']}, checked {s['pairs_checked']}"
    )


if __name__ == "__main__":
    main()
