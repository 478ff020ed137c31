"""The tracking views on their own: metrics.csv and the TensorBoard event file against the records they
are fed, the wandb / mlflow hooks through fake modules, the logging settings and their errors."""

from __future__ import annotations

import csv
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vla_align import tracking
from vla_align.config import from_dict
from vla_align.errors import ConfigError, UserError
from vla_align.presets import get_preset
from vla_align.tracking import CsvLog, LogConfig, TensorBoardLog, Tracker

RECORDS: list[dict[str, Any]] = [
    {"step": 1, "conflict/cos/a|b": 0.25, "conflict/hist/a|b": [1, 2, 3]},
    {"step": 2, "loss/total": 3.5, "lr": 1e-3, "samples_per_s": 812.0},
    {"step": 4, "loss/total": 2.25, "lr": 9.9e-4, "samples_per_s": 790.5},
    {"step": 4, "val/score": 0.5, "val/best_step": 4.0},
    {"step": 5, "train/skipped_steps": 1, "train/bad_steps_in_a_row": 1},
    {"step": 6, "loss/total": 1.0 / 3.0, "lr": 9.5e-4, "samples_per_s": float("nan"), "train/skipped_steps": 1},
    {"step": 8, "loss/total": 0.1 + 0.2, "lr": 9e-4, "samples_per_s": 801.0},
    {"step": 8, "val/score": 0.75, "val/best_step": 8.0},
]


def expected_points(records: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for r in records:
        for k, v in r.items():
            if k != "step" and isinstance(v, int | float):
                assert (k, r["step"]) not in out
                out[(k, r["step"])] = float(v)
    return out


def csv_points(path: Path) -> dict[tuple[str, int], float]:
    """(key, step) -> value of every filled cell; each step has one row."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)), f"steps repeat or go back: {steps}"
    return {(k, int(r["step"])): float(v) for r in rows for k, v in r.items() if k != "step" and v != ""}


def tb_points(path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """(tag, step) -> (value, wall time) of every scalar in an event file, read with tensorboard's
    own loader; no (tag, step) twice."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out: dict[tuple[str, int], tuple[float, float]] = {}
    for event in LegacyEventFileLoader(str(path)).Load():
        for value in event.summary.value:
            key = (value.tag, int(event.step))
            assert key not in out, f"{key} twice in {path}"
            out[key] = (value.simple_value, event.wall_time)
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_points_equal(got: dict[tuple[str, int], float], want: dict[tuple[str, int], float]) -> None:
    assert got.keys() == want.keys()
    assert all(same(got[k], want[k]) for k in want), {k: (got[k], want[k]) for k in want if not same(got[k], want[k])}


def f32(points: dict[tuple[str, int], float]) -> dict[tuple[str, int], float]:
    return {k: float(np.float32(v)) for k, v in points.items()}


# --- metrics.csv -----------------------------------------------------------------------------------


def test_csv_holds_every_scalar_one_row_per_step_columns_in_order_of_appearance(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "metrics.csv", [])
    assert not (tmp_path / "metrics.csv").exists()  # nothing logged, no file (pandas cannot read a blank one)
    for r in RECORDS:
        log.log(r["step"], tracking.scalars(r))
    log.close()
    assert_points_equal(csv_points(tmp_path / "metrics.csv"), expected_points(RECORDS))
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["step", "conflict/cos/a|b", "loss/total"] and header[-1] == "train/bad_steps_in_a_row"
    assert "conflict/hist/a|b" not in header  # lists are not scalars
    text = (tmp_path / "metrics.csv").read_text()
    assert "0.30000000000000004" in text and "0.3333333333333333" in text  # exact floats
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(tmp_path / "metrics.csv", index_col="step")
    assert list(frame.index) == [1, 2, 4, 5, 6, 8] and frame.loc[8, "val/score"] == 0.75


@pytest.mark.parametrize("cut", range(len(RECORDS) + 1))
def test_csv_rebuilt_from_a_prefix_then_appended_equals_the_whole(tmp_path: Path, cut: int) -> None:
    """What a resume does (rebuild from the records kept, then log the rest) gives the same bytes as
    one uninterrupted log, wherever the cut falls (a new key, a shared step)."""
    whole = CsvLog(tmp_path / "whole.csv", RECORDS)
    whole.close()
    part = CsvLog(tmp_path / "part.csv", RECORDS[:cut])
    for r in RECORDS[cut:]:
        part.log(r["step"], tracking.scalars(r))
    part.close()
    assert (tmp_path / "part.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_csv_rebuild_drops_stale_rows_and_temporaries(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    CsvLog(path, RECORDS).close()
    (tmp_path / ".metrics.csv.abc123.tmp").write_text("half")
    with path.open("ab") as f:
        f.write(b"9,1.2")  # a row a crash cut short
    CsvLog(path, RECORDS[:3]).close()
    assert_points_equal(csv_points(path), expected_points(RECORDS[:3]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


# --- TensorBoard -----------------------------------------------------------------------------------


def test_tensorboard_log_holds_every_scalar_and_a_resume_keeps_wall_times(tmp_path: Path) -> None:
    tb = tracking._tensorboard()
    assert tb is not None
    path = tmp_path / "tensorboard" / tracking.TB_TRAIN
    log = TensorBoardLog(path, tb, [])
    for r in RECORDS:
        log.log(r["step"], tracking.scalars(r))
    log.close()
    first = tb_points(path)
    assert_points_equal({k: v for k, (v, _) in first.items()}, f32(expected_points(RECORDS)))
    with path.open("ab") as f:
        f.write(tracking._scalar_event(tb, 9, {"loss/total": 1.0}, 0.0)[:-7])  # a record torn by a kill
    TensorBoardLog(path, tb, RECORDS[:4]).close()  # resume from step 4
    kept = tb_points(path)
    assert kept == {k: v for k, v in first.items() if k[1] <= 4}  # values and wall times


def test_tensorboard_event_accumulator_reads_the_file(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tracking._tensorboard()
    assert tb is not None
    TensorBoardLog(tmp_path / tracking.TB_TRAIN, tb, RECORDS).close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    want = f32(expected_points(RECORDS))
    assert set(acc.Tags()["scalars"]) == {k for k, _ in want}
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert_points_equal(got, want)


# --- settings --------------------------------------------------------------------------------------


def test_log_config_validation() -> None:
    assert LogConfig().tensorboard == "auto" and LogConfig().csv and LogConfig().report_to == ()
    assert LogConfig(report_to=("none",)).report_to == ()
    assert LogConfig(report_to=("mlflow", "wandb")).report_to == ("mlflow", "wandb")
    for bad in (("slack",), ("wandb", "wandb"), ("none", "wandb")):
        with pytest.raises(ConfigError, match=r"--train\.log\.report-to"):
            LogConfig(report_to=bad)
    with pytest.raises(ConfigError, match=r"--train\.log\.tensorboard"):
        LogConfig(tensorboard="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'auto', 'on', 'off'"):
        from_dict(LogConfig, {"tensorboard": True})
    assert from_dict(LogConfig, {"report_to": ["wandb"]}).report_to == ("wandb",)


def test_logging_settings_may_change_on_resume() -> None:
    from vla_align.checkpoint import _overridable

    assert _overridable("train.log.report_to") and _overridable("train.log.tensorboard")
    assert _overridable("train.log.csv") and not _overridable("train.lr")


def test_missing_packages_name_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("wandb", "mlflow"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
        with pytest.raises(ConfigError, match=f"pip install {name}") as err:
            tracking.check_config(LogConfig(report_to=(name,)))
        assert "\n" not in str(err.value)
    monkeypatch.setattr(tracking, "_tensorboard", lambda: None)
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        tracking.check_config(LogConfig(tensorboard="on"))
    tracking.check_config(LogConfig(tensorboard="auto"))  # a warning when training starts, not an error


# --- wandb / mlflow through fake modules -------------------------------------------------------------


class FakeWandb(types.ModuleType):
    """What the hook uses of ``wandb``: init(...) -> run with id, log(values, step=), finish(exit_code=)."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits: list[dict[str, Any]] = []
        self.logged: list[tuple[int, dict[str, Any]]] = []
        self.finished: list[int] = []

    def init(self, **kwargs: Any) -> Any:
        self.inits.append(kwargs)
        fake = self
        run_id = kwargs.get("id") or f"wb{len(self.inits)}"

        class Run:
            id = run_id

            def log(self, values: dict[str, Any], step: int) -> None:
                fake.logged.append((step, values))

            def finish(self, exit_code: int = 0) -> None:
                fake.finished.append(exit_code)

        return Run()


class FakeMlflow(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("mlflow")
        self.starts: list[dict[str, Any]] = []
        self.params: dict[str, str] = {}
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.ended: list[str] = []

    def start_run(self, **kwargs: Any) -> Any:
        self.starts.append(kwargs)
        run_id = kwargs.get("run_id") or f"ml{len(self.starts)}"
        return types.SimpleNamespace(info=types.SimpleNamespace(run_id=run_id))

    def log_params(self, params: dict[str, str]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logged.append((step, metrics))

    def end_run(self, status: str = "FINISHED") -> None:
        self.ended.append(status)


def test_wandb_and_mlflow_get_the_run_the_config_and_every_scalar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb, mlflow = FakeWandb(), FakeMlflow()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    cfg = get_preset("tiny")
    cfg.train.log = LogConfig(tensorboard="off", csv=False, report_to=("wandb", "mlflow"))
    run = tmp_path / "my-run"
    run.mkdir()
    with tracking.open_log(run, cfg, resume=False) as log:
        for r in RECORDS:
            log.record(r)
    (init,) = wandb.inits
    assert init["name"] == "my-run" and init["dir"] == str(run) and init["id"] is None
    assert init["config"]["train"]["steps"] == cfg.train.steps and init["config"]["train"]["log"]["report_to"] == [
        "wandb",
        "mlflow",
    ]
    want = expected_points(RECORDS)
    assert_points_equal({(k, s): float(v) for s, vals in wandb.logged for k, v in vals.items()}, want)
    assert [s for s, _ in wandb.logged] == [r["step"] for r in RECORDS]
    assert wandb.finished == [0]
    assert mlflow.starts[0]["run_name"] == "my-run" and mlflow.params["train.steps"] == str(cfg.train.steps)
    got = {(k, s): v for s, vals in mlflow.logged for k, v in vals.items()}
    assert_points_equal(got, {(tracking._mlflow_key(k), s): v for (k, s), v in want.items()})  # MLflow's charset
    assert mlflow.ended == ["FINISHED"]
    assert not list(run.glob("*.csv")) and not (run / "tensorboard").exists()

    with pytest.raises(KeyboardInterrupt), tracking.open_log(run, cfg, resume=True) as log:  # --resume
        log.record(RECORDS[0])
        raise KeyboardInterrupt
    assert wandb.inits[1]["id"] == "wb1" and wandb.inits[1]["resume"] == "allow" and wandb.finished == [0, 1]
    assert mlflow.starts[1] == {"run_id": "ml1"} and mlflow.ended == ["FINISHED", "FAILED"]


def test_a_failing_tracking_server_warns_once_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mlflow = FakeMlflow()

    def down(metrics: dict[str, float], step: int) -> None:
        raise ConnectionError("tracking server unreachable\nmore")

    mlflow.log_metrics = down  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    cfg = get_preset("tiny")
    cfg.train.log = LogConfig(report_to=("mlflow",))
    with tracking.open_log(tmp_path, cfg, resume=False) as log:
        for r in RECORDS:
            log.record(r)
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert err == [
        "vla-align: warning: mlflow logging failed at step 1 (tracking server unreachable); "
        "it is off for the rest of this run"
    ]
    assert len(tracking.read_log(tmp_path / "metrics.jsonl")) == len(RECORDS)
    assert_points_equal(csv_points(tmp_path / "metrics.csv"), expected_points(RECORDS))


def test_a_tracker_that_cannot_start_is_one_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = FakeWandb()

    def refuse(**kwargs: Any) -> Any:
        raise RuntimeError("api key not configured (no-tty)")

    wandb.init = refuse  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    cfg = get_preset("tiny")
    cfg.train.log = LogConfig(report_to=("wandb",))
    with pytest.raises(UserError, match=r"--train.log.report-to wandb: could not start .*api key"):
        Tracker(tmp_path, cfg, resume=False)
