"""The documentation points only at things a clone has: every relative link and every file path it
names in backticks exists in the repository, and nothing refers to folders outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "README.zh-CN.md", "docs/guide.zh-CN.md", "CHANGELOG.md"]
LINK = re.compile(r"\]\(([^)#\s]+)")  # markdown link or image target
# a backticked path of the repository: starts with one of its top-level folders, has a file suffix
REPO_PATH = re.compile(r"`((?:src|tests|benchmarks|docs)/[\w./-]+\.\w+)`")
GENERATED = ("runs/", "datasets/", "test-artifacts/")


def _targets(doc: str) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate((ROOT / doc).read_text(encoding="utf-8").splitlines(), 1):
        out += [(number, m) for m in LINK.findall(line) if "://" not in m]
        out += [(number, m) for m in REPO_PATH.findall(line)]
    return out


@pytest.mark.parametrize("doc", DOCS)
def test_every_referenced_file_exists(doc: str) -> None:
    base = (ROOT / doc).parent
    missing = [
        f"{doc}:{n}: {target}"
        for n, target in _targets(doc)
        if not target.startswith(GENERATED) and not ((base / target).exists() or (ROOT / target).exists())
    ]
    assert not missing, "documentation names files the repository does not have:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS)
def test_nothing_outside_the_repository(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    outside = [m.group(0) for m in re.finditer(r"\.\./[\w./-]+|\bshared/(?:seeds|DESIGN)[\w./-]*", text)]
    assert not outside, f"{doc} points outside the repository: {outside}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    line = "see [the design](../shared/DESIGN.md) and `src/vla_align/nope.py`"
    assert LINK.findall(line) == ["../shared/DESIGN.md"]
    assert REPO_PATH.findall(line) == ["src/vla_align/nope.py"]
    assert not (ROOT / "src/vla_align/nope.py").exists()
