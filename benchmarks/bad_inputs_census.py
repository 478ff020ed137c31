"""Census of the bad-inputs catalogue: run every case of ``tests/badinputs`` and count the outcomes.

Each case runs in a fresh directory (in process through ``vla_align.cli.main`` with stdout / stderr
captured, or as a subprocess where the case says so) and ends as one of: clean (exit 2, one line naming
the problem, nothing touched), traceback, silent (exit 0 on invalid input), lost (a pre-existing file
changed or vanished) or other (exit 2 without the key words, several lines, another exit code).

Prints a Markdown table of the counts per category and the list of cases that did not end clean.
The catalogue and fixtures come from this repository's ``tests/``; the code under test is whichever
``vla_align`` comes first on the path, so one checkout can measure another::

    .venv/bin/python benchmarks/bad_inputs_census.py                        # this tree
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/bad_inputs_census.py  # another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # after PYTHONPATH: the vla_align under test stays the first one found

from tests.badinputs.catalogue import CASES, CATEGORIES, build_fixtures  # noqa: E402
from tests.badinputs.harness import KINDS, Outcome, run_case  # noqa: E402


def _describe_code() -> str:
    import vla_align

    pkg = Path(vla_align.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(pkg), "log", "-1", "--format=%h %s"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(pkg), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "", ""
    state = f"commit {head[:60]}" + (" + uncommitted changes" if dirty else "") if head else "not a git checkout"
    return f"{pkg} ({state})"


def table(outcomes: list[Outcome]) -> str:
    rows = ["| category | cases | " + " | ".join(KINDS) + " |", "|---|---:|" + "---:|" * len(KINDS)]
    for cat in [*CATEGORIES, "all"]:
        got = [o for o in outcomes if cat in ("all", o.case.category)]
        if not got:
            continue
        n = Counter(o.kind for o in got)
        name = f"**{cat}**" if cat == "all" else cat
        rows.append(f"| {name} | {len(got)} | " + " | ".join(str(n[k]) for k in KINDS) + " |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose id contains this text")
    parser.add_argument("--json", help="also write every outcome to this JSON file")
    parser.add_argument("--base", help="work directory (default: a temporary one, removed afterwards)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args()
    cases = [c for c in CASES if args.only in c.id]
    if args.list:
        for c in cases:
            print(f"{c.id:60s} {c.why}")
        return 0
    base = Path(args.base) if args.base else Path(tempfile.mkdtemp(prefix="vla-bad-inputs-"))
    print(f"# bad-inputs census: {len(cases)} cases")
    print(f"code under test: {_describe_code()}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    t0 = time.perf_counter()
    build_fixtures(base)
    print(f"fixtures built in {time.perf_counter() - t0:.0f} s under {base}\n", flush=True)
    outcomes = []
    t1 = time.perf_counter()
    for i, case in enumerate(cases, 1):
        outcome = run_case(case, base)
        outcomes.append(outcome)
        print(f"[{i}/{len(cases)}] {outcome.kind:9s} {outcome.seconds:5.1f} s  {case.id}", file=sys.stderr, flush=True)
    print(table(outcomes))
    internal = sum(o.kind == "other" and o.returncode == 1 for o in outcomes)
    if internal:
        print(
            f"\n{internal} of the 'other' cases exit 1 (an unexpected exception reported in one line, not a traceback)"
        )
    bad = [o for o in outcomes if o.kind != "clean"]
    if bad:
        print(f"\n## {len(bad)} cases not clean\n")
        print("| case | outcome | what happened |\n|---|---|---|")
        for o in sorted(bad, key=lambda o: (KINDS.index(o.kind), o.case.id)):
            detail = o.detail.replace("|", "\\|").replace("\n", " ")[:240]
            print(f"| {o.case.id} | {o.kind} | {detail} |")
    print(f"\ncases ran in {time.perf_counter() - t1:.0f} s wall")
    if args.json:
        records = [
            {
                "id": o.case.id,
                "category": o.case.category,
                "kind": o.kind,
                "detail": o.detail,
                "exit": o.returncode,
                "seconds": o.seconds,
            }
            for o in outcomes
        ]
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    if not args.base:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
