"""Bad input ends with one clear line, exit code 2, no traceback, nothing overwritten."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.synthetic import write_synthetic

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "VLA_ALIGN_QUIET": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vla_align", *args], env=env, capture_output=True, text=True, timeout=120
    )


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("d") / "synth")


def test_missing_dataset(tmp_path: Path) -> None:
    proc = run_cli("train", "--preset", "tiny", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    assert_clean_failure(proc, str(tmp_path / "nope"), "vla-align data")
    assert not (tmp_path / "r").exists()


def test_corrupt_dataset(tmp_path: Path, dataset: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "meta" / "info.json").write_text("{ not json")
    assert_clean_failure(
        run_cli("train", "--preset", "tiny", "--data", str(bad), "--out", str(tmp_path / "r")), "info.json"
    )
    shutil.rmtree(bad)
    shutil.copytree(dataset, bad)
    for f in (bad / "data").rglob("*.parquet"):
        f.write_bytes(b"garbage")
    assert_clean_failure(
        run_cli("train", "--preset", "tiny", "--data", str(bad), "--out", str(tmp_path / "r")), ".parquet"
    )


def test_unknown_preset_and_unknown_key(tmp_path: Path) -> None:
    assert_clean_failure(run_cli("pipeline", "--preset", "nope", "--out", str(tmp_path / "r")), "nope", "tiny")
    assert_clean_failure(
        run_cli("pipeline", "--preset", "tiny", "--model.embd-dim", "3", "--out", str(tmp_path / "r")),
        "--model.embd-dim",
    )
    assert_clean_failure(
        run_cli("pipeline", "--preset", "tiny", "--model.embed-dim", "3", "--out", str(tmp_path / "r")), "embed_dim"
    )
    cfg = tmp_path / "c.json"
    cfg.write_text('{"model": {"embd_dim": 3}}')
    assert_clean_failure(run_cli("train", "--config", str(cfg), "--out", str(tmp_path / "r")), "embd_dim")
    assert not (tmp_path / "r").exists()


def test_image_of_wrong_shape(tmp_path: Path, dataset: Path) -> None:
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    info = json.loads((bad / "meta" / "info.json").read_text())
    info["features"]["observation.image"]["shape"] = [32, 32, 3]
    (bad / "meta" / "info.json").write_text(json.dumps(info))
    assert_clean_failure(
        run_cli("train", "--preset", "tiny", "--data", str(bad), "--out", str(tmp_path / "r")), "shape"
    )


def test_empty_instruction_is_rejected(tmp_path: Path) -> None:
    from tests.synthetic import episode

    from vla_align.errors import DatasetError

    ep = episode(0)
    with pytest.raises(DatasetError, match="instruction is empty"):
        type(ep)(**{**ep.__dict__, "instruction": "  "})


def test_existing_run_is_not_overwritten(tmp_path: Path, dataset: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    assert_clean_failure(
        run_cli("pipeline", "--preset", "tiny", "--data", str(dataset), "--out", str(run)), "--overwrite"
    )
    assert (run / "keep.txt").read_text() == "mine"


def test_resume_of_a_non_run(tmp_path: Path) -> None:
    assert_clean_failure(run_cli("train", "--resume", str(tmp_path)), "config.json")
    assert_clean_failure(run_cli("eval", "--run", str(tmp_path / "none")), "config.json")


def test_a_flag_of_the_other_simulator_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vla_align.cli import main

    assert main(["data", "metaworld", "--level", "GoToLocal", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --level" in err and "vla-align data metaworld --help" in err
    assert main(["data", "babyai", "--episodes-per-task", "3", "--out", str(tmp_path / "d")]) == 2
    assert "unrecognized arguments: --episodes-per-task" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_version_and_full_preset_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    from vla_align import __version__
    from vla_align.cli import main
    from vla_align.presets import PRESETS

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"vla-align {__version__}"
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS.names():
        doc = " ".join((PRESETS.get(name).__doc__ or "").split())
        assert f"{name:14s} {doc}" in out.splitlines()
