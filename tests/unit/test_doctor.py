"""``vla-align doctor``: versions, torch build, GPUs, threads, extras with the pip command that installs
them, a MuJoCo offscreen render in a subprocess and the report's browser; fast, and a failing check
never stops the others."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import torch

from vla_align import __version__, doctor
from vla_align.cli import main


def test_doctor_reports_every_check_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    assert main(["doctor"]) == 0
    took = time.perf_counter() - t0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"vla-align {__version__}"
    assert any(x.startswith("python 3.") for x in lines)
    build = (
        "CPU-only" if not torch.version.cuda and not torch.version.hip else ("CUDA" if torch.version.cuda else "ROCm")
    )
    assert any(x.startswith(f"torch {torch.__version__} ({build}") for x in lines), out
    assert any(x.startswith("gpu") for x in lines) and any(x.startswith("threads: torch uses") for x in lines)
    for extra in ("babyai", "metaworld", "text", "tensorboard", "wandb", "mlflow"):
        assert any(x.startswith(f"extra {extra} ") for x in lines), (extra, out)
    assert any(x.startswith("mujoco render: ") for x in lines) and any(x.startswith("report browser") for x in lines)
    assert "check failed" not in out
    assert took < 20, f"doctor took {took:.1f} s"  # about 3 s on an idle 2-core machine


def test_a_missing_extra_names_its_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = doctor.importlib.util.find_spec
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    lines = list(doctor.extras())
    assert "extra mlflow      missing (optional): pip install mlflow" in lines


def test_a_check_that_raises_is_reported_and_the_next_runs() -> None:
    def broken() -> Iterator[str]:
        yield "first line"
        raise RuntimeError("no driver\nsecond line")

    lines = list(doctor.report((("broken", broken), ("versions", doctor.versions))))
    assert lines[:2] == ["first line", "broken: check failed (RuntimeError: no driver)"]
    assert lines[2] == f"vla-align {__version__}"


@pytest.mark.skipif(doctor.importlib.util.find_spec("mujoco") is None, reason="mujoco not installed")
def test_a_render_backend_that_cannot_work_is_failed_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    (line,) = doctor.mujoco_render()
    assert line.startswith("mujoco render: FAILED with MUJOCO_GL=no-such-backend (from the environment): ")
    assert "no-such-backend" in line.split(": ", 2)[2]  # mujoco's own reason


def test_a_render_that_hangs_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.importlib.util, "find_spec", lambda name: object())

    def hang(*_a: object, **k: object) -> None:
        raise subprocess.TimeoutExpired("python", float(k["timeout"]))  # type: ignore[arg-type]

    monkeypatch.setattr(doctor.subprocess, "run", hang)
    (line,) = doctor.mujoco_render(timeout=3)
    assert line.startswith("mujoco render: FAILED") and "no answer within 3 s" in line


def test_no_browser_says_what_installs_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    (line,) = doctor.browser()
    assert line.startswith("report browser: none on PATH") and "apt-get install chromium" in line
