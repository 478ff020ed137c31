"""Run one catalogue case and classify what happened.

Outcomes, worst first:

- ``lost``: a file that existed before the command changed or vanished;
- ``traceback``: "Traceback" on stderr (in process: an exception escaped ``main``);
- ``silent``: exit code 0 on invalid input;
- ``other``: no traceback, but not exit 2 with exactly one stderr line holding every keyword (or a
  path the case forbids, e.g. a file a malicious pickle would create, exists afterwards; or a timeout);
- ``clean``: what every case must end as.

Only ``vla_align.cli.main`` is used (imported when a case runs), so the same harness measures any version
of the code that ``sys.path`` / ``PYTHONPATH`` puts first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from .case import Case, Ctx
from .catalogue import CASE_DIR, PRISTINE_DIR

KINDS = ("clean", "traceback", "silent", "lost", "other")
TIMEOUT_S = 180


@dataclass
class Outcome:
    case: Case
    kind: str
    detail: str
    returncode: int
    stderr: str
    seconds: float


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under ``root`` (symlinks by their target, never
    followed; directories are not entries)."""
    out: dict[str, str] = {}
    if not root.is_dir() or root.is_symlink():
        return out
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            rel = os.path.relpath(e.path, root)
            if e.is_symlink():
                out[rel] = "link:" + os.readlink(e.path)
            elif e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif e.is_file(follow_symlinks=False):
                with open(e.path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def prepare(case: Case, base: Path) -> Ctx:
    """A fresh ``base/case`` with a working directory ``cwd/`` and the case's inputs."""
    root = base / CASE_DIR
    if root.is_symlink() or root.is_file():
        root.unlink()
    shutil.rmtree(root, ignore_errors=True)
    (root / "cwd").mkdir(parents=True)
    ctx = Ctx(root, base / PRISTINE_DIR)
    case.setup(ctx)
    return ctx


class _Timeout(BaseException):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def _print_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """What Python prints for a warning, to the (captured) sys.stderr of the moment."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _default_warnings() -> None:
    """The warning filters and printer of a fresh ``python`` process (so a case's stderr does not depend
    on which warnings an earlier case showed, or on pytest recording them)."""
    warnings.showwarning = _print_warning
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)


def invoke_in_process(argv: list[str], cwd: Path, timeout: int = TIMEOUT_S) -> tuple[int, str, str]:
    """``vla_align.cli.main(argv)`` in ``cwd`` with stdout / stderr captured; an escaping exception is
    printed as Python would (a traceback, exit code 1)."""
    from vla_align.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_cwd = os.getcwd()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else 0
    use_alarm = hasattr(signal, "SIGALRM") and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    os.chdir(cwd)
    if use_alarm:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            _default_warnings()
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except _Timeout:
                code, _ = -1, err.write(f"harness: timed out after {timeout} s\n")
            except BaseException:
                traceback.print_exc()
                code = 1
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        os.chdir(old_cwd)
        torch = sys.modules.get("torch")
        if torch is not None and threads:
            torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


def _package_root() -> str:
    import vla_align

    return str(Path(vla_align.__file__).resolve().parent.parent)


def invoke_subprocess(
    argv: list[str], cwd: Path, memory_gb: float = 0.0, timeout: int = TIMEOUT_S
) -> tuple[int, str, str]:
    """``python -c 'main(argv)'`` with the same ``vla_align`` as this process, optionally under an
    address-space limit (a case that would allocate gigabytes fails there instead of here)."""
    path = os.pathsep.join([_package_root(), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "VLA_ALIGN_QUIET": "1"}
    code = "import sys; from vla_align.cli import main; sys.exit(main(sys.argv[1:]))"

    def limit() -> None:
        if memory_gb:
            cap = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit,
        )
    except subprocess.TimeoutExpired:
        return -1, "", f"harness: timed out after {timeout} s\n"
    return proc.returncode, proc.stdout, proc.stderr


def _has_line(case: Case, ctx: Ctx, lines: list[str]) -> str | None:
    """The first stderr line that holds every keyword (None when none does)."""
    wanted = case.expected(ctx)
    for line in lines:
        low = line.lower()
        if all(any(a.lower() in low for a in alts) for alts in wanted):
            return line
    return None


def classify(case: Case, ctx: Ctx, code: int, stderr: str, before: dict[str, str]) -> tuple[str, str]:
    after = snapshot(ctx.root)
    changed = sorted(p for p, h in before.items() if after.get(p) != h and p not in case.may_change)
    kept = set(after.values())
    backed_up = case.recovers and all(before[p] in kept for p in changed)
    if changed and not backed_up:
        gone = sum(p not in after for p in changed)
        return "lost", f"{len(changed)} pre-existing files changed ({gone} gone), e.g. {', '.join(changed[:3])}"
    written = sorted(p for p in after if p not in before and any(p.startswith(s + os.sep) for s in case.sealed))
    if written:
        return "lost", f"{len(written)} new files inside a dataset it reads, e.g. {', '.join(written[:3])}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if "Traceback" in stderr:
        return "traceback", last
    told = _has_line(case, ctx, lines)
    if code == 0 and case.recovers and told is not None:
        return "clean", f"recovered: {told}"
    if code == 0:
        return "silent", f"exit 0 on invalid input (stderr: {last!r})"
    created = [p for p in case.absent if os.path.lexists(ctx.root / p)]
    if created:
        return "other", f"created {', '.join(created)}"
    if code != 2:
        return "other", f"exit {code}: {last}"
    if len(lines) != 1:
        return "other", f"{len(lines)} lines on stderr: {' / '.join(lines)[:300]}"
    for alternatives in case.expected(ctx):
        if not any(a.lower() in lines[0].lower() for a in alternatives):
            return "other", f"message lacks {'|'.join(alternatives)!r}: {lines[0]}"
    return "clean", lines[0]


def run_case(case: Case, base: Path) -> Outcome:
    """Prepare, snapshot, run and classify one case (``base`` holds ``pristine/`` from build_fixtures)."""
    ctx = prepare(case, base)
    before = snapshot(ctx.root)
    argv = case.command(ctx)
    cwd = ctx.root / case.cwd
    t0 = time.perf_counter()
    saved = {k: os.environ.get(k) for k in ("VLA_ALIGN_QUIET", "XDG_CACHE_HOME")}
    # crash reports of the code under test go beside the case, not into the user's ~/.cache
    os.environ.update(VLA_ALIGN_QUIET="1", XDG_CACHE_HOME=str(base / "cache"))
    try:
        if case.subprocess:
            code, _out, err = invoke_subprocess(argv, cwd, case.memory_gb)
        else:
            code, _out, err = invoke_in_process(argv, cwd)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - t0
    kind, detail = classify(case, ctx, code, err, before)
    return Outcome(case, kind, detail, code, err, seconds)
