"""`vla-align report`: a tiny BabyAI policy run (train -> eval -> report) gives a self-contained report.html
with every section, failure panels rebuilt by replay, and a page that headless Chromium loads without
errors (the screenshot is kept under test-artifacts/)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("minigrid")

from vla_align.cli import main
from vla_align.report import write_report
from vla_align.sim.babyai.generate import generate_babyai
from vla_align.sim.base import EPISODES_FILE, read_episodes

SECTIONS = ("summary", "config", "curves", "retrieval", "sim", "health", "diagnostics", "failures", "notes")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    data = generate_babyai(root / "d", ["GoToLocal"], {"train": 24, "val": 4, "test": 12}, seed=7, image_size=28)
    run = root / "run"
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--train.steps", "20"]
    args += ["--model.policy.enabled", "true", "--model.policy.fusion", "film", "--model.policy.history", "2"]
    args += ["--train.select.every", "10", "--train.select.episodes", "4", "--loss.balancer.conflict-every", "10"]
    assert main(args) == 0
    assert main(["eval", "--run", str(run), "--episodes", "8"]) == 0
    assert main(["report", "--run", str(run)]) == 0
    return run


def _sections(html: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)"', html)


@pytest.mark.slow
def test_report_is_self_contained_with_every_section(run: Path) -> None:
    html = (run / "report.html").read_text(encoding="utf-8")
    assert _sections(html) == list(SECTIONS)
    assert '<html lang="zh-CN">' in html and "对齐健康报告" in html  # Chinese is the default
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from the network
    assert html.count('src="data:image/png;base64,') >= 8
    assert (run / "report.html").stat().st_size < 20 * 2**20
    for marker in ("AMat", "γ_VA", "CKA", "log N", "R@10"):
        assert marker in html, marker


@pytest.mark.slow
def test_eval_records_episodes_and_report_replays_the_failures(run: Path) -> None:
    episodes = read_episodes(run / EPISODES_FILE)
    assert len(episodes) == 8
    assert all(len(e.actions) == e.steps for e in episodes)
    failed = sum(not e.success for e in episodes)
    html = (run / "report.html").read_text(encoding="utf-8")
    panels = html.count('<div class="failure"')
    assert panels == min(6, failed)
    if panels:
        assert "first divergence" in html or "agreed with every action" in html
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["health/coherence/band_average"] <= 1.0
    for pair in ("image_text", "image_action", "text_action"):
        assert -1e-9 <= metrics[f"health/cka/{pair}"] <= 1.0 + 1e-9
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    val_mi = [r["val/health/mi_bound/image_text"] for r in history if "val/health/mi_bound/image_text" in r]
    assert len(val_mi) == 2  # checks at steps 10 and 20: the MI curve on the validation split


@pytest.mark.slow
def test_english_report_and_missing_dataset(run: Path, tmp_path: Path) -> None:
    out = write_report(run, lang="en", out=tmp_path / "en.html", data=tmp_path / "nowhere")
    html = out.read_text(encoding="utf-8")
    assert '<html lang="en">' in html and "Alignment health report" in html
    assert _sections(html) == list(SECTIONS)
    assert "not found" in html  # the skipped diagnostics are named, not silently missing


def test_report_on_a_directory_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--run", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.slow
def test_report_opens_in_headless_chromium_without_errors(run: Path) -> None:
    browser = _browser()
    if browser is None:
        if os.environ.get("VLA_ALIGN_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (make test installs it)")
    url = (run / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]
    dom = subprocess.run(
        [browser, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None
    attrs = dict(re.findall(r'([a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-ready") == "1"
    assert attrs.get("data-errors") == "0"
    assert attrs.get("data-sections", "").split(",") == list(SECTIONS)
    console_errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "rror" in line]
    assert not console_errors, console_errors
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    done = subprocess.run(
        [browser, *flags, "--window-size=1300,5000", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
    shutil.copy(run / "report.html", ARTIFACTS / "report.html")
