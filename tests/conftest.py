"""Make ``vla_align`` (src layout) and the ``tests`` helpers importable without an install; the shared
``cli`` fixture."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """``vla_align.cli.main`` in this process: (exit code, stdout, stderr); an escaping exception fails
    the test. Progress notes are off (``VLA_ALIGN_QUIET``) so stderr holds only what a failure says."""
    from vla_align.cli import main

    monkeypatch.setenv("VLA_ALIGN_QUIET", "1")

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return call
