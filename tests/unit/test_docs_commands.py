"""Every `vla-align` command line in the READMEs and the guide parses, and its config flags apply.

A command line is a line inside a fenced code block whose first word is ``vla-align`` (or a path
ending in ``/vla-align``, e.g. ``.venv/bin/vla-align``), possibly after ``$ ``; backslash
continuations are joined and a trailing ``# comment`` is dropped. ``[--flag VALUE]`` marks an optional
part: the line is checked without it and with it. Nothing is run: the line goes through
``build_parser().parse_args`` and, for train / pipeline, ``config.apply_flags`` on the preset it names
(so a misspelt flag, an invalid value or a flag of another variant fails). Placeholders such as RUN
or DIR are fine: paths are not opened.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from vla_align import config as config_lib
from vla_align.cli import build_parser
from vla_align.errors import ConfigError
from vla_align.presets import get_preset
from vla_align.train import check_config

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "README.zh-CN.md", "docs/guide.zh-CN.md")
FENCE = re.compile(r"^\s*(```|~~~)")


def command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every `vla-align` command line in fenced code blocks of ``text``."""
    out: list[tuple[int, str]] = []
    fenced = False
    pending: tuple[int, str] | None = None  # a command continued with a trailing backslash
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced, pending = not fenced, None
            continue
        if not fenced:
            continue
        if pending is not None:
            start, head = pending
            line = f"{head} {line.strip()}"
        else:
            start, line = number, line.strip().removeprefix("$ ")
            first = line.split(maxsplit=1)[0] if line.strip() else ""
            if first != "vla-align" and not first.endswith("/vla-align"):
                continue
        if line.rstrip().endswith("\\"):
            pending = (start, line.rstrip()[:-1].rstrip())
            continue
        pending = None
        out.append((start, line))
    return out


def variants(line: str) -> list[list[str]]:
    """The arguments of a command line (program name and comment dropped): without its ``[...]``
    optional parts and with them (just one variant when it has none)."""
    words = shlex.split(line, comments=True)[1:]
    bare: list[str] = []
    full: list[str] = []
    optional = False
    for word in words:
        starts, ends = word.startswith("["), word.endswith("]")
        optional = optional or starts
        word = word[1:] if starts else word
        word = word[:-1] if ends else word
        full.append(word)
        if not optional:
            bare.append(word)
        optional = optional and not ends
    return [bare, full] if bare != full else [full]


def _cases() -> list[pytest.ParameterSet]:
    cases = []
    for name in DOCS:
        for number, line in command_lines((REPO / name).read_text(encoding="utf-8")):
            cases.append(pytest.param(line, id=f"{name}:{number}"))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`vla-align {shlex.join(argv)}` does not parse: {err.getvalue().strip()}")


@pytest.mark.parametrize("line", CASES)
def test_a_documented_command_parses_and_its_config_flags_apply(parser: argparse.ArgumentParser, line: str) -> None:
    for argv in variants(line):
        args = parse(parser, argv)
        if args.command in ("train", "pipeline"):
            try:
                check_config(config_lib.apply_flags(get_preset(args.preset), args))
            except ConfigError as exc:
                pytest.fail(f"`vla-align {shlex.join(argv)}`: {exc}")


def test_each_readme_has_command_lines() -> None:
    found = {str(case.id).split(":")[0] for case in CASES}
    assert {"README.md", "README.zh-CN.md"} <= found


def test_the_extractor() -> None:
    text = "\n".join(
        [
            "vla-align train --out outside  # not in a code block",
            "```bash",
            "$ vla-align train --preset tiny \\",
            "    --train.steps 3   # three steps",
            ".venv/bin/vla-align report --run RUN [--lang en] [--out F]",
            "make demo",
            "```",
        ]
    )
    lines = command_lines(text)
    assert lines == [
        (3, "vla-align train --preset tiny --train.steps 3   # three steps"),
        (5, ".venv/bin/vla-align report --run RUN [--lang en] [--out F]"),
    ]
    assert variants(lines[0][1]) == [["train", "--preset", "tiny", "--train.steps", "3"]]
    assert variants(lines[1][1]) == [
        ["report", "--run", "RUN"],
        ["report", "--run", "RUN", "--lang", "en", "--out", "F"],
    ]


def test_a_bad_command_fails(parser: argparse.ArgumentParser) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"--train\.step "):
        parse(parser, ["train", "--train.step", "3"])
    args = parse(parser, ["train", "--preset", "tiny", "--model.policy.head.bins", "3"])
    with pytest.raises(ConfigError, match="binned"):
        config_lib.apply_flags(get_preset(args.preset), args)
