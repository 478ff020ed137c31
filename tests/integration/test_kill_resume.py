"""SIGKILL at chosen moments, then resume or re-run: the result is bitwise that of an uninterrupted run,
and no kill leaves a half-written file behind.

- ``train``: one run killed ten times (before the first checkpoint, between checkpoints, inside
  validation, inside checkpoint writing, right after a checkpoint, during start-up, in the last step),
  each time continued with ``--resume`` (or re-run when no checkpoint exists yet), against an
  uninterrupted run in the same directory: weights, training state, best weights, selection, config and
  the log (but for its throughput column) equal.
- ``data babyai``, ``eval``, ``report`` and ``pipeline`` killed midway, then re-run with the same command.

The moments are found by watching the run directory (the log, the checkpoint folder), never by a test
hook in the code. Every process is ``python -m vla_align`` from this checkout.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tests.synthetic import write_synthetic

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TIMING_KEYS = ("samples_per_s",)  # wall-clock throughput: the only logged value a kill may change
STEPS = 40
TRAIN_FLAGS = (
    "--preset", "tiny", "--train.steps", str(STEPS), "--train.log-every", "1", "--train.checkpoint-every", "8",
    "--train.select.every", "10", "--eval.batch-size", "4",
)  # fmt: skip


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "VLA_ALIGN_QUIET": "1", "XDG_CACHE_HOME": str(tmp / "cache")}


def cli(tmp: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """Run ``vla-align ARGS`` to the end; it must succeed."""
    cmd = [sys.executable, "-m", "vla_align", *args]
    proc = subprocess.run(cmd, env=_env(tmp), capture_output=True, text=True, timeout=timeout, cwd=tmp)
    assert proc.returncode == 0, f"vla-align {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@dataclass
class Launch:
    """A ``vla-align`` process started in the background (stderr to a file, so no pipe fills up)."""

    tmp: Path
    args: tuple[str, ...]
    proc: subprocess.Popen[bytes] = field(init=False)
    t0: float = field(init=False)

    def __post_init__(self) -> None:
        self.err = self.tmp / f"stderr-{time.monotonic_ns()}.txt"
        with self.err.open("wb") as err:
            cmd = [sys.executable, "-m", "vla_align", *self.args]
            self.proc = subprocess.Popen(cmd, env=_env(self.tmp), stdout=subprocess.DEVNULL, stderr=err, cwd=self.tmp)
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def cpu(self) -> float:
        """CPU seconds the process has used so far (robust to a busy machine, unlike wall time)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill_when(self, cond: Callable[[], bool], what: str, timeout: float = 240) -> bool:
        """SIGKILL as soon as ``cond()`` holds; False when the process ended first (it must have succeeded)."""
        while self.proc.poll() is None:
            if cond():
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                return True
            if self.elapsed() > timeout:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{what}: the moment did not come within {timeout} s")
            time.sleep(0.001)
        assert self.proc.returncode == 0, f"{what}: exited {self.proc.returncode}: {self.err.read_text()[-3000:]}"
        return False


def records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the throughput column; a last line cut short by a kill is skipped."""
    out = []
    lines = path.read_text().splitlines() if path.is_file() else []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            assert i == len(lines) - 1, f"{path}: line {i + 1} of {len(lines)} is not JSON"
            continue
        out.append({k: v for k, v in rec.items() if k not in TIMING_KEYS})
    return out


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def assert_whole(run: Path) -> None:
    """What a kill left is readable: JSON files parse, checkpoints load (the log may end in a torn line)."""
    for name in ("config.json", "fingerprint.json", "selection.json", "metrics.json"):
        if (run / name).is_file():
            json.loads((run / name).read_text())
    for f in run.glob("checkpoint/**/model.safetensors"):
        load_file(str(f))
    if (run / "checkpoint" / "train_state.pt").is_file():
        torch.load(run / "checkpoint" / "train_state.pt", weights_only=True)
    records(run / "metrics.jsonl")


def assert_states_equal(a: Path, b: Path) -> None:
    sa, sb = (torch.load(p, weights_only=True) for p in (a, b))

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and torch.equal(x, y), where
        elif isinstance(x, dict):
            assert isinstance(y, dict) and x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list | tuple):
            assert isinstance(y, list | tuple) and len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                walk(u, v, f"{where}.{i}")
        else:
            assert x == y, f"{where}: {x!r} != {y!r}"

    walk(sa, sb, a.name)


def assert_same_run(run: Path, ref: Path) -> None:
    """Bitwise the same training result: weights and best weights (bytes), training state (tensors),
    JSON files, and the log records but for the throughput column; then: no file left behind."""
    assert files(ref) <= files(run), f"missing: {sorted(files(ref) - files(run))}"
    for f in sorted(files(ref)):
        if f.endswith(".safetensors") or f.endswith(".json"):
            assert (run / f).read_bytes() == (ref / f).read_bytes(), f
    assert_states_equal(run / "checkpoint" / "train_state.pt", ref / "checkpoint" / "train_state.pt")
    assert records(run / "metrics.jsonl") == records(ref / "metrics.jsonl")
    extra = {f for f in files(run) - files(ref) if not f.endswith(".torn")}  # a torn log line is kept aside
    assert not extra, f"the results are equal, but the kills left files behind: {sorted(extra)}"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("kill")
    write_synthetic(tmp / "data", n_train=48, n_val=48, n_test=12)
    return tmp


class Watch:
    """What a training run has written: logged steps, validation records, checkpoint files in progress."""

    def __init__(self, run: Path, final: set[str]) -> None:
        self.run, self.final = run, final
        self._seen: tuple[object, tuple[set[int], set[int]]] = (None, (set(), set()))

    def logged(self) -> tuple[set[int], set[int]]:
        """(steps with a loss record, steps with a validation record); re-read only when the log changed."""
        path = self.run / "metrics.jsonl"
        try:
            st = path.stat()
            key: object = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            return set(), set()
        if key != self._seen[0]:
            loss: set[int] = set()
            val: set[int] = set()
            for rec in records(path):
                (val if "val/score" in rec else loss if "loss/total" in rec else set()).add(int(rec["step"]))
            self._seen = (key, (loss, val))
        return self._seen[1]

    def writing(self) -> set[str]:
        """Files under checkpoint/ that an uninterrupted run does not end with (a write in progress)."""
        ckpt = self.run / "checkpoint"
        return {f"checkpoint/{p}" for p in files(ckpt)} - self.final if ckpt.is_dir() else set()

    def state_mtime(self) -> int:
        p = self.run / "checkpoint" / "train_state.pt"
        return p.stat().st_mtime_ns if p.is_file() else 0


def _moments(w: Watch) -> list[tuple[str, Callable[[Launch], Callable[[], bool]]]]:
    """Ten kill moments, in the order they come; each makes, at launch time, the condition to kill on."""

    def at_step(step: int) -> Callable[[Launch], Callable[[], bool]]:
        return lambda _l: lambda: max(w.logged()[0], default=0) >= step

    def in_validation(step: int) -> Callable[[Launch], Callable[[], bool]]:
        def cond() -> bool:
            loss, val = w.logged()
            return step in loss and step not in val

        return lambda _l: cond

    def in_checkpoint_write(_l: Launch) -> Callable[[], bool]:
        stale = w.writing()
        return lambda: bool(w.writing() - stale)

    def after_checkpoint(_l: Launch) -> Callable[[], bool]:
        before = w.state_mtime()
        return lambda: w.state_mtime() != before

    def no_state_yet(_l: Launch) -> Callable[[], bool]:
        return lambda: max(w.logged()[0], default=0) >= 3 and not w.state_mtime()

    return [
        ("before the first checkpoint", no_state_yet),
        ("between checkpoints (step 11)", at_step(11)),
        ("inside validation (step 20)", in_validation(20)),
        ("inside checkpoint writing", in_checkpoint_write),
        ("right after a checkpoint", after_checkpoint),
        ("during start-up", lambda launch: lambda: launch.elapsed() > 0.5),
        ("inside validation (step 30)", in_validation(30)),
        ("inside checkpoint writing", in_checkpoint_write),
        ("between checkpoints (step 35)", at_step(35)),
        ("in the last step", at_step(STEPS)),
    ]


def test_train_killed_ten_times_resumes_bitwise(work: Path) -> None:
    data, run, ref = work / "data", work / "run", work / "ref"
    fresh = ("train", *TRAIN_FLAGS, "--data", str(data), "--out", str(run))
    cli(work, *fresh)  # the uninterrupted run, in the same directory as the killed one will be
    run.rename(ref)
    w = Watch(run, {f for f in files(ref) if f.startswith("checkpoint/")})
    hit: list[str] = []
    for what, make in _moments(w):
        resume = (run / "checkpoint" / "train_state.pt").is_file()
        launch = Launch(work, ("train", "--resume", str(run)) if resume else fresh)
        if not launch.kill_when(make(launch), what):
            break  # the run finished before this moment
        assert_whole(run)
        loss, val = w.logged()
        if what.startswith("inside validation"):
            step = int(what.split()[-1].rstrip(")"))
            hit += [what] if step in loss and step not in val else []
        elif what.startswith("inside checkpoint writing"):
            hit += [what] if w.writing() else []
        else:
            hit.append(what)
    if (run / "checkpoint" / "train_state.pt").is_file():
        cli(work, "train", "--resume", str(run))
    else:
        cli(work, *fresh)
    print(f"kills that landed where meant ({len(hit)}): {hit}")
    assert len(hit) >= 8, f"only {len(hit)} kills landed where meant: {hit}"
    assert any(h.startswith("inside validation") for h in hit), hit
    assert any(h.startswith("inside checkpoint writing") for h in hit), hit
    assert_same_run(run, ref)


def _kill_midway(work: Path, args: tuple[str, ...], reference_cpu: float, fraction: float = 0.5) -> None:
    """Kill once the process has used ``fraction`` of the CPU time the uninterrupted command took."""
    launch = Launch(work, args)
    killed = launch.kill_when(lambda: launch.cpu() > fraction * reference_cpu, " ".join(args[:2]))
    assert killed, f"vla-align {' '.join(args)} finished before the kill; nothing was tested"


def _cpu_of(work: Path, *args: str) -> float:
    """Run ``vla-align ARGS`` to the end; the CPU seconds it took."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli(work, *args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _partials(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_data_killed_midway_then_rerun(work: Path) -> None:
    out = work / "baby"
    args = ("data", "babyai", "--episodes", "200", "--val-episodes", "8", "--test-episodes", "8", "--image-size", "28")
    cli(work, *args, "--out", str(out))
    ref = {f: (out / f).read_bytes() for f in files(out)}
    shutil.rmtree(out)
    launch = Launch(work, (*args, "--out", str(out)))
    assert launch.kill_when(lambda: bool(_partials(work)), "data"), (
        "`data` finished before writing into a partial folder"
    )
    assert not out.exists(), "a killed `data` left a dataset that reads as whole"
    cli(work, *args, "--out", str(out))
    assert {f: (out / f).read_bytes() for f in files(out)} == ref
    assert not _partials(work), f"half-written folders left: {_partials(work)}"


@pytest.fixture(scope="module")
def policy_run(work: Path) -> Path:
    """A tiny policy run on BabyAI data (closed-loop evaluation makes eval / report take a while)."""
    data = work / "baby-eval"
    cli(work, "data", "babyai", "--episodes", "24", "--val-episodes", "4", "--test-episodes", "24", "--image-size", "28", "--out", str(data))  # fmt: skip
    run = work / "policy-run"
    cli(work, "train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--model.policy.enabled", "true", "--train.steps", "10")  # fmt: skip
    return run


GENERATED = re.compile(rb"Generated: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _outputs(run: Path) -> dict[str, bytes]:
    return {
        f: GENERATED.sub(b"Generated: -", (run / f).read_bytes()) for f in files(run) if not f.startswith("checkpoint/")
    }


@pytest.mark.parametrize("command", ["eval", "report"])
def test_eval_and_report_killed_midway_then_rerun(work: Path, policy_run: Path, command: str) -> None:
    pristine = work / f"{command}-pristine"
    shutil.copytree(policy_run, pristine)
    args = ("eval", "--run", str(policy_run), "--episodes", "8") if command == "eval" else ("report", "--run", str(policy_run), "--lang", "en")  # fmt: skip
    before = _outputs(policy_run)
    cpu = _cpu_of(work, *args)
    ref = _outputs(policy_run)
    assert ref != before, f"{command} wrote nothing"
    shutil.rmtree(policy_run)
    shutil.copytree(pristine, policy_run)
    _kill_midway(work, args, cpu)
    assert_whole(policy_run)
    assert {f: b for f, b in _outputs(policy_run).items() if f in before} == before, "a killed run changed files"
    cli(work, *args)
    assert _outputs(policy_run) == ref
    assert not _partials(policy_run) and not [f for f in files(policy_run) if f.endswith(".tmp")]


def test_pipeline_killed_in_training_resumes(work: Path) -> None:
    out = work / "pipe"
    args = ("pipeline", "--preset", "tiny", "--data", str(work / "data"), "--train.steps", "24", "--lang", "en", "--out", str(out))  # fmt: skip
    cli(work, *args)
    ref = work / "pipe-ref"
    out.rename(ref)
    launch = Launch(work, args)
    assert launch.kill_when(lambda: max(Watch(out, set()).logged()[0], default=0) >= 12, "pipeline")
    cli(work, *args)  # the same command again continues the interrupted run
    assert_same_run_outputs(out, ref)


def assert_same_run_outputs(run: Path, ref: Path) -> None:
    assert files(run) - files(ref) <= {f for f in files(run) if f.endswith(".torn")}, sorted(files(run) - files(ref))
    assert (run / "checkpoint/model.safetensors").read_bytes() == (ref / "checkpoint/model.safetensors").read_bytes()
    assert_states_equal(run / "checkpoint" / "train_state.pt", ref / "checkpoint" / "train_state.pt")
    assert records(run / "metrics.jsonl") == records(ref / "metrics.jsonl")
    assert json.loads((run / "metrics.json").read_text()) == json.loads((ref / "metrics.json").read_text())
    html = [GENERATED.sub(b"", (d / "report.html").read_bytes()) for d in (run, ref)]  # both made at run's path
    assert html[0] == html[1]
