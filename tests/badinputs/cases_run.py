"""Damaged runs and checkpoints, eval / report / resume flags, the command line itself, and the filesystem
(where --out points)."""

from __future__ import annotations

import builtins
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .case import Case, Ctx
from .damage import edit_json, garbage, set_key, symlink_loop, truncate

EVAL = ("eval", "--run", "{run}")
REPORT = ("report", "--run", "{run}", "--lang", "en")
RESUME = ("train", "--resume", "{run}")
MODEL = "checkpoint/model.safetensors"
STATE = "checkpoint/train_state.pt"
# Short pipelines and data generation: a problem must stop them first; if not, the case stays cheap.
PIPELINE = ("pipeline", "--preset", "tiny", "--data", "{data}", "--train.steps", "2", "--lang", "en")
DATA = ("data", "babyai", "--episodes", "4", "--val-episodes", "2", "--test-episodes", "2", "--image-size", "28")
TRAIN = ("train", "--preset", "tiny", "--data", "{data}", "--train.steps", "2")


def _on(
    category: str,
    id: str,
    argv: tuple[str, ...],
    keywords: tuple[str, ...],
    damage: Callable[[Path], object] | None = None,
    fixture: str = "run",
    why: str = "",
    also: tuple[str, ...] = (),
    then: Callable[[Ctx], object] | None = None,
    **kwargs: Any,
) -> Case:
    """A case on a copy of ``fixture`` (``{run}``) and of the fixtures in ``also``, damaged by
    ``damage(run_dir)`` and then by ``then(ctx)``."""

    def setup(ctx: Ctx) -> None:
        path = ctx.use(fixture, *also)
        ctx.values["run"] = str(path)
        if damage is not None:
            damage(path)
        if then is not None:
            then(ctx)

    return Case(f"{category}/{id}", category, argv, keywords, setup, why, **kwargs)


def _remove(rel: str) -> Callable[[Path], object]:
    def go(run: Path) -> None:
        p = run / rel
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

    return go


def _write(rel: str, data: str | bytes) -> Callable[[Path], object]:
    def go(run: Path) -> None:
        (run / rel).write_bytes(data.encode() if isinstance(data, str) else data)

    return go


def _make_dir(rel: str) -> Callable[[Path], object]:
    def go(run: Path) -> None:
        _remove(rel)(run)
        (run / rel).mkdir()

    return go


def _set(rel: str, dotted: str, value: object) -> Callable[[Path], object]:
    return lambda run: set_key(run / rel, dotted, value)


def _run_cases() -> list[Case]:
    c, mj = "config.json", ("metrics.json",)
    mismatch = "action|image|shape|trained on|match"  # what differs, or that it is not the run's dataset

    def r(id: str, argv: tuple[str, ...], keywords: tuple[str, ...], damage: Any = None, **kw: Any) -> Case:
        return _on("run", id, argv, keywords, damage, **kw)

    def torn_jsonl(run: Path) -> None:
        lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
        lines[1] = lines[1][: len(lines[1]) // 2] + "\n"
        (run / "metrics.jsonl").write_text("".join(lines))

    def del_dataset_key(key: str) -> Callable[[Path], object]:
        return lambda run: edit_json(run / c, lambda d: d["dataset"].pop(key) and None)

    return [
        r("config-missing", EVAL, (c,), _remove(c)),
        r("config-not-json", EVAL, (c,), _write(c, "{ nope")),
        r("config-truncated", EVAL, (c,), lambda run: truncate(run / c)),
        r("config-empty", EVAL, (c,), _write(c, "")),
        r("config-a-list", EVAL, (c,), _write(c, "[1, 2]"), why="a JSON list where a mapping belongs"),
        r("config-a-directory", EVAL, (c,), _make_dir(c)),
        r("config-symlink-loop", EVAL, ("symlink|loop",), lambda run: symlink_loop(run / c)),
        r("config-no-dataset", EVAL, ("dataset",), lambda run: edit_json(run / c, lambda d: d.pop("dataset") and None)),
        r("config-dataset-no-info", EVAL, ("info",), del_dataset_key("info")),
        r("config-dataset-a-string", EVAL, ("dataset",), _set(c, "dataset", "data")),
        r("config-action-kind-bogus", EVAL, ("kind",), _set(c, "dataset/info/action_spec/kind", "analog")),
        r("config-embed-dim-edited", EVAL, ("model.safetensors|embed_dim",), _set(c, "model/embed_dim", 64)),
        r("config-lr-a-string", EVAL, ("lr",), _set(c, "train/lr", "fast")),
        r("config-unknown-key", EVAL, ("modle",), _set(c, "modle", {})),
        r("config-unknown-key-report", REPORT, ("modle",), _set(c, "modle", {})),
        r("metrics-not-json", EVAL, mj, _write(mj[0], "{ nope"), why="finding 9: crash after eval", recovers=True),
        r("metrics-a-list", EVAL, mj, _write(mj[0], "[1]"), recovers=True),
        r("metrics-a-directory", EVAL, mj, _make_dir(mj[0]), recovers=True),
        r("metrics-not-json-report", REPORT, mj, _write(mj[0], "{ nope"), recovers=True),
        r("jsonl-torn-middle-report", REPORT, ("metrics.jsonl",), torn_jsonl, why="finding 9: a torn line"),
        r("jsonl-torn-middle-resume", RESUME, ("metrics.jsonl",), torn_jsonl, why="finding 9: a torn line"),
        r(
            "jsonl-a-number-line-report",
            REPORT,
            ("metrics.jsonl",),
            _write("metrics.jsonl", '{"step": 5}\n7\n'),
            may_change=("run/metrics.json",),  # a report that accepts the log adds its health keys
        ),
        r("eval-split-nosuch", (*EVAL, "--split", "nosuch"), ("nosuch",), why="finding 6"),
        r("eval-split-empty", (*EVAL, "--split", ""), ("split",)),
        r(
            "eval-max-episodes-negative",
            (*EVAL, "--max-episodes", "-1"),
            ("max-episodes|max_episodes",),
            why="finding 6",
        ),
        r("eval-max-episodes-text", (*EVAL, "--max-episodes", "all"), ("--max-episodes",)),
        r("eval-episodes-negative", (*EVAL, "--episodes", "-5"), ("episodes",), fixture="polrun", why="finding 6"),
        r("eval-episodes-without-policy", (*EVAL, "--episodes", "3"), ("policy",)),
        r(
            "eval-data-other-action-kind",
            (*EVAL, "--data", "{cont}"),
            ("{cont}", mismatch),
            also=("cont",),
            why="finding 9",
        ),
        r(
            "eval-data-other-action-count",
            (*EVAL, "--data", "{baby}"),
            ("{baby}", mismatch),
            also=("baby",),
            why="finding 6",
        ),
        r(
            "eval-data-other-image-size",
            (*EVAL, "--data", "{big}"),
            ("{big}", mismatch),
            also=("big",),
            why="finding 6",
        ),
        r("eval-data-missing", (*EVAL, "--data", "{root}/nope"), ("nope",)),
        r("eval-data-a-run", (*EVAL, "--data", "{run}"), ("info.json|dataset",)),
        r(
            "report-data-other-action-kind",
            (*REPORT, "--data", "{cont}"),
            ("{cont}", mismatch),
            also=("cont",),
            why="finding 9",
        ),
        r("report-failures-negative", (*REPORT, "--failures", "-1"), ("failures",)),
        r("resume-config-lr-edited", RESUME, ("lr",), _set(c, "train/lr", 0.5), why="finding 5: new lr ignored"),
        r("resume-dataset-replaced", RESUME, ("dataset",), then=_replace_dataset, why="finding 5: trained on silently"),
        r("resume-flag-lr", (*RESUME, "--train.lr", "0.5"), ("lr",), why="finding 5"),
        r("resume-and-out", (*RESUME, "--out", "{out}"), ("--out",), why="--out is ignored with --resume"),
        r("resume-and-data", (*RESUME, "--data", "{cont}"), ("--data|dataset",), also=("cont",)),
        r("resume-of-a-dataset", ("train", "--resume", "{data}"), ("config.json",)),
        r("eval-of-a-dataset", ("eval", "--run", "{data}"), ("config.json",)),
        r("eval-of-a-file", ("eval", "--run", "{run}/config.json"), ("config.json",)),
        r("eval-of-nothing", ("eval", "--run", "{root}/nope"), ("nope",)),
        r("report-of-nothing", ("report", "--run", "{root}/nope"), ("nope",)),
    ]


def _replace_dataset(ctx: Ctx) -> None:
    """Another dataset (other episodes) at the path the run was trained on."""
    shutil.rmtree(ctx.path("data"))
    shutil.copytree(ctx.pristine / "alt", ctx.path("data"), symlinks=True)


def _checkpoint_cases() -> list[Case]:
    def k(id: str, argv: tuple[str, ...], keywords: tuple[str, ...], damage: Any, **kw: Any) -> Case:
        return _on("checkpoint", id, argv, keywords, damage, **kw)

    m, s = ("model.safetensors",), ("train_state.pt",)

    def pickle_bomb(run: Path) -> None:
        payload = _Evil(str(run.parent / "pwned"))
        (run / STATE).write_bytes(pickle.dumps(payload))

    def huge_header(run: Path) -> None:
        data = (run / MODEL).read_bytes()
        (run / MODEL).write_bytes(struct.pack("<Q", 2**62) + data[8:])

    return [
        k("model-missing-eval", EVAL, m, _remove(MODEL)),
        k("model-truncated-eval", EVAL, m, lambda run: truncate(run / MODEL)),
        k("model-truncated-report", REPORT, m, lambda run: truncate(run / MODEL)),
        k("model-garbage", EVAL, m, lambda run: garbage(run / MODEL)),
        k("model-empty", EVAL, m, lambda run: truncate(run / MODEL, 0.0)),
        k("model-a-directory", EVAL, m, _make_dir(MODEL)),
        k("model-symlink-loop", EVAL, ("symlink|loop",), lambda run: symlink_loop(run / MODEL)),
        k("model-header-huge", EVAL, m, huge_header),
        k("checkpoint-dir-missing", EVAL, ("checkpoint",), _remove("checkpoint")),
        k("model-of-other-run", EVAL, m, None, then=_other("polrun", MODEL)),
        k("state-missing-resume", RESUME, s, _remove(STATE)),
        k("state-truncated-resume", RESUME, s, lambda run: truncate(run / STATE)),
        k("state-garbage-resume", RESUME, s, lambda run: garbage(run / STATE)),
        k("state-empty-resume", RESUME, s, lambda run: truncate(run / STATE, 0.0)),
        k("state-a-directory-resume", RESUME, s, _make_dir(STATE)),
        k("state-pickle-code", RESUME, s, pickle_bomb, absent=("pwned",), why="loading never executes code"),
        k(
            "finished-run-model-deleted-resume",
            RESUME,
            m,
            _remove(MODEL),
            why="finding 10: prints success and writes no model",
        ),
        k("state-of-other-kind", RESUME, s, None, then=_other("polrun", STATE)),
    ]


class _Evil:
    """Unpickling this creates a file: a checkpoint loader must refuse it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (self.path, "w"))


def _other(fixture: str, rel: str) -> Callable[[Ctx], object]:
    """The run's ``rel`` replaced by the one of another run (a model of another shape and action kind)."""
    return lambda ctx: shutil.copy(ctx.pristine / fixture / rel, ctx.path("run") / rel) and None


def _cli_cases() -> list[Case]:
    def c(id: str, argv: tuple[str, ...], keywords: tuple[str, ...], setup: Any = None, why: str = "") -> Case:
        return Case(f"cli/{id}", "cli", argv, keywords, setup or (lambda ctx: None), why)

    def existing(ctx: Ctx) -> None:
        ctx.use("baby")

    return [
        c("no-subcommand", (), ("command|required",)),
        c("unknown-subcommand", ("nosuch",), ("nosuch",)),
        c("train-without-out", ("train", "--preset", "tiny"), ("--out",)),
        c("eval-without-run", ("eval",), ("--run",)),
        c("report-unknown-lang", ("report", "--run", "{root}", "--lang", "fr"), ("--lang",)),
        c("data-without-simulator", ("data",), ("simulator|required",)),
        c("data-unknown-simulator", ("data", "nosuch", "--out", "{out}"), ("nosuch",)),
        c("data-episodes-zero", ("data", "babyai", "--episodes", "0", "--out", "{out}"), ("episodes",)),
        c("data-episodes-negative", ("data", "babyai", "--episodes", "-5", "--out", "{out}"), ("episodes",)),
        c("data-val-episodes-negative", (*DATA, "--val-episodes", "-1", "--out", "{out}"), ("val",)),
        c("data-image-size-zero", (*DATA, "--image-size", "0", "--out", "{out}"), ("image-size|image_size",)),
        c("data-image-size-odd", (*DATA, "--image-size", "7", "--out", "{out}"), ("image-size|image_size",)),
        c("data-image-size-huge", (*DATA, "--image-size", "100000", "--out", "{out}"), ("image-size|image_size",)),
        c("data-level-unknown", (*DATA, "--level", "NoSuchLevel", "--out", "{out}"), ("NoSuchLevel",)),
        c("data-seed-negative", (*DATA, "--seed", "-1", "--out", "{out}"), ("seed",)),
        c("data-existing-no-overwrite", (*DATA, "--out", "{baby}"), ("--overwrite",), existing),
        c("eval-max-episodes-float", ("eval", "--run", "{root}", "--max-episodes", "1.5"), ("--max-episodes",)),
        c("pipeline-without-out", ("pipeline", "--preset", "tiny"), ("--out",)),
        c(
            "pipeline-data-missing",
            ("pipeline", "--preset", "tiny", "--data", "{root}/nope", "--out", "{out}"),
            ("nope",),
        ),
    ]


def _user_files(*dirs: str) -> Callable[[Ctx], None]:
    """User files that no command may touch, in each of ``dirs`` (relative to the case directory)."""

    def setup(ctx: Ctx) -> None:
        ctx.use("data")
        for d in dirs:
            (ctx.root / d).mkdir(parents=True, exist_ok=True)
            (ctx.root / d / "notes.txt").write_text("my notes\n")
            (ctx.root / d / "config.json").write_text('{"mine": true}\n')
            (ctx.root / d / "metrics.jsonl").write_text('{"my": "log"}\n')

    return setup


def _with(*names: str, files: tuple[str, ...] = ("cwd",)) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        _user_files(*files)(ctx)
        ctx.use(*names)

    return setup


def _fs_cases() -> list[Case]:
    def f(id: str, argv: tuple[str, ...], keywords: tuple[str, ...], setup: Any, why: str = "", **kw: Any) -> Case:
        return Case(f"filesystem/{id}", "filesystem", argv, keywords, setup, why, **kw)

    def afile(ctx: Ctx) -> None:
        _user_files("cwd")(ctx)
        (ctx.root / "afile").write_text("a file\n")

    # the flag, or the path that cannot be written
    out, ow = ("--out",), ("--out|overwrite",)
    afile_kw, long_kw = ("--out|{root}/afile",), ("--out|too long",)
    long_name = "x" * 300
    deep = "/".join(["y" * 200] * 25)
    home = _user_files("cwd", "mine")
    return [
        f("train-out-under-a-file", (*TRAIN, "--out", "{root}/afile/run"), afile_kw, afile, "finding 9: unwritable"),
        f("train-out-is-a-file", (*TRAIN, "--out", "{root}/afile"), afile_kw, afile),
        f(
            "train-out-unwritable",
            (*TRAIN, "--out", "/proc/vla-align-bad-inputs/run"),
            ("--out|/proc/vla-align-bad-inputs",),
            home,
            "finding 9",
        ),
        f("train-out-name-too-long", (*TRAIN, "--out", "{root}/" + long_name), long_kw, home, "finding 9"),
        f("train-out-path-too-long", (*TRAIN, "--out", "{root}/" + deep), long_kw, home),
        f("train-out-is-the-dataset", (*TRAIN, "--out", "{data}"), out, home, "writes a run into the dataset"),
        f("train-out-is-cwd", (*TRAIN, "--out", "."), out, home, "finding 2"),
        f(
            "train-out-foreign-config",
            (*TRAIN, "--out", "{root}/mine"),
            out,
            home,
            "finding 2: config.json overwritten",
        ),
        f("train-out-is-a-finished-run", (*TRAIN, "--out", "{run}"), ("--resume",), _with("run")),
        f("pipeline-overwrite-the-dataset", (*PIPELINE, "--out", "{data}", "--overwrite"), ow, home, "finding 1"),
        f("pipeline-overwrite-cwd", (*PIPELINE, "--out", ".", "--overwrite"), ow, home, "finding 1: empties cwd"),
        f("pipeline-overwrite-parent", (*PIPELINE, "--out", "..", "--overwrite"), ow, home, "finding 1"),
        f("pipeline-overwrite-dataset-parent", (*PIPELINE, "--out", "{root}", "--overwrite"), ow, home, "finding 1"),
        f("pipeline-overwrite-foreign", (*PIPELINE, "--out", "{root}/mine", "--overwrite"), ow, home, "finding 1"),
        f("pipeline-overwrite-other-dataset", (*PIPELINE, "--out", "{baby}", "--overwrite"), ow, _with("baby")),
        f("pipeline-foreign-no-overwrite", (*PIPELINE, "--out", "{root}/mine"), ("--overwrite",), home),
        f("pipeline-out-is-a-file", (*PIPELINE, "--out", "{root}/afile"), afile_kw, afile),
        f("data-overwrite-foreign", (*DATA, "--out", "{root}/mine", "--overwrite"), ow, home, "deletes a foreign dir"),
        f("data-overwrite-cwd", (*DATA, "--out", ".", "--overwrite"), ow, home, "empties the working directory"),
        f("data-overwrite-a-run", (*DATA, "--out", "{run}", "--overwrite"), ow, _with("run"), "deletes a run"),
        f("data-out-is-a-run", (*DATA, "--out", "{run}"), ("--overwrite|--out",), _with("run")),
        f("data-out-under-a-file", (*DATA, "--out", "{root}/afile/d"), afile_kw, afile),
        f(
            "report-out-is-a-directory",
            (*REPORT, "--out", "{root}/mine"),
            ("--out|{root}/mine",),
            _with("run", files=("mine",)),
        ),
        f("report-out-under-a-file", (*REPORT, "--out", "{root}/afile/r.html"), afile_kw, _chain(afile, "run")),
        f("eval-run-symlink-loop", ("eval", "--run", "{root}/cycle"), ("symlink|loop",), _loop),
    ]


def _chain(first: Callable[[Ctx], None], *names: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        first(ctx)
        ctx.use(*names)

    return setup


def _loop(ctx: Ctx) -> None:
    os.symlink("cycle", ctx.root / "cycle")


def run_cases() -> list[Case]:
    return [*_run_cases(), *_checkpoint_cases(), *_cli_cases(), *_fs_cases()]
