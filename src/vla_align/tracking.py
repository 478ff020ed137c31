"""Experiment tracking: every record training writes to ``metrics.jsonl`` also goes to TensorBoard,
to ``metrics.csv`` and, when asked, to Weights & Biases and MLflow (``train.log``).

``metrics.jsonl`` stays the record of the run: ``--resume`` truncates it to the checkpoint's step and
the report reads it. The other logs are views of it, fed the same keys at the same step:

* ``tensorboard/events.out.tfevents.1.train``: one scalar per key and record, written with
  tensorboard's own record writer and event protos (the bytes ``SummaryWriter.add_scalar`` writes:
  framing, CRCs, ``simple_value`` summaries). ``vla-align eval`` adds the final metrics at the run's
  last step in ``events.out.tfevents.2.eval`` (rewritten whole on each eval).
* ``metrics.csv``: see :class:`CsvLog`.
* ``wandb`` / ``mlflow`` (``train.log.report_to``): imported only when named; their run ids are kept in
  ``tracking.json`` so a ``--resume`` continues the same remote run.

Only scalars travel (numbers; the gradient-conflict histograms, lists, stay in metrics.jsonl alone).

Resume. Before training continues, the local views are rebuilt from the truncated metrics.jsonl: none
keeps a step the resumed run logs again, none misses a step a kill cut off after metrics.jsonl had it
(TensorBoard keeps the wall times it had for the steps that stay). A ``SummaryWriter`` with
``purge_step`` would leave the stale events on disk for each reader to discard (a plain walk of the
events, as ``event_file_loader`` or an export does, still sees them twice), start one more file per
resume under a time-and-host name, and buffer events for ``flush_secs``, so a kill loses the last
ones; hence one file under a fixed name, rewritten atomically on resume and then appended to, one
whole record per ``write``, so a resumed run holds the same files as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from . import atomic
from . import config as config_lib
from .config import out_of_range
from .errors import ConfigError, UserError

if TYPE_CHECKING:
    from .presets import RunConfig

TB_DIR = "tensorboard"
TB_TRAIN = "events.out.tfevents.1.train"  # names sort train first: readers load a folder's files in name order
TB_EVAL = "events.out.tfevents.2.eval"
CSV_FILE = "metrics.csv"
LOG_FILE = "metrics.jsonl"
IDS_FILE = "tracking.json"  # the wandb / mlflow run ids, so a --resume continues the same remote run
REPORTERS = ("wandb", "mlflow")


@dataclass
class LogConfig:
    tensorboard: Literal["auto", "on", "off"] = "auto"  # event files in RUN/tensorboard/ (auto: on if installed)
    csv: bool = True  # RUN/metrics.csv: one row per logged step, one column per scalar
    report_to: tuple[str, ...] = ()  # also send the scalars to wandb and/or mlflow (none = neither)

    def __post_init__(self) -> None:
        if self.tensorboard not in ("auto", "on", "off"):
            raise out_of_range("train.log.tensorboard", self.tensorboard, "auto, on or off")
        if not isinstance(self.csv, bool):
            raise out_of_range("train.log.csv", self.csv, "true or false")
        names = tuple(self.report_to)
        unknown = [n for n in names if n not in (*REPORTERS, "none")]
        if unknown or len(set(names)) != len(names) or ("none" in names and len(names) > 1):
            raise out_of_range("train.log.report_to", list(names), "some of wandb, mlflow, each once (or none)")
        self.report_to = () if names == ("none",) else names


# --- values ----------------------------------------------------------------------------------------


def scalars(record: Mapping[str, Any]) -> dict[str, float | int]:
    """The numbers of a log record, by key, without ``step`` (a bool counts as 0 / 1)."""
    out: dict[str, float | int] = {}
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, bool | int):
            out[key] = int(value)
        elif isinstance(value, float):
            out[key] = float(value)
    return out


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (blank or damaged lines skipped: training repairs those first)."""
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                out.append(record)
    return out


def _warn(message: str) -> None:
    print(f"vla-align: warning: {message}", file=sys.stderr)


def _remove_temporaries(folder: Path, name: str) -> None:
    """The temporary files of an atomic write of ``name`` that a kill interrupted."""
    if folder.is_dir():
        for stale in folder.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


# --- TensorBoard -------------------------------------------------------------------------------------


@dataclass
class _TensorBoard:
    """The pieces of the tensorboard package the event files are written and read with."""

    event: Any
    summary: Any
    record_writer: Any
    loader: Any


def _tensorboard() -> _TensorBoard | None:
    try:
        from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        return None
    return _TensorBoard(Event, Summary, RecordWriter, LegacyEventFileLoader)


def tensorboard_available() -> bool:
    return _tensorboard() is not None


def _frame(tb: _TensorBoard, event: Any) -> bytes:
    """One event as a TFRecord (length, masked CRCs), as tensorboard's writer frames it."""
    buf = io.BytesIO()
    tb.record_writer(buf).write(event.SerializeToString())
    return buf.getvalue()


def _header(tb: _TensorBoard, wall_time: float) -> bytes:
    return _frame(tb, tb.event(wall_time=wall_time, file_version="brain.Event:2"))


def _scalar_event(tb: _TensorBoard, step: int, values: Mapping[str, float | int], wall_time: float) -> bytes:
    summary = tb.summary(value=[tb.summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
    return _frame(tb, tb.event(wall_time=wall_time, step=step, summary=summary))


def _wall_times(tb: _TensorBoard, path: Path) -> dict[tuple[int, str], float]:
    """(step, first tag) -> wall time of each scalar event in an event file (a torn end is skipped)."""
    out: dict[tuple[int, str], float] = {}
    if path.is_file():
        with contextlib.suppress(Exception):  # a damaged file: its times are lost, its steps come back
            for event in tb.loader(str(path)).Load():
                if event.HasField("summary") and event.summary.value:
                    out.setdefault((int(event.step), event.summary.value[0].tag), float(event.wall_time))
    return out


class TensorBoardLog:
    """``tensorboard/events.out.tfevents.1.train``: rebuilt from the records on open, then appended to."""

    def __init__(self, path: Path, tb: _TensorBoard, records: Sequence[Mapping[str, Any]]) -> None:
        self.path, self.tb = path, tb
        walls = _wall_times(tb, path) if records else {}
        now = time.time()
        data = [_header(tb, min(walls.values(), default=now))]
        for record in records:
            values = scalars(record)
            if values:
                step = int(record["step"])
                data.append(_scalar_event(tb, step, values, walls.get((step, next(iter(values))), now)))
        _remove_temporaries(path.parent, path.name)
        atomic.write_bytes(path, b"".join(data))
        self.file: io.FileIO | None = open(path, "ab", buffering=0)  # noqa: SIM115 (held open across steps)

    def log(self, step: int, values: Mapping[str, float | int]) -> None:
        if self.file is not None and values:
            self.file.write(_scalar_event(self.tb, step, values, time.time()))  # one write: a kill never tears it

    def close(self, failed: bool = False) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def log_eval(run_dir: Path, values: Mapping[str, Any], step: int) -> bool:
    """Write the evaluation's scalars to ``tensorboard/events.out.tfevents.2.eval`` at ``step`` when the
    run logged its training to TensorBoard; False when it did not (or tensorboard is not installed).

    The file is rewritten whole (atomically) with every metric ``values`` holds, so a re-run eval never
    adds a second copy. Its events carry the wall time of the last training event (the checkpoint they
    measure), which also makes a repeated eval write the same bytes."""
    folder = run_dir / TB_DIR
    tb = _tensorboard()
    if tb is None or not (folder / TB_TRAIN).is_file():
        return False
    wall = max(_wall_times(tb, folder / TB_TRAIN).values(), default=time.time())
    _remove_temporaries(folder, TB_EVAL)
    ordered = scalars(dict(sorted(values.items())))  # as metrics.json has them, whatever order they came in
    atomic.write_bytes(folder / TB_EVAL, _header(tb, wall) + _scalar_event(tb, step, ordered, wall))
    return True


# --- CSV ---------------------------------------------------------------------------------------------


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else repr(float(value))  # repr: the shortest exact float


def _line(cells: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(cells)
    return buf.getvalue().encode("utf-8")


class CsvLog:
    """``metrics.csv``: a ``step`` column, then one column per scalar key in the order the keys first
    appeared; one row per logged step; an empty cell where a key was not logged at that step (pandas
    reads NaN, Excel a blank). ``pandas.read_csv("metrics.csv", index_col="step")`` is the whole log.

    Why this "wide" layout stays correct although keys come and go: a key that first appears late
    (validation, gradient-conflict cosines, the skipped-step count) widens the header, and the file is
    then rewritten whole, atomically (once per new key, a handful of times per run); records of one
    step (the loss record and the validation record of step 10) share a row, the last one, rewritten
    in place with one ``write``; every other record appends its row with one ``write``, so a kill
    leaves whole rows. On ``--resume`` the file is rebuilt from the truncated metrics.jsonl, so it never
    holds a step the resumed run logs again. Numbers are written exactly (Python's shortest repr).
    """

    def __init__(self, path: Path, records: Sequence[Mapping[str, Any]]) -> None:
        self.path = path
        self.columns: list[str] = []
        rows: dict[int, dict[str, float | int]] = {}
        for record in records:
            values = scalars(record)
            if values:
                self._add_columns(values)
                rows.setdefault(int(record["step"]), {}).update(values)
        self.last_step: int | None = None
        self.last_row: dict[str, float | int] = {}
        self.last_offset = self.size = 0
        self.file: io.FileIO | None = None
        _remove_temporaries(path.parent, path.name)
        path.unlink(missing_ok=True)
        if rows:
            lines = [_line(["step", *self.columns])]
            lines += [_line(self._cells(step, row)) for step, row in rows.items()]
            self.last_step = next(reversed(rows))
            self.last_row = rows[self.last_step]
            self._replace(b"".join(lines[:-1]), lines[-1])

    def _add_columns(self, values: Mapping[str, Any]) -> list[str]:
        new = [k for k in values if k not in self.columns]
        self.columns += new
        return new

    def _cells(self, step: int, row: Mapping[str, float | int]) -> list[str]:
        return [str(step), *(_cell(row.get(k)) for k in self.columns)]

    def _replace(self, head: bytes, last: bytes) -> None:
        """Write the file whole, atomically; ``last`` is its last row."""
        if self.file is not None:
            self.file.close()
        atomic.write_bytes(self.path, head + last)
        self.file = open(self.path, "r+b", buffering=0)  # noqa: SIM115 (held open across steps)
        self.last_offset, self.size = len(head), len(head) + len(last)

    def log(self, step: int, values: Mapping[str, float | int]) -> None:
        if not values:
            return
        same = step == self.last_step
        row = {**self.last_row, **values} if same else dict(values)
        offset = self.last_offset if same else self.size
        self.last_step, self.last_row = step, row
        if self._add_columns(values) or self.file is None:
            self._widen(offset, _line(self._cells(step, row)))
            return
        data = _line(self._cells(step, row))
        self.file.seek(offset)
        self.file.write(data)  # one write: a kill leaves the old row or the new one
        if offset + len(data) < self.size:
            self.file.truncate(offset + len(data))
        self.last_offset, self.size = offset, offset + len(data)

    def _widen(self, offset: int, last: bytes) -> None:
        """Rewrite the rows before ``offset`` under the current (wider) header, then ``last``."""
        old: list[list[str]] = []
        if self.file is not None:
            self.file.seek(0)
            old = list(csv.reader(io.StringIO(self.file.read(offset).decode("utf-8"))))[1:]
        width = 1 + len(self.columns)
        body = b"".join(_line(r + [""] * (width - len(r))) for r in old)
        self._replace(_line(["step", *self.columns]) + body, last)

    def close(self, failed: bool = False) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


# --- Weights & Biases, MLflow ------------------------------------------------------------------------


class Sink(Protocol):
    def log(self, step: int, values: Mapping[str, float | int]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


def import_reporter(name: str) -> Any:
    """The ``wandb`` / ``mlflow`` module; a ConfigError naming the install when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            f"--train.log.report-to names {name}, but {name} is not installed; pip install {name}, "
            f"or leave {name} out of --train.log.report-to"
        ) from None


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _flat(child, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def _mlflow_key(key: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces (``image_text|text_action`` does not)."""
    return re.sub(r"[^\w\-. /]", "_", key)


class Reporter:
    """A remote tracker: its first failure is reported once and turns it off (metrics.jsonl has it all)."""

    name = ""

    def __init__(self) -> None:
        self.broken = False
        self.id = ""

    def send(self, step: int, values: Mapping[str, float | int]) -> None:
        raise NotImplementedError

    def log(self, step: int, values: Mapping[str, float | int]) -> None:
        if self.broken or not values:
            return
        try:
            self.send(step, values)
        except Exception as exc:  # a tracking server's hiccup must not end a training run
            self.broken = True
            _warn(f"{self.name} logging failed at step {step} ({_first_line(exc)}); it is off for the rest of this run")

    def close(self, failed: bool = False) -> None:
        raise NotImplementedError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


class WandbReporter(Reporter):
    name = "wandb"

    def __init__(self, module: Any, run_dir: Path, config: dict[str, Any], run_id: str | None) -> None:
        super().__init__()
        project = os.environ.get("WANDB_PROJECT") or "vla-align"
        self.run = module.init(
            project=project, name=run_dir.name, dir=str(run_dir), config=config, id=run_id, resume="allow"
        )
        self.id = str(self.run.id)

    def send(self, step: int, values: Mapping[str, float | int]) -> None:
        self.run.log(dict(values), step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowReporter(Reporter):
    name = "mlflow"

    def __init__(self, module: Any, run_dir: Path, config: dict[str, Any], run_id: str | None) -> None:
        super().__init__()
        self.mlflow = module
        if run_id:  # a resumed run: the same MLflow run, whose parameters are already set
            active = module.start_run(run_id=run_id)
        else:
            active = module.start_run(run_name=run_dir.name, tags={"vla_align.run_dir": str(run_dir.resolve())})
            module.log_params({k: str(v)[:500] for k, v in _flat(config).items()})
        self.id = str(active.info.run_id)

    def send(self, step: int, values: Mapping[str, float | int]) -> None:
        self.mlflow.log_metrics({_mlflow_key(k): float(v) for k, v in values.items()}, step=step)

    def close(self, failed: bool = False) -> None:
        self.mlflow.end_run(status="FAILED" if failed else "FINISHED")


def _start_reporters(run_dir: Path, cfg: RunConfig, resume: bool) -> list[Reporter]:
    names = cfg.train.log.report_to
    if not names:
        return []
    ids: dict[str, Any] = {}
    if resume and (run_dir / IDS_FILE).is_file():
        with contextlib.suppress(ValueError, OSError):
            ids = json.loads((run_dir / IDS_FILE).read_text(encoding="utf-8"))
    ids = ids if isinstance(ids, dict) else {}
    config = config_lib.to_dict(cfg)
    out: list[Reporter] = []
    for name in names:
        kind = WandbReporter if name == "wandb" else MlflowReporter
        module = import_reporter(name)
        saved = ids.get(name)
        try:
            out.append(kind(module, run_dir, config, saved if isinstance(saved, str) else None))
        except Exception as exc:
            for started in out:
                started.close(failed=True)
            raise UserError(
                f"--train.log.report-to {name}: could not start the {name} run ({_first_line(exc)}); check its "
                f"settings (login, tracking URI), or leave {name} out of --train.log.report-to"
            ) from None
    _remove_temporaries(run_dir, IDS_FILE)
    atomic.write_json(run_dir / IDS_FILE, ids | {r.name: r.id for r in out})
    return out


# --- the tracker -------------------------------------------------------------------------------------


def check_config(cfg: LogConfig) -> None:
    """Before a run loads its data: the packages the logging settings need are there."""
    if cfg.tensorboard == "on" and not tensorboard_available():
        raise ConfigError(
            "--train.log.tensorboard is on, but tensorboard is not installed; pip install tensorboard, "
            "or pass --train.log.tensorboard off"
        )
    for name in cfg.report_to:
        import_reporter(name)


class Tracker:
    """Writes each record to ``metrics.jsonl`` (one line, flushed) and to every enabled view."""

    def __init__(self, run_dir: Path, cfg: RunConfig, resume: bool) -> None:
        log = cfg.train.log
        check_config(log)
        self.jsonl = (run_dir / LOG_FILE).open("a", encoding="utf-8")
        self.sinks: list[Sink] = []
        try:
            self.sinks += _local_views(run_dir, log, read_log(run_dir / LOG_FILE) if resume else None)
            self.sinks += _start_reporters(run_dir, cfg, resume)
        except BaseException:
            self.close(failed=True)
            raise

    def record(self, record: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        step, values = int(record["step"]), scalars(record)
        for sink in self.sinks:
            sink.log(step, values)

    def close(self, failed: bool = False) -> None:
        self.jsonl.close()
        for sink in self.sinks:
            sink.close(failed)
        self.sinks = []


def _local_views(run_dir: Path, log: LogConfig, records: list[dict[str, Any]] | None) -> list[Sink]:
    """TensorBoard and CSV views of ``records`` (None: a fresh run, whose old views are removed). On a
    resume a view that is off now but on disk is rebuilt too, so it holds no step past the checkpoint."""
    tb_path, csv_path = run_dir / TB_DIR / TB_TRAIN, run_dir / CSV_FILE
    if records is None:
        for path in (tb_path, run_dir / TB_DIR / TB_EVAL, csv_path):
            path.unlink(missing_ok=True)
    views: list[Sink] = []
    tb = _tensorboard() if log.tensorboard != "off" or tb_path.is_file() else None
    if tb is None and log.tensorboard == "auto":
        _warn("tensorboard is not installed: no TensorBoard log (pip install tensorboard to get one)")
    if tb is not None:
        views.append(TensorBoardLog(tb_path, tb, records or []))
        if log.tensorboard == "off":  # brought in line with metrics.jsonl, then left alone
            views.pop().close()
    if log.csv or csv_path.is_file():
        views.append(CsvLog(csv_path, records or []))
        if not log.csv:
            views.pop().close()
    return views


@contextlib.contextmanager
def open_log(run_dir: Path, cfg: RunConfig, resume: bool) -> Iterator[Tracker]:
    """The training log of ``run_dir``; ``resume``: rebuild the views from the (truncated) metrics.jsonl."""
    tracker = Tracker(run_dir, cfg, resume)
    failed = True
    try:
        yield tracker
        failed = False
    finally:
        tracker.close(failed)
