"""``--device auto|cpu|cuda`` of eval, report and pipeline: the device is resolved once (a GPU asked for
on a machine without one is one line, exit 2), inference runs in bf16 autocast on CUDA and in plain
float32 on the CPU (bit-identical to no autocast at all), and every model output that becomes numpy
survives a bf16 autocast (checked here with the CPU's bf16 autocast standing in for CUDA's)."""

from __future__ import annotations

import argparse
import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.synthetic import write_synthetic

from vla_align import cli
from vla_align.cli import main
from vla_align.data.lerobot import read_dataset
from vla_align.errors import UserError
from vla_align.evaluate import EvalConfig, evaluate_retrieval
from vla_align.runs import load_model
from vla_align.sim import base as sim_base
from vla_align.train import resolve_device


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLA_ALIGN_QUIET", "1")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture(scope="module")
def policy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny continuous run with a flow policy: retrieval, trajectories and the report's health."""
    tmp = tmp_path_factory.mktemp("device")
    data = write_synthetic(tmp / "d", continuous=True, lengths=(6, 12))
    run = tmp / "run"
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--train.steps", "6"]
    args += ["--model.policy.enabled", "true", "--model.policy.chunk", "4", "--model.policy.head.name", "flow"]
    with pytest.MonkeyPatch.context() as m:
        m.setenv("VLA_ALIGN_QUIET", "1")
        assert main(args) == 0
    return run


def test_auto_and_cpu_resolve_to_the_cpu_without_a_gpu(no_gpu: None) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_one_clear_line(no_gpu: None, name: str) -> None:
    with pytest.raises(UserError) as exc:
        resolve_device(name, "--device")
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"--device {name}: no CUDA GPU is visible") and "cpu" in message


def test_auto_picks_cuda_when_a_gpu_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(UserError, match="only 1 CUDA GPU"):
        resolve_device("cuda:3")
    with pytest.raises(UserError, match="unsupported device"):
        resolve_device("meta")


def test_the_autocast_is_bf16_on_cuda_and_none_on_the_cpu() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU-only torch warns that it disables a CUDA autocast
        on_gpu = sim_base.inference_autocast(torch.device("cuda"))
    assert isinstance(on_gpu, torch.autocast)
    assert on_gpu.device == "cuda" and on_gpu.fast_dtype == torch.bfloat16
    on_cpu = sim_base.inference_autocast("cpu")
    assert isinstance(on_cpu, contextlib.nullcontext)
    with on_cpu:
        assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")


def test_cpu_results_are_those_without_any_autocast(policy_run: Path) -> None:
    model, _ = load_model(policy_run, "cpu")
    table = read_dataset(json.loads((policy_run / "config.json").read_text())["dataset"]["path"], split="test")
    plain = evaluate_retrieval(model, table, EvalConfig())
    with sim_base.inference_autocast(torch.device("cpu")):
        assert evaluate_retrieval(model, table, EvalConfig()) == plain


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["eval", "report"])
def test_device_cuda_without_a_gpu_exits_2(
    no_gpu: None, policy_run: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (policy_run / "metrics.json").read_bytes() if (policy_run / "metrics.json").is_file() else None
    assert main([command, "--run", str(policy_run), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU is visible" in _one_line(capsys.readouterr().err)
    after = (policy_run / "metrics.json").read_bytes() if (policy_run / "metrics.json").is_file() else None
    assert after == before and not (policy_run / "report.html").exists()


def test_device_cpu_evaluates_exactly_like_the_default(policy_run: Path, tmp_path: Path) -> None:
    assert main(["eval", "--run", str(policy_run), "--device", "cpu"]) == 0
    on_cpu = json.loads((policy_run / "metrics.json").read_text())
    assert main(["eval", "--run", str(policy_run)]) == 0  # auto: the CPU here
    assert json.loads((policy_run / "metrics.json").read_text()) == on_cpu
    assert on_cpu["traj/samples"] > 0 and 0.0 <= on_cpu["retrieval/image_to_text/R@1"] <= 1.0
    assert main(["report", "--run", str(policy_run), "--device", "cpu", "--out", str(tmp_path / "r.html")]) == 0


@contextlib.contextmanager
def _cpu_bf16(_device: Any) -> Iterator[None]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield


def test_outputs_reach_numpy_under_a_bf16_autocast(
    policy_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What CUDA's bf16 autocast does to dtypes, with the CPU's: evaluation and report still complete."""
    monkeypatch.setattr(sim_base, "inference_autocast", _cpu_bf16)
    out = tmp_path / "run"
    import shutil

    shutil.copytree(policy_run, out)
    assert main(["eval", "--run", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(v == v for v in metrics.values() if isinstance(v, float))  # no NaN
    assert main(["report", "--run", str(out), "--device", "cpu", "--lang", "en"]) == 0
    assert (out / "report.html").stat().st_size > 0


def test_pipeline_evaluates_on_device_else_on_train_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, Any]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine (nothing runs on it)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr("vla_align.train.train", lambda *a, **k: None)
    monkeypatch.setattr(cli, "cmd_eval", lambda args: seen.append(("eval", args.device)) or {})
    monkeypatch.setattr(cli, "cmd_report", lambda args: seen.append(("report", args.device)) or tmp_path / "r.html")
    data = write_synthetic(tmp_path / "d")
    cfg = cli._run_config(argparse.Namespace(preset="tiny", config=None, data=str(data)))
    cfg.train.device = "cpu"
    for given, expected in ((None, "cpu"), ("cuda", "cuda")):
        seen.clear()
        args = argparse.Namespace(data=str(data), lang="en", device=given)
        cli._pipeline(args, cfg, tmp_path / f"run-{given}")
        assert seen == [("eval", expected), ("report", expected)]


def test_a_spawned_worker_rebuilds_the_model_on_its_device(policy_run: Path) -> None:
    model, _ = load_model(policy_run, "cpu")
    parts = sim_base.model_parts(model)
    assert parts["device"] == "cpu"
    again = sim_base.rebuild_model(**parts)
    assert next(again.parameters()).device == torch.device("cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_pipeline_device_cuda_without_a_gpu_stops_before_any_work(
    no_gpu: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "d")
    out = tmp_path / "run"
    assert main(["pipeline", "--preset", "tiny", "--data", str(data), "--out", str(out), "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA GPU is visible" in _one_line(capsys.readouterr().err)
    assert not out.exists()
