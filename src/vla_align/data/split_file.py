"""Split files: which episodes of a dataset form train / val / test (and ``test_ood``), kept beside it.

LeRobot rewrites ``splits`` in ``meta/info.json`` to ``{"train": "0:N"}`` on every save, so a dataset
from the hub (or from any LeRobot tool) has no held-out split. ``vla-align data split DIR`` writes one
JSON file *next to* the dataset (default ``<DIR>.splits.json``; the dataset is never modified)::

    {"format": "vla-align-splits", "version": 1,
     "dataset": {"name": "DIR", "fingerprint": "<sha256 of meta/>", "episodes": N},
     "method": "episode" | "time-block", "seed": 0, "fractions": {"val": 0.1, "test": 0.1},
     "ood": {"task": [...], "instruction": [...], "object": [...]},
     "splits": {"train": [0, 3, ...], "val": [...], "test": [...], "test_ood": [...]}}

Methods: ``episode`` shuffles the in-domain episodes with ``seed`` and cuts them by the fractions;
``time-block`` keeps them in episode-index (recording) order and cuts the sequence into three
contiguous blocks, train first, then val, then test, so held-out episodes are never interleaved with
(recorded between) training episodes; it does not depend on the seed. ``--ood`` first moves every
episode of the named tasks / instructions (``object``: a case-insensitive substring of the
instruction) into ``test_ood``; val and test stay in-domain.

:func:`episodes_of_split` is what :func:`vla_align.data.lerobot.read_dataset` asks which episodes a
split holds: from the split file when there is one, else from info.json's ``splits``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DatasetError, UserError

FORMAT = "vla-align-splits"
VERSION = 1
SUFFIX = ".splits.json"
FROM_INFO = "info"  # data.splits value: use meta/info.json's splits even when a split file exists
METHODS = ("episode", "time-block")
OOD_KEYS = ("task", "instruction", "object")
OOD_SPLIT = "test_ood"


def dataset_meta_hash(root: Path) -> str:
    """sha256 of the dataset's description: every file under ``meta/`` (info.json, tasks, episodes,
    stats) with its relative path. The same dataset moved elsewhere keeps its hash."""
    meta = root / "meta"
    digest = hashlib.sha256()
    files = sorted(p for p in meta.rglob("*") if p.is_file() and not p.name.startswith(".")) if meta.is_dir() else []
    for p in files:
        digest.update(p.relative_to(meta).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def default_split_path(root: Path) -> Path:
    """``<DIR>.splits.json`` beside the dataset folder ``DIR`` (never inside it)."""
    root = Path(root)
    if root.name in ("", ".", ".."):
        root = root.resolve()
    if not root.name:
        raise UserError(f"{root}: a dataset folder cannot be the file-system root")
    return root.with_name(root.name + SUFFIX)


def resolve_split_file(root: Path, splits: str) -> Path | None:
    """The split file ``data.splits`` names: a path; ``""`` = ``<DIR>.splits.json`` when it exists;
    :data:`FROM_INFO` or no file = None (info.json's splits)."""
    if splits == FROM_INFO:
        return None
    if splits:
        path = Path(splits)
        if not path.is_file():
            raise DatasetError(
                f"split file {path} (data.splits) does not exist; restore it, or write it with "
                f"`vla-align data split {root} --out {path}`"
            )
        return path
    path = default_split_path(root)
    return path if path.is_file() else None


# --- reading and checking -----------------------------------------------------------------------


def _bad(path: Path, what: str) -> DatasetError:
    return DatasetError(f"{path}: {what}; re-run `vla-align data split` to write it again")


def load_split_file(path: Path) -> dict[str, Any]:
    """The split file at ``path``, checked to be one vla-align wrote (format, version, splits)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _bad(path, f"not valid JSON ({e})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _bad(path, f'not a vla-align split file (no "format": {FORMAT!r})')
    if data.get("version") != VERSION:
        raise _bad(path, f"version {data.get('version')!r} is not supported (expected {VERSION})")
    dataset, splits = data.get("dataset"), data.get("splits")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("fingerprint"), str):
        raise _bad(path, "field 'dataset.fingerprint' is missing")
    if not isinstance(splits, dict) or not splits:
        raise _bad(path, "field 'splits' is missing or empty")
    for name, ids in splits.items():
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise _bad(path, f"splits[{name!r}] is not a list of episode indices")
    excluded = data.get("excluded", [])
    if not isinstance(excluded, list) or not all(
        isinstance(r, dict)
        and isinstance(r.get("episode_index"), int)
        and not isinstance(r["episode_index"], bool)
        and isinstance(r.get("reason", ""), str)
        and isinstance(r.get("file", ""), str)
        for r in excluded
    ):
        raise _bad(path, "field 'excluded' is not a list of records with an integer 'episode_index'")
    return data


def check_split_file(data: dict[str, Any], path: Path, root: Path, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The file's splits as arrays, after checking it belongs to the dataset at ``root`` (fingerprint),
    names only its episodes ``ids`` and puts each episode in one split at most."""
    if data["dataset"]["fingerprint"] != dataset_meta_hash(root):
        raise DatasetError(
            f"{path}: was written for another dataset (or {root} changed since; its fingerprint differs); "
            f"re-run `vla-align data split {root}`"
        )
    out = {name: np.asarray(v, dtype=np.int64) for name, v in data["splits"].items()}
    seen: dict[int, str] = {}
    for name, arr in out.items():
        missing = np.setdiff1d(arr, ids)
        if len(missing):
            shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise _bad(path, f"splits[{name!r}] names {len(missing)} episode(s) not in {root} ({shown})")
        for i in arr.tolist():
            if i in seen:
                raise _bad(path, f"episode {i} is in both splits {seen[i]!r} and {name!r}; an episode may be in one")
            seen[i] = name
    for r in data.get("excluded", []):
        i = int(r["episode_index"])
        if i in seen:
            raise _bad(path, f"episode {i} is listed as excluded but is in split {seen[i]!r}")
    return out


def only_train_note(root: Path) -> str:
    return (
        f"{root} has only a train split; run `vla-align data split {root}` first, or pass "
        "--train.select.every 0 (training) / --split train (eval)"
    )


def episodes_of_split(
    root: Path,
    info_splits: dict[str, tuple[int, int]],
    split: str,
    ids: np.ndarray,
    splits: str = "",
) -> np.ndarray:
    """Positions in ``ids`` (the dataset's sorted episode indices) of the episodes of ``split``: from
    the split file ``splits`` resolves to (see :func:`resolve_split_file`), else from info.json's
    ``splits`` ranges ``info_splits``. An unknown split raises one line saying what to do."""
    path = resolve_split_file(root, splits)
    if path is not None:
        table = check_split_file(load_split_file(path), path, root, ids)
        if split not in table:
            raise DatasetError(f"split {split!r} not in split file {path} (has: {', '.join(table)})")
        return np.nonzero(np.isin(ids, table[split]))[0]
    if split not in info_splits:
        if set(info_splits) <= {"train"} and splits == FROM_INFO and default_split_path(root).is_file():
            raise DatasetError(
                f"split {split!r} not found: {root} has only a train split and this run uses meta/info.json's "
                f"splits (data.splits {FROM_INFO!r}; it started before {default_split_path(root)} existed); "
                "train a new run to use that file, or pass --split train"
            )
        if set(info_splits) <= {"train"}:
            raise DatasetError(f"split {split!r} not found: {only_train_note(root)}")
        raise DatasetError(f"split {split!r} not in {root} (has: {', '.join(info_splits) or 'no splits'})")
    start, end = info_splits[split]
    return np.nonzero((ids >= start) & (ids < end))[0]


def split_record(root: Path, splits: str) -> dict[str, str] | None:
    """What a run records about its split file: its path and sha256 (None: info.json's splits)."""
    path = resolve_split_file(root, splits)
    if path is None:
        return None
    return {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def check_split_record(record: dict[str, Any] | None, root: Path, splits: str, what: str) -> None:
    """Refuse when the split file a run recorded (``record``; None: info.json's splits) is not the one
    ``splits`` resolves to now (another file, a changed file, or a file instead of info.json)."""
    now = split_record(root, splits)
    if record is None and now is None:
        return
    if record is None or now is None or now["sha256"] != record.get("sha256"):
        used = f"split file {record.get('file')}" if record is not None else "the splits of meta/info.json"
        raise UserError(
            f"{what} used {used}, which changed or is gone since (data.splits now gives {splits!r}); restore it, "
            "or train a new run on the current splits"
        )


def run_splits(splits: str) -> str:
    """``data.splits`` of a trained run's config: runs pin it when they start, so an empty value comes
    from a run written before split files existed, which used info.json's splits."""
    return splits or FROM_INFO


# --- making a split file ------------------------------------------------------------------------


@dataclass
class Catalog:
    """Per episode of a dataset (sorted by index): its length, instruction and task."""

    ids: np.ndarray  # (E,) int64
    lengths: np.ndarray  # (E,) int64
    instructions: list[str]  # (E,)
    tasks: list[str]  # (E,) env task when the dataset records one, else the instruction


def read_catalog(root: Path) -> Catalog:
    """The episodes of the dataset at ``root`` from ``meta/episodes`` alone (no frame is read)."""
    ep_dir = root / "meta" / "episodes"
    files = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
    if not files:
        raise DatasetError(f"{ep_dir}: no episode parquet files; regenerate the dataset")
    try:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{ep_dir}: cannot be read as parquet ({e}); regenerate the dataset") from None
    for col in ("episode_index", "length", "tasks"):
        if col not in table.column_names:
            raise DatasetError(f"{ep_dir}: column {col!r} missing; regenerate the dataset")
    table = table.sort_by("episode_index")
    raw = [t if isinstance(t, str) else t[0] if isinstance(t, list) and t else None for t in table["tasks"].to_pylist()]
    blank = [i for i, t in enumerate(raw) if not isinstance(t, str) or not t.strip()]
    if blank:
        raise DatasetError(
            f"{ep_dir}: episode {table['episode_index'][blank[0]]} has no task string in column 'tasks' "
            f"({len(blank)} episode(s) without one); regenerate the dataset"
        )
    instructions = [str(t) for t in raw]
    env = table["env_task"].to_pylist() if "env_task" in table.column_names else [""] * len(instructions)
    return Catalog(
        ids=table["episode_index"].to_numpy().astype(np.int64),
        lengths=table["length"].to_numpy().astype(np.int64),
        instructions=instructions,
        tasks=[str(e) if e else i for e, i in zip(env, instructions, strict=True)],
    )


def parse_ood(items: list[str]) -> dict[str, list[str]]:
    """``--ood KEY=V1,V2`` flags (repeatable) as {key: values}; keys: task, instruction, object."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        names = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or key not in OOD_KEYS or not names:
            raise UserError(
                f"--ood {item!r}: expected KEY=VALUE[,VALUE...] with KEY one of {', '.join(OOD_KEYS)}, "
                "e.g. --ood task=pick-place-v3 or --ood object='red ball'"
            )
        out.setdefault(key, []).extend(names)
    return out


def ood_mask(catalog: Catalog, ood: dict[str, list[str]]) -> np.ndarray:
    """(E,) bool: the episodes ``ood`` holds out; a value that matches no episode is refused."""
    mask = np.zeros(len(catalog.ids), dtype=bool)
    for key, values in ood.items():
        for v in values:
            if key == "task":
                hit = np.array([t == v for t in catalog.tasks], dtype=bool)
            elif key == "instruction":
                hit = np.array([t == v for t in catalog.instructions], dtype=bool)
            else:
                hit = np.array([v.lower() in t.lower() for t in catalog.instructions], dtype=bool)
            if not hit.any():
                known = sorted(set(catalog.tasks if key == "task" else catalog.instructions))
                shown = ", ".join(repr(k) for k in known[:6]) + (", ..." if len(known) > 6 else "")
                raise UserError(f"--ood {key}={v!r} matches no episode; the dataset's {key}s include {shown}")
            mask |= hit
    return mask


def _count(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, round(n * fraction))


def make_splits(
    catalog: Catalog, method: str, val: float, test: float, seed: int, ood: dict[str, list[str]]
) -> dict[str, list[int]]:
    """Split name -> sorted episode indices (see the module docstring for the methods)."""
    if method not in METHODS:
        raise UserError(f"--by {method!r}: use one of {', '.join(METHODS)}")
    for name, f in (("--val", val), ("--test", test)):
        if not 0.0 <= f < 1.0:
            raise UserError(f"{name} {f}: a fraction of the episodes in [0, 1), e.g. 0.1")
    held = ood_mask(catalog, ood) if ood else np.zeros(len(catalog.ids), dtype=bool)
    inside = catalog.ids[~held]
    n_val, n_test = _count(len(inside), val), _count(len(inside), test)
    if len(inside) - n_val - n_test < 1:
        raise UserError(
            f"{len(inside)} in-domain episodes leave none for train with --val {val} --test {test}; "
            "lower the fractions (or hold out fewer --ood items)"
        )
    order = inside if method == "time-block" else np.random.default_rng(seed).permutation(inside)
    n_train = len(inside) - n_val - n_test
    out = {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    if held.any():
        out[OOD_SPLIT] = catalog.ids[held]
    return {k: sorted(int(i) for i in v) for k, v in out.items()}


@dataclass
class SplitRequest:
    """What ``vla-align data split`` was asked for."""

    method: str = "episode"
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    ood: dict[str, list[str]] = field(default_factory=dict)


def without_episodes(catalog: Catalog, drop: set[int]) -> Catalog:
    """``catalog`` less the episodes whose index is in ``drop``."""
    keep = [k for k, i in enumerate(catalog.ids.tolist()) if i not in drop]
    return Catalog(
        ids=catalog.ids[keep],
        lengths=catalog.lengths[keep],
        instructions=[catalog.instructions[k] for k in keep],
        tasks=[catalog.tasks[k] for k in keep],
    )


def split_document(
    root: Path, catalog: Catalog, request: SplitRequest, excluded: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The JSON document of a split file for the dataset at ``root``. ``excluded`` records
    (``episode_index``, ``reason``, ``file``) name episodes left out of every split (``data split
    --exclude``); the document keeps them under "excluded"."""
    inside = catalog if not excluded else without_episodes(catalog, {int(r["episode_index"]) for r in excluded})
    if len(inside.ids) == 0:
        raise UserError(
            f"the exclusion files flag all {len(catalog.ids)} episodes of {root}; no episode is left to split"
        )
    splits = make_splits(inside, request.method, request.val, request.test, request.seed, request.ood)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": {
            "name": Path(root).resolve().name,
            "fingerprint": dataset_meta_hash(root),
            "episodes": len(catalog.ids),
        },
        "method": request.method,
        "seed": request.seed,
        "fractions": {"val": request.val, "test": request.test},
        "ood": request.ood,
        "splits": splits,
    }
    if excluded is not None:
        doc["excluded"] = excluded
    return doc


def summary_rows(catalog: Catalog, splits: dict[str, list[int]]) -> list[tuple[str, int, int, int, int]]:
    """Per split: (name, episodes, frames, distinct instructions, instructions shared with train)."""
    pos = {int(i): k for k, i in enumerate(catalog.ids.tolist())}
    texts = {name: {catalog.instructions[pos[i]] for i in ids} for name, ids in splits.items()}
    rows = []
    for name, ids in splits.items():
        frames = int(sum(int(catalog.lengths[pos[i]]) for i in ids))
        shared = len(texts[name] & texts.get("train", set())) if name != "train" else len(texts[name])
        rows.append((name, len(ids), frames, len(texts[name]), shared))
    return rows


def pin_splits(root: Path, splits: str) -> str:
    """``data.splits`` made explicit for a run's config.json, so a resume and its evaluation use the same
    splits even when a split file appears later: the split file it resolves to, else :data:`FROM_INFO`."""
    path = resolve_split_file(root, splits)
    return FROM_INFO if path is None else str(path)
