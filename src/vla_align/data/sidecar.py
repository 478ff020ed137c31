"""Quality files kept beside a dataset: what a data step (align, dedup, vote) found, per episode.

``vla-align data align|dedup|vote DIR`` never modify ``DIR``; each writes one JSON document next to it
(``<DIR>.align.json``, ``<DIR>.dedup.json``, ``<DIR>.vote.json``; ``--out`` chooses another place)::

    {"format": "vla-align-<kind>", "version": 1,
     "dataset": {"name": "DIR", "fingerprint": "<sha256 of meta/>", "episodes": N},
     "params": {...},                      # how the step ran (thresholds, run, ...)
     "summary": {...},                     # the step's headline figures
     "episodes": [{"episode_index": 0, ...}, ...],   # one record per episode the step looked at
     "flagged": [{"episode_index": 7, "reason": "..."}, ...]}   # what training may drop

Training reads them through the data config: ``data.align`` (the per-episode camera-action offsets,
applied as a corrected view of every split) and ``data.exclude`` (the ``flagged`` episodes of dedup /
vote files are left out of the training split). The fingerprint ties a file to the dataset it was
computed on: a file of another (or a since-changed) dataset is refused with the command to re-run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import atomic, safety
from ..errors import DatasetError, UserError
from .split_file import dataset_meta_hash, default_split_path

VERSION = 1
KINDS = ("align", "dedup", "vote")


def default_path(root: Path, kind: str) -> Path:
    """``<DIR>.<kind>.json`` beside the dataset folder ``DIR`` (never inside it)."""
    split_path = default_split_path(root)  # resolves "." and refuses the file-system root
    return split_path.with_name(split_path.name.removesuffix(".splits.json") + f".{kind}.json")


def _format(kind: str) -> str:
    return f"vla-align-{kind}"


def document(
    root: Path,
    kind: str,
    num_episodes: int,
    params: dict[str, Any],
    summary: dict[str, Any],
    episodes: list[dict[str, Any]],
    flagged: list[dict[str, Any]],
) -> dict[str, Any]:
    """The document of a ``kind`` step on the dataset at ``root``."""
    if kind not in KINDS:
        raise ValueError(f"unknown quality-file kind {kind!r}")
    return {
        "format": _format(kind),
        "version": VERSION,
        "dataset": {"name": Path(root).name, "fingerprint": dataset_meta_hash(Path(root)), "episodes": num_episodes},
        "params": params,
        "summary": summary,
        "episodes": episodes,
        "flagged": flagged,
    }


def check_writable(out: Path, kind: str, overwrite: bool, root: Path) -> None:
    """Refuse a place inside the dataset ``root`` (it is never written), a file that is not a ``kind``
    quality file, or any existing file without ``overwrite``."""
    safety.check_outside(out, [root])
    if out.is_dir():
        raise UserError(f"{out} is a folder; --out names the {kind} file to write")
    if not out.exists():
        return
    if not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it, or --out to write elsewhere")
    try:
        data = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("format") != _format(kind):
        raise UserError(f"{out} is not a vla-align {kind} file; it is left alone: choose another --out")


def write(out: Path, doc: dict[str, Any]) -> Path:
    atomic.write_json(out, doc)
    return out


def _bad(path: Path, kind: str, what: str) -> DatasetError:
    return DatasetError(f"{path}: {what}; re-run `vla-align data {kind} DIR` to write it again")


def load(path: Path, kind: str, root: Path | None = None) -> dict[str, Any]:
    """The ``kind`` file at ``path``, checked (format, version, records); with ``root``, also that it was
    computed on the dataset at ``root`` as it is now (fingerprint)."""
    path = Path(path)
    if not path.is_file():
        where = f" beside {root}" if root is not None else ""
        raise DatasetError(
            f"{kind} file {path} does not exist{where}; write it with `vla-align data {kind} "
            f"{root if root is not None else 'DIR'}{' --out ' + str(path) if root is not None else ''}`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _bad(path, kind, f"not valid JSON ({e})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from None
    if not isinstance(data, dict) or data.get("format") != _format(kind):
        found = data.get("format") if isinstance(data, dict) else None
        hint = f" (it is a {found!r} file)" if isinstance(found, str) else ""
        raise _bad(path, kind, f'not a vla-align {kind} file (no "format": {_format(kind)!r}){hint}')
    if data.get("version") != VERSION:
        raise _bad(path, kind, f"version {data.get('version')!r} is not supported (expected {VERSION})")
    dataset = data.get("dataset")
    if not isinstance(dataset, dict) or not isinstance(dataset.get("fingerprint"), str):
        raise _bad(path, kind, "field 'dataset.fingerprint' is missing")
    for field in ("episodes", "flagged"):
        records = data.get(field)
        if not isinstance(records, list) or not all(
            isinstance(r, dict) and isinstance(r.get("episode_index"), int) and not isinstance(r["episode_index"], bool)
            for r in records
        ):
            raise _bad(path, kind, f"field {field!r} is not a list of records with an integer 'episode_index'")
    if root is not None and dataset["fingerprint"] != dataset_meta_hash(Path(root)):
        raise DatasetError(
            f"{path}: was computed on another dataset (or {root} changed since; its fingerprint differs); "
            f"re-run `vla-align data {kind} {root}`"
        )
    return data


def kind_of(path: Path) -> str:
    """The kind of the quality file at ``path`` (from its ``format``), for ``data.exclude`` lists that mix them."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"quality file {path} (data.exclude) does not exist; check the path") from None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        raise DatasetError(f"{path}: not a vla-align dedup or vote file (not readable JSON)") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    for kind in KINDS:
        if fmt == _format(kind):
            return kind
    raise DatasetError(f"{path}: not a vla-align dedup or vote file (format {fmt!r}); data.exclude takes those")


def flagged_ids(data: dict[str, Any]) -> set[int]:
    return {int(r["episode_index"]) for r in data["flagged"]}


def read_exclusions(root: Path, files: list[str]) -> list[dict[str, Any]]:
    """The flagged episodes of the dedup / vote files ``files`` (each checked to belong to the dataset at
    ``root`` as it is now), as "excluded" records: the first file to flag an episode gives its reason."""
    out: dict[int, dict[str, Any]] = {}
    for name in files:
        path = Path(name)
        kind = kind_of(path)
        if kind not in ("dedup", "vote"):
            raise UserError(f"{path}: a {kind} file; --exclude takes dedup or vote files")
        for r in load(path, kind, root)["flagged"]:
            i = int(r["episode_index"])
            reason = r.get("reason")
            out.setdefault(
                i, {"episode_index": i, "reason": reason if isinstance(reason, str) else kind, "file": str(path)}
            )
    return [out[i] for i in sorted(out)]
