"""Every bad input of the catalogue (tests/badinputs) ends the promised way: exit code 2, no traceback,
one line on stderr naming the problem (the case's keywords), and every pre-existing file byte-identical.

The fixtures (datasets, trained runs) are built once per session; each case copies what it needs into
the same directory ``BASE/case`` (so that the absolute dataset paths recorded in the runs hold) and runs
``vla_align.cli.main`` in process (a few cases as a subprocess with a memory limit).
``benchmarks/bad_inputs_census.py`` runs the same catalogue and counts the outcomes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.badinputs.case import Case, Ctx
from tests.badinputs.catalogue import CASES, CATEGORIES, build_fixtures, counts
from tests.badinputs.harness import classify, run_case, snapshot


@pytest.fixture(scope="session")
def badinputs_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("badinputs")
    build_fixtures(base)
    return base


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, badinputs_base: Path) -> None:
    outcome = run_case(case, badinputs_base)
    assert outcome.kind == "clean", (
        f"{case.id} ended {outcome.kind}: {outcome.detail}\n"
        f"why the input is bad: {case.why or '-'}\nexpected keywords: {case.keywords}\n"
        f"exit code {outcome.returncode}, stderr:\n{outcome.stderr[-3000:]}"
    )


def test_the_catalogue_covers_every_category() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    per = counts()
    assert set(per) == set(CATEGORIES)
    assert all(n >= 10 for n in per.values()), per


def _ctx(tmp_path: Path) -> Ctx:
    (tmp_path / "cwd").mkdir()
    return Ctx(tmp_path, tmp_path / "pristine")


def test_classify_tells_the_outcomes_apart(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    case = Case("cli/x", "cli", (), ("fps", "info.json|meta"))
    line = "vla-align: error: meta/info.json: fps must be > 0, got 0\n"
    assert classify(case, ctx, 2, line, before)[0] == "clean"
    assert classify(case, ctx, 2, "vla-align: error: fps must be > 0\n", before)[0] == "other"  # no info.json|meta
    assert classify(case, ctx, 2, "warning: slow\n" + line, before)[0] == "other"  # two lines
    assert classify(case, ctx, 1, "Traceback (most recent call last):\nZeroDivisionError\n", before)[0] == "traceback"
    assert classify(case, ctx, 0, "", before)[0] == "silent"
    assert classify(case, ctx, 3, line, before)[0] == "other"
    (tmp_path / "keep.txt").write_text("changed")
    assert classify(case, ctx, 2, line, before)[0] == "lost"
    (tmp_path / "keep.txt").unlink()
    assert classify(case, ctx, 2, line, before)[0] == "lost"


def test_a_recovery_must_say_so_and_keep_a_backup(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    (tmp_path / "metrics.json").write_text("{ damaged")
    before = snapshot(tmp_path)
    case = Case("run/x", "run", (), ("metrics.json",), recovers=True)
    (tmp_path / "metrics.json").write_text("{}")
    assert classify(case, ctx, 0, "note: metrics.json was damaged\n", before)[0] == "lost"  # no backup
    (tmp_path / "metrics.json.bak").write_text("{ damaged")
    assert classify(case, ctx, 0, "note: metrics.json was damaged; kept a copy\n", before)[0] == "clean"
    assert classify(case, ctx, 0, "", before)[0] == "silent"  # repaired without a word


def test_snapshot_does_not_follow_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x")
    (tmp_path / "a" / "loop").symlink_to("loop")
    (tmp_path / "up").symlink_to(".")
    snap = snapshot(tmp_path)
    assert snap.keys() == {"a/f", "a/loop", "up"} and snap["up"] == "link:."
