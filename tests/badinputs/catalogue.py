"""The catalogue of bad inputs and faults (``CASES``) and the fixtures they start from.

Every case starts from small valid inputs built once by :func:`build_fixtures` (a discrete and a
continuous synthetic dataset, a BabyAI dataset, a trained ``tiny`` run with its evaluation, a ``tiny``
policy run on the BabyAI data), copies what it needs into its own directory, damages it, and runs one
``vla-align`` command line. The expected outcome is the same for all: exit code 2, no traceback, one line
on stderr with the case's keywords, and every file that existed before byte-identical afterwards.

Plain module (no pytest): ``tests/integration/test_bad_inputs.py`` asserts the outcome of every case,
``benchmarks/bad_inputs_census.py`` counts the outcomes for any version of the code.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections import Counter
from pathlib import Path

from .case import CATEGORIES, Case, Ctx
from .cases_config import config_cases
from .cases_dataset import dataset_cases
from .cases_lerobot import lerobot_cases
from .cases_run import run_cases

CASES: list[Case] = [*dataset_cases(), *lerobot_cases(), *config_cases(), *run_cases()]

CASE_DIR = "case"  # every case runs in BASE/case: the absolute paths inside the fixture runs stay true
PRISTINE_DIR = "pristine"

__all__ = ["CASES", "CATEGORIES", "Case", "Ctx", "build_fixtures", "counts"]


def counts() -> dict[str, int]:
    return dict(Counter(c.category for c in CASES))


def _cli(argv: list[str]) -> None:
    from vla_align.cli import main

    code = main(argv)
    if code != 0:
        raise RuntimeError(f"building a bad-inputs fixture failed: vla-align {' '.join(argv)} exited {code}")


def build_fixtures(base: Path) -> Path:
    """Build the valid inputs under ``base/case`` (their final case-time location, so that the dataset
    paths recorded in the runs are right), then move them to ``base/pristine``; returns that path.
    Reuses ``base/pristine`` when it is there. Takes ~20 s on 2 CPU cores."""
    pristine = base / PRISTINE_DIR
    if (pristine / "done").is_file():
        return pristine
    from tests.synthetic import write_synthetic

    work = base / CASE_DIR
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(pristine, ignore_errors=True)
    work.mkdir(parents=True)
    quiet = os.environ.get("VLA_ALIGN_QUIET")
    os.environ["VLA_ALIGN_QUIET"] = "1"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            write_synthetic(work / "data")
            write_synthetic(work / "cont", continuous=True)
            write_synthetic(work / "big", size=32)  # another image size
            write_synthetic(work / "alt", n_train=30, lengths=(4, 12))  # other episodes, same spec
            babyai = ["--episodes", "12", "--val-episodes", "4", "--test-episodes", "6", "--image-size", "28"]
            _cli(["data", "babyai", *babyai, "--out", str(work / "baby")])
            steps = ["--train.steps", "10", "--train.checkpoint-every", "5"]
            _cli(["train", "--preset", "tiny", "--data", str(work / "data"), "--out", str(work / "run"), *steps])
            _cli(["eval", "--run", str(work / "run")])
            policy = ["--model.policy.enabled", "true", "--train.steps", "4"]
            _cli(["train", "--preset", "tiny", "--data", str(work / "baby"), "--out", str(work / "polrun"), *policy])
    finally:
        if quiet is None:
            os.environ.pop("VLA_ALIGN_QUIET", None)
        else:
            os.environ["VLA_ALIGN_QUIET"] = quiet
    work.rename(pristine)
    (pristine / "done").write_text("fixtures complete\n")
    return pristine
