"""`train --help` / `pipeline --help` describe every config flag (from the source) with the value it has
in the chosen preset or config file; snake_case config flags; unknown-flag suggestions; --print-config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_align import checkpoint
from vla_align import config as config_lib
from vla_align.cli import build_parser, main
from vla_align.config import _leaves
from vla_align.presets import RunConfig, get_preset


@pytest.fixture(autouse=True)
def _wide_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """One line per flag: argparse wraps its help at $COLUMNS."""
    monkeypatch.setenv("COLUMNS", "1000")


def help_lines(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, str]:
    """Flag -> its help (flag, metavar, text, on one line) in the output of ``vla-align *argv`` (exit 0)."""
    assert main(list(argv)) == 0
    out: dict[str, str] = {}
    flag = ""
    for line in capsys.readouterr().out.splitlines():
        words = line.split()
        if words and words[0].startswith("-"):
            flag = next((w.rstrip(",") for w in words if w.startswith("--")), words[0])
            out[flag] = " ".join(words)
        elif words and line.startswith(" ") and flag:  # argparse puts a long flag's help on the next line
            out[flag] += " " + " ".join(words)
        else:
            flag = ""
    return out


def test_every_leaf_has_a_description_from_the_source() -> None:
    docs = config_lib.describe_leaves(RunConfig)
    paths = {path for _flag, path, _tp in _leaves(RunConfig)} - {"preset"}
    assert paths <= set(docs)
    missing = sorted(p for p in paths if not docs[p].strip())
    assert not missing, f"config fields without a comment in their dataclass: {missing}"


def test_a_field_comment_is_read_from_its_line_or_the_line_above() -> None:
    from vla_align.sim.base import DataConfig
    from vla_align.train import TrainConfig

    assert config_lib.field_doc(TrainConfig, "min_lr_ratio") == "cosine decays to lr * min_lr_ratio"
    assert config_lib.field_doc(DataConfig, "train_episodes").startswith("episodes per split")  # comment above
    assert config_lib.field_doc(TrainConfig, "no_such_field") == ""


def test_train_help_shows_the_presets_values(capsys: pytest.CaptureFixture[str]) -> None:
    tiny = help_lines(capsys, "train", "--preset", "tiny", "--help")
    steps = get_preset("tiny").train.steps
    assert tiny["--train.steps"] == f"--train.steps N optimiser steps (default: {steps})"
    assert "(default: 8 16)" in tiny["--model.image.channels"]
    assert "(default: 0.0)" in tiny["--model.policy.history-dropout"]
    quick = help_lines(capsys, "train", "--help")  # no --preset: babyai-quick
    assert f"(default: {get_preset('babyai-quick').train.steps})" in quick["--train.steps"]
    assert "(default: 0.7)" in quick["--model.policy.history-dropout"]
    assert "probability of hiding" in quick["--model.policy.history-dropout"]


def test_pipeline_help_and_help_before_the_preset(capsys: pytest.CaptureFixture[str]) -> None:
    lines = help_lines(capsys, "pipeline", "--help", "--preset=tiny")
    assert "(default: 16)" in lines["--train.batch-size"]
    assert "--print-config" in lines and "--config" in lines


def test_help_names_the_variant_a_flag_belongs_to(capsys: pytest.CaptureFixture[str]) -> None:
    lines = help_lines(capsys, "train", "--preset", "tiny", "--help")
    bins = lines["--model.policy.head.bins"]
    assert "[binned action head]" in bins and "selected action head: regression" in bins
    assert "256 with --model.policy.head binned" in bins
    assert "[regression action head]" in lines["--model.policy.head.reg-loss"]
    assert "(default: l1)" in lines["--model.policy.head.reg-loss"]
    assert "[xattn fusion]" in lines["--model.policy.fusion.heads"]
    assert "(default: regression)" in lines["--model.policy.head"]
    assert "binned, flow, regression" in lines["--model.policy.head"]


def test_help_shows_the_values_of_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = get_preset("tiny")
    cfg.train.steps = 7
    config_lib.save(cfg, tmp_path / "config.json", dataset={"info": {}})
    lines = help_lines(capsys, "train", "--config", str(tmp_path / "config.json"), "--help")
    assert "(default: 7)" in lines["--train.steps"]
    assert "config.json instead of a preset" in lines["--config"]


def test_help_with_an_unknown_preset_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--preset", "nope", "--help"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope" in err and "tiny" in err


def test_top_level_help_reads_no_source(capsys: pytest.CaptureFixture[str]) -> None:
    """The descriptions are read only when a train / pipeline help asks for them."""
    config_lib._own_comments.cache_clear()
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    build_parser().parse_args(["train", "--preset", "tiny", "--out", "r"])
    assert config_lib._own_comments.cache_info().currsize == 0


def test_snake_case_config_flags() -> None:
    args = build_parser().parse_args(
        ["train", "--preset", "tiny", "--model.policy.history_dropout", "0.7", "--train.batch_size=64", "--out", "r"]
    )
    cfg = config_lib.apply_flags(get_preset("tiny"), args)
    assert cfg.model.policy.history_dropout == 0.7 and cfg.train.batch_size == 64
    assert config_lib.kebab_flags(["--data.path", "a_b", "--", "--x.y_z"]) == ["--data.path", "a_b", "--", "--x.y_z"]
    assert config_lib.kebab_flags(["--max_episodes", "--a.b_c=d_e"]) == ["--max_episodes", "--a.b-c=d_e"]


def test_an_unknown_flag_suggests_the_closest(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--preset", "tiny", "--model.embd-dim", "3", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "did you mean --model.embed-dim" in err and "(see `vla-align train --help`)" in err
    assert main(["pipeline", "--steps", "3", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--train.steps" in err and "vla-align pipeline --help" in err
    assert not (tmp_path / "r").exists()


def _printed(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_print_config_prints_the_resolved_config_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _printed(capsys, "train", "--preset", "tiny", "--train.steps", "7", "--print-config")
    expected = get_preset("tiny")
    expected.train.steps = 7
    assert data == config_lib.to_dict(expected)
    data = _printed(capsys, "pipeline", "--preset", "tiny", "--model.policy.head", "flow", "--print-config")
    assert data["model"]["policy"]["head"]["name"] == "flow"  # type: ignore[index]
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "c.json").write_text(json.dumps(data))  # what it prints is a valid --config
    assert _printed(capsys, "train", "--config", "c.json", "--print-config") == data


def test_print_config_validates(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--preset", "tiny", "--model.embed-dim", "3", "--print-config"]) == 2
    assert "embed_dim" in capsys.readouterr().err


def test_print_config_of_a_resumed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cfg = get_preset("tiny")
    config_lib.save(cfg, run / "config.json", dataset={"info": {}})
    checkpoint.write_fingerprint(run, cfg, tmp_path / "data")
    before = sorted(p.name for p in run.iterdir())
    data = _printed(capsys, "train", "--resume", str(run), "--train.steps", "50", "--print-config")
    assert data["train"]["steps"] == 50  # type: ignore[index]
    assert main(["train", "--resume", str(run), "--model.embed-dim", "64", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "model.embed_dim" in err and "train.steps" in err
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize("command", ["train", "pipeline"])
def test_every_config_flag_in_the_help_has_a_description_and_a_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = help_lines(capsys, command, "--preset", "tiny", "--help")
    flags = {"--" + flag.replace("_", "-") for flag, _path, _tp in _leaves(RunConfig)} - {"--preset"}
    assert flags <= set(lines)
    for flag in flags:
        head, _, note = lines[flag].partition(" (default: ")
        assert note, lines[flag]
        assert len(head.split()) > 2, f"{flag} has no description: {lines[flag]}"
