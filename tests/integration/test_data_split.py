"""`vla-align data split` end to end on a dataset with only a train split (what LeRobot leaves):
split file beside it, training with validation-based selection, in-domain and OOD evaluation."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.synthetic import write_synthetic

CLI = Callable[..., tuple[int, str, str]]
N = 48


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synthetic(tmp_path_factory.mktemp("src") / "synth", n_train=36, n_val=6, n_test=6)
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["splits"] = {"train": f"0:{N}"}  # what LeRobot writes on every save
    info_path.write_text(json.dumps(info, indent=4))
    return root


@pytest.fixture
def dataset(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "lerobot_ds"))


def hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def one_line_error(code: int, err: str) -> str:
    assert code == 2 and err.count("\n") == 1 and err.startswith("vla-align: error: "), err
    return err


def test_split_train_with_selection_eval_in_domain_and_ood(cli: CLI, dataset: Path, tmp_path: Path) -> None:
    before = hashes(dataset)
    code, out, err = cli("data", "split", str(dataset), "--ood", "object=red", "--val", "0.1", "--test", "0.15")
    assert code == 0, err
    split_path = tmp_path / "lerobot_ds.splits.json"
    doc = json.loads(split_path.read_text())
    splits = doc["splits"]
    assert doc["format"] == "vla-align-splits" and doc["method"] == "episode" and doc["ood"] == {"object": ["red"]}
    assert splits["test_ood"] == list(range(0, N, 4))  # the synthetic colours cycle red, green, blue, yellow
    assert [len(splits[k]) for k in ("train", "val", "test")] == [
        27,
        4,
        5,
    ]  # 36 in-domain episodes: round(3.6), round(5.4)
    assert sorted(i for v in splits.values() for i in v) == list(range(N))
    assert "test_ood" in out and "shared with train" in out
    assert hashes(dataset) == before  # nothing written inside the dataset

    run = tmp_path / "run"
    flags = ("--preset", "tiny", "--data", str(dataset), "--out", str(run), "--train.steps", "12")
    code, _, err = cli("train", *flags, "--train.select.every", "6")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["splits"] == str(split_path)  # pinned: eval and --resume use this file
    assert config["dataset"]["splits"]["sha256"] == hashlib.sha256(split_path.read_bytes()).hexdigest()

    assert cli("eval", "--run", str(run))[0] == 0
    assert cli("eval", "--run", str(run), "--split", "test_ood")[0] == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["retrieval/samples"] == 5
    assert metrics["split/test_ood/retrieval/samples"] == N // 4
    assert hashes(dataset) == before

    split_path.write_text(split_path.read_text().replace('"seed": 0', '"seed": 1'))  # edited after training
    assert "changed or is gone" in one_line_error(*cli("eval", "--run", str(run))[::2])


def test_only_a_train_split_gives_a_note_not_a_traceback(cli: CLI, dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ("--preset", "tiny", "--data", str(dataset), "--out", str(run), "--train.steps", "4")
    err = one_line_error(*cli("train", *flags, "--train.select.every", "2")[::2])
    assert "has only a train split; run `vla-align data split" in err and "--train.select.every 0" in err
    assert not run.exists()  # refused before the run folder is made
    assert cli("train", *flags, "--train.select.every", "0")[0] == 0
    err = one_line_error(*cli("eval", "--run", str(run))[::2])
    assert "split 'test' not found" in err and "--split train" in err
    code, out, err = cli("eval", "--run", str(run), "--split", "train")
    assert code == 0, err
    assert "seen in training" in out + err
    assert json.loads((run / "metrics.json").read_text())["split/train/retrieval/samples"] == N

    # a split file written later does not change the splits of this run (pinned to info.json)
    assert cli("data", "split", str(dataset))[0] == 0
    assert "this run uses meta/info.json's splits" in one_line_error(*cli("eval", "--run", str(run))[::2])


def test_time_blocks_and_custom_out(cli: CLI, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere" / "blocks.json"
    out.parent.mkdir()
    assert (
        cli("data", "split", str(dataset), "--by", "time-block", "--val", "0.25", "--test", "0.25", "--out", str(out))[
            0
        ]
        == 0
    )
    splits = json.loads(out.read_text())["splits"]
    assert splits == {"train": list(range(24)), "val": list(range(24, 36)), "test": list(range(36, 48))}
    assert not (tmp_path / "lerobot_ds.splits.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "{ds}/meta/splits.json"], "refusing to write there"),
        (["--ood", "colour=red"], "KEY=VALUE"),
        (["--ood", "task=Nope-v0"], "matches no episode"),
        (["--val", "0.6", "--test", "0.5"], "none for train"),
    ],
)
def test_bad_split_requests_are_one_line(cli: CLI, dataset: Path, args: list[str], message: str) -> None:
    before = hashes(dataset)
    err = one_line_error(*cli("data", "split", str(dataset), *[a.format(ds=dataset) for a in args])[::2])
    assert message in err
    assert hashes(dataset) == before


def test_an_existing_split_file_needs_overwrite(cli: CLI, dataset: Path, tmp_path: Path) -> None:
    assert cli("data", "split", str(dataset), "--seed", "1")[0] == 0
    assert "pass --overwrite" in one_line_error(*cli("data", "split", str(dataset), "--seed", "2")[::2])
    assert cli("data", "split", str(dataset), "--seed", "2", "--overwrite")[0] == 0
    assert json.loads((tmp_path / "lerobot_ds.splits.json").read_text())["seed"] == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["splits"]["test"].append(s["splits"]["train"][0]), "is in both splits"),
        (lambda s: s["splits"]["val"].append(999), "not in"),
        (lambda s: s["dataset"].update(fingerprint="0" * 64), "re-run `vla-align data split"),
    ],
)
def test_bad_split_files_stop_training_in_one_line(
    cli: CLI, dataset: Path, tmp_path: Path, edit: Callable[[dict[str, object]], None], message: str
) -> None:
    assert cli("data", "split", str(dataset))[0] == 0
    path = tmp_path / "lerobot_ds.splits.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    flags = ("--preset", "tiny", "--data", str(dataset), "--out", str(tmp_path / "run"), "--train.steps", "2")
    assert message in one_line_error(*cli("train", *flags)[::2])
