"""Split files (data/split_file.py): how episodes are split, and how a split file is checked."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vla_align.data import split_file as sf
from vla_align.errors import DatasetError, UserError

COLOURS = ["red", "green", "blue", "yellow"]


def catalog(n: int = 100) -> sf.Catalog:
    ids = np.arange(n, dtype=np.int64)
    texts = [f"pick up the {COLOURS[i % 4]} ball" for i in range(n)]
    tasks = [f"Task-{i % 5}" for i in range(n)]
    return sf.Catalog(ids=ids, lengths=np.full(n, 7, dtype=np.int64), instructions=texts, tasks=tasks)


def all_ids(splits: dict[str, list[int]]) -> list[int]:
    return sorted(i for ids in splits.values() for i in ids)


def test_random_split_is_deterministic_per_seed_and_respects_fractions() -> None:
    c = catalog()
    a = sf.make_splits(c, "episode", 0.1, 0.2, seed=1, ood={})
    assert a == sf.make_splits(c, "episode", 0.1, 0.2, seed=1, ood={})
    assert a != sf.make_splits(c, "episode", 0.1, 0.2, seed=2, ood={})
    assert [len(a[k]) for k in ("train", "val", "test")] == [70, 10, 20]
    assert all_ids(a) == list(range(100))  # every episode once: no overlap, none lost
    assert all(a[k] == sorted(a[k]) for k in a)
    assert a["test"] != list(range(80, 100))  # shuffled, not the tail


def test_time_blocks_are_contiguous_and_in_order() -> None:
    s = sf.make_splits(catalog(50), "time-block", 0.1, 0.2, seed=9, ood={})
    assert s == {"train": list(range(35)), "val": list(range(35, 40)), "test": list(range(40, 50))}
    assert s == sf.make_splits(catalog(50), "time-block", 0.1, 0.2, seed=0, ood={})  # seed-independent


def test_small_fractions_still_give_one_episode_and_zero_gives_none() -> None:
    s = sf.make_splits(catalog(5), "episode", 0.01, 0.0, seed=0, ood={})
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (4, 1, 0)
    with pytest.raises(UserError, match="none for train"):
        sf.make_splits(catalog(2), "episode", 0.5, 0.5, seed=0, ood={})
    with pytest.raises(UserError, match=r"--val 1\.5"):
        sf.make_splits(catalog(), "episode", 1.5, 0.1, seed=0, ood={})


@pytest.mark.parametrize(
    ("flags", "held"),
    [
        (["task=Task-1,Task-3"], lambda i: i % 5 in (1, 3)),
        (["instruction=pick up the red ball"], lambda i: i % 4 == 0),
        (["object=BLUE ball", "object=yellow"], lambda i: i % 4 in (2, 3)),
    ],
)
def test_ood_holds_out_exactly_the_named_items(flags: list[str], held: Callable[[int], bool]) -> None:
    c = catalog()
    s = sf.make_splits(c, "episode", 0.1, 0.1, seed=0, ood=sf.parse_ood(flags))
    expected = [i for i in range(100) if held(i)]
    assert s["test_ood"] == expected
    in_domain = [i for k in ("train", "val", "test") for i in s[k]]
    assert not set(in_domain) & set(expected)
    assert all_ids(s) == list(range(100))


def test_bad_ood_flags_are_one_line() -> None:
    for flag in ("colour=red", "task", "task=", "object=,"):
        with pytest.raises(UserError, match="KEY=VALUE"):
            sf.parse_ood([flag])
    with pytest.raises(UserError, match=r"matches no episode.*Task-0"):
        sf.ood_mask(catalog(), {"task": ["Task-9"]})


def test_default_path_is_beside_the_dataset(tmp_path: Path) -> None:
    assert sf.default_split_path(tmp_path / "ds") == tmp_path / "ds.splits.json"
    assert sf.default_split_path(tmp_path / "ds" / ".") == tmp_path / "ds.splits.json"


def test_summary_counts_frames_and_shared_instructions() -> None:
    c = catalog(8)
    rows = sf.summary_rows(c, {"train": [0, 1, 2], "test": [3, 4], "test_ood": [7]})
    assert rows == [("train", 3, 21, 3, 3), ("test", 2, 14, 2, 1), ("test_ood", 1, 7, 1, 0)]


def _dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text('{"splits": {"train": "0:6"}}')
    return root


def _write(root: Path, splits: dict[str, list[int]], **changes: object) -> Path:
    doc = {
        "format": sf.FORMAT,
        "version": sf.VERSION,
        "dataset": {"fingerprint": sf.dataset_meta_hash(root)},
        "splits": splits,
    } | changes
    path = sf.default_split_path(root)
    path.write_text(json.dumps(doc))
    return path


def test_episodes_of_split_reads_the_split_file_beside_the_dataset(tmp_path: Path) -> None:
    root, ids = _dataset(tmp_path), np.arange(6)
    info_splits = {"train": (0, 6)}
    assert sf.episodes_of_split(root, info_splits, "train", ids).tolist() == list(range(6))
    with pytest.raises(DatasetError, match="has only a train split; run `vla-align data split"):
        sf.episodes_of_split(root, info_splits, "test", ids)
    _write(root, {"train": [0, 2, 3, 5], "test": [1, 4]})
    assert sf.episodes_of_split(root, info_splits, "test", ids).tolist() == [1, 4]
    with pytest.raises(DatasetError, match="has only a train split"):
        sf.episodes_of_split(root, info_splits, "test", ids, sf.FROM_INFO)  # pinned to info.json
    with pytest.raises(DatasetError, match=r"split 'val' not in split file .*has: train, test"):
        sf.episodes_of_split(root, info_splits, "val", ids)
    with pytest.raises(DatasetError, match="does not exist; restore it, or write it with `vla-align data split"):
        sf.episodes_of_split(root, info_splits, "test", ids, str(tmp_path / "nope.json"))


@pytest.mark.parametrize(
    ("splits", "changes", "message"),
    [
        ({"train": [0, 1], "test": [1, 2]}, {}, "episode 1 is in both splits 'train' and 'test'"),
        ({"train": [0, 1], "test": [7, 9]}, {}, r"splits\['test'\] names 2 episode\(s\) not in .* \(7, 9\)"),
        ({"train": [0]}, {"dataset": {"fingerprint": "0" * 64}}, "another dataset .* re-run `vla-align data split"),
        ({"train": [0]}, {"format": "other"}, "not a vla-align split file"),
        ({"train": [0]}, {"version": 99}, "version 99 is not supported"),
        ({"train": "0:3"}, {}, "is not a list of episode indices"),
    ],
)
def test_bad_split_files_are_refused_in_one_line(
    tmp_path: Path, splits: dict[str, object], changes: dict[str, object], message: str
) -> None:
    root = _dataset(tmp_path)
    _write(root, splits, **changes)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=message) as err:
        sf.episodes_of_split(root, {"train": (0, 6)}, "train", np.arange(6))
    assert "\n" not in str(err.value)


def test_a_changed_dataset_invalidates_its_split_file(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    _write(root, {"train": [0, 1, 2], "test": [3, 4, 5]})
    (root / "meta" / "info.json").write_text('{"splits": {"train": "0:6"}, "fps": 5}')
    with pytest.raises(DatasetError, match="fingerprint differs"):
        sf.episodes_of_split(root, {"train": (0, 6)}, "test", np.arange(6))


def test_pinned_splits_and_run_records(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    assert sf.pin_splits(root, "") == sf.FROM_INFO and sf.split_record(root, sf.FROM_INFO) is None
    sf.check_split_record(None, root, sf.FROM_INFO, "run R")  # info.json then and now
    path = _write(root, {"train": [0, 1, 2, 3], "test": [4, 5]})
    assert sf.pin_splits(root, "") == str(path)
    record = sf.split_record(root, str(path))
    assert record is not None and record["file"] == str(path)
    sf.check_split_record(record, root, str(path), "run R")
    with pytest.raises(UserError, match=r"run R used the splits of meta/info\.json"):
        sf.check_split_record(None, root, str(path), "run R")
    _write(root, {"train": [0, 1, 2], "test": [3, 4, 5]})
    with pytest.raises(UserError, match=re.escape(f"run R used split file {path}")):
        sf.check_split_record(record, root, str(path), "run R")
    assert sf.run_splits("") == sf.FROM_INFO and sf.run_splits("x.json") == "x.json"


def test_data_split_is_a_data_subcommand_no_simulator_can_shadow(monkeypatch: pytest.MonkeyPatch) -> None:
    from vla_align import cli
    from vla_align.sim import SIMULATORS

    args = cli.build_parser().parse_args(["data", "split", "ds", "--by", "time-block", "--ood", "task=a,b"])
    assert args.func is cli.cmd_data_split and args.by == "time-block" and args.ood == ["task=a,b"]
    first = SIMULATORS.names()[0]
    monkeypatch.setitem(SIMULATORS._items, "split", SIMULATORS.get(first))
    parser = cli.build_parser()
    assert parser.parse_args(["data", "split", "ds"]).func is cli.cmd_data_split  # the split command wins
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    data = next(a for a in sub.choices["data"]._actions if isinstance(a, argparse._SubParsersAction))
    assert "cannot generate data from here: rename it" in (data.choices["split"].description or "")
