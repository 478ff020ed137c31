"""The `vla-align` command: data | train | eval | report | pipeline | presets | doctor."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import Any, NoReturn

from . import config as config_lib
from . import safety
from .errors import UserError

DEFAULT_PRESET = "babyai-quick"  # what train and pipeline start from without --preset / --config


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags in one line and exits 2, reads the snake_case spelling of a
    config flag (``--train.batch_size 64``) as the flag, and suggests the flags closest to an unknown one."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--data` must never match `--data.path`
        super().__init__(*args, **kwargs)
        self.argv: list[str] = []  # the arguments last given to this parser (what --help reads)

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self.argv = config_lib.kebab_flags(list(sys.argv[1:] if args is None else args))
        parsed, extra = super().parse_known_args(self.argv, namespace)
        if extra and " " in self.prog:  # a sub-command names its own flags (e.g. another simulator's)
            self.error(f"unrecognized arguments: {' '.join(extra)}{self._did_you_mean(extra)}")
        return parsed, extra

    def _did_you_mean(self, extra: list[str]) -> str:
        """``; did you mean --a or --b?``: the known flags closest to the first unknown flag in ``extra``
        (by spelling, else those with the same last part: ``--steps`` -> ``--train.steps``)."""
        import difflib

        known = [o for o in self._option_string_actions if o.startswith("--")]
        for arg in extra:
            flag = arg.split("=", 1)[0]
            if not flag.startswith("--"):
                continue
            close = difflib.get_close_matches(flag, known, n=3, cutoff=0.75)
            last = flag.rsplit(".", 1)[-1].lstrip("-")
            close = close or [o for o in known if o.rsplit(".", 1)[-1].lstrip("-") == last][:3]
            return f"; did you mean {' or '.join(close)}?" if close else ""
        return ""


_DEFAULTS_FROM = " Config flag defaults shown: "


class _ConfigHelp(argparse.Action):
    """``-h/--help`` of train and pipeline: every config flag with its field's description and its value
    in the config this command line starts from (``--config FILE``, ``--resume RUN``, else ``--preset``)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        about = "show this help and exit (config flag defaults: those of the --preset / --config given)"
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=about)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        from .presets import RunConfig

        argv = parser.argv if isinstance(parser, _Parser) else []
        try:
            cfg, source = _help_config(argv)
        except UserError as exc:
            parser.error(str(exc))
        config_lib.describe_flags(parser, RunConfig, cfg)
        about = (parser.description or "").split(_DEFAULTS_FROM)[0].strip()
        parser.description = f"{about}{_DEFAULTS_FROM}{source}."
        parser.print_help()
        parser.exit()


def _option_value(argv: list[str], flag: str) -> str | None:
    """The value of the last ``FLAG VALUE`` or ``FLAG=VALUE`` in ``argv`` (None when there is none)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"{flag}="):
            value = arg[len(flag) + 1 :]
    return value


def _help_config(argv: list[str]) -> tuple[Any, str]:
    """The config a train / pipeline command line starts from, and where it comes from (for --help)."""
    resume = _option_value(argv, "--resume")
    if resume:
        from .runs import load_run_config

        return load_run_config(Path(resume))[0], f"the config of run {resume}"
    config_file = _option_value(argv, "--config")
    preset = _option_value(argv, "--preset") or DEFAULT_PRESET
    return _base_config(preset, config_file), f"config file {config_file}" if config_file else f"preset {preset}"


def _base_config(preset: str, config_file: str | None) -> Any:
    """The config a run starts from: the JSON file ``config_file`` (a run's config.json works: its
    ``dataset`` section is left out) if given, else the preset named ``preset``."""
    from .presets import RunConfig, get_preset

    if not config_file:
        return get_preset(preset)
    data = config_lib.load_json(config_file)
    try:
        return config_lib.from_dict(RunConfig, {k: v for k, v in data.items() if k != "dataset"})
    except UserError as exc:
        raise UserError(f"{config_file}: {exc}") from None


def _run_config(args: argparse.Namespace) -> Any:
    cfg = _base_config(args.preset, getattr(args, "config", None))
    cfg = config_lib.apply_flags(cfg, args)
    if getattr(args, "data", None):
        cfg.data.path = str(args.data)
    return cfg


def _resume_config(args: argparse.Namespace) -> tuple[Path, Any]:
    """``train --resume RUN``: the run directory and its config.json with the flags applied (train()
    refuses those a resume may not change)."""
    from .runs import load_run_config

    if args.out or args.config:
        raise UserError("train --resume RUN continues RUN with its own config.json: drop --out / --config")
    run_dir = Path(args.resume)
    cfg, _ = load_run_config(run_dir)
    cfg = config_lib.apply_flags(cfg, args)
    if args.data:
        cfg.data.path = str(args.data)
    return run_dir, cfg


def _print_config(args: argparse.Namespace) -> None:
    """``--print-config``: the fully resolved, validated config as JSON on stdout; nothing is written."""
    import json

    from .train import check_config

    if getattr(args, "resume", None):
        from .checkpoint import check_resume_config

        run_dir, cfg = _resume_config(args)
        check_resume_config(run_dir, cfg)
    else:
        cfg = _run_config(args)
    check_config(cfg)
    print(json.dumps(config_lib.to_dict(cfg), indent=2, ensure_ascii=False))


def cmd_data(args: argparse.Namespace) -> None:
    from .sim import get_simulator

    print(get_simulator(args.source).generate_from_args(args))


def cmd_train(args: argparse.Namespace) -> None:
    if args.print_config:
        return _print_config(args)
    from .train import train

    if args.resume:
        run_dir, cfg = _resume_config(args)
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
    from .sim.base import inference_autocast
    from .tracking import log_eval
    from .train import resolve_device

    run_dir = Path(args.run)
    device = resolve_device(getattr(args, "device", None) or "auto", "--device")
    cfg, extra = load_run_config(run_dir)
    run_split = cfg.eval.split
    cfg = _eval_config(cfg, args)
    progress = training_progress(run_dir, cfg)
    model, _ = load_model(run_dir, device)
    out_dir, progress = _eval_checkpoint(run_dir, model, progress, getattr(args, "checkpoint", None))
    if args.episodes and model.policy is None:
        raise UserError(f"{run_dir}: --episodes needs a run trained with a policy (--model.policy.enabled true)")
    data_path = Path(args.data) if args.data else Path(extra["dataset"]["path"])
    check_run_dataset(run_dir, extra["dataset"], data_path)
    split = cfg.eval.split
    with inference_autocast(device):
        metrics = evaluate_run(out_dir, cfg, extra["dataset"], model, data_path, episodes_file(split, run_split))
    prefix = "" if split == run_split else f"split/{split}/"
    merged = update_metrics(out_dir, {f"{prefix}{k}": v for k, v in metrics.items()} | progress.metrics())
    if out_dir == run_dir:  # the run's model: metrics.json also goes to its TensorBoard log, at the last step
        log_eval(run_dir, merged, progress.step if progress.step is not None else progress.steps)
    print_summary({**metrics, **progress.metrics()}, split)
    if prefix:
        print(f"{split}-split metrics stored under {prefix}... in {out_dir / 'metrics.json'} (test numbers kept)")
    if out_dir != run_dir:
        print(f"metrics of {out_dir.name} stored in {out_dir / 'metrics.json'} (the run's own metrics.json kept)")
    return merged


def _eval_checkpoint(run_dir: Path, model: Any, progress: Any, name: str | None) -> tuple[Path, Any]:
    """``eval --checkpoint step-NNNNNN|last``: load that kept checkpoint's weights into ``model``; its
    metrics (and closed-loop episodes) go into its own folder. Without it: the run and its progress."""
    from . import checkpoint

    if not name:
        return run_dir, progress
    folder = checkpoint.snapshot_dir(run_dir, name)
    checkpoint.load_weights(model, folder)
    step = int(folder.name.removeprefix("step-"))
    return folder, checkpoint.Progress(step, progress.steps, step >= progress.steps, True)


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
    from .train import resolve_device, train

    device = getattr(args, "device", None) or cfg.train.device  # --device, else where training runs
    resolve_device(device, "--device" if getattr(args, "device", None) else "--train.device")  # before any work
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
    cmd_eval(
        argparse.Namespace(run=str(run_dir), split=None, max_episodes=None, data=None, episodes=None, device=device)
    )
    report = cmd_report(
        argparse.Namespace(run=str(run_dir), lang=args.lang, out=None, failures=6, data=None, device=device)
    )
    print(f"report: {report.resolve()}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    """data -> train -> eval -> report. An interrupted pipeline re-run with the same flags continues
    where it stopped; ``--overwrite`` replaces a vla-align run (only), deleting the old one at the end."""
    if args.print_config:
        return _print_config(args)
    if not args.out:
        raise UserError("pipeline needs --out RUN_DIR, the run directory to write")
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
    from .train import resolve_device

    device = str(resolve_device(getattr(args, "device", None) or "auto", "--device"))  # before any work
    if args.data:
        from .runs import check_run_dataset, load_run_config

        _, extra = load_run_config(Path(args.run))
        check_run_dataset(Path(args.run), extra.get("dataset") or {}, Path(args.data))
    t0 = time.perf_counter()
    path = write_report(
        args.run, lang=args.lang, out=args.out, max_failures=args.failures, data=args.data, device=device
    )
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
    """Versions, GPUs, extras, MuJoCo offscreen rendering and the report's browser (see doctor.py)."""
    from .doctor import report

    for line in report():
        print(line, flush=True)


# Data steps with a `vla-align data <step>` sub-command (chapter 5.7): each module registers its own
# (add_command). Vote needs a trained run, so it lives outside the data/ leaf.
DATA_STEPS = {
    "inject": "vla_align.data.inject",
    "align": "vla_align.data.align",
    "dedup": "vla_align.data.dedup",
    "vote": "vla_align.vote",
}


def _add_data_parser(sub: Any) -> None:
    """`vla-align data <simulator>`: one sub-command per registered simulator, with its own flags."""
    from .sim import SIMULATORS, get_simulator

    steps = ("split", *DATA_STEPS)  # the data steps on an existing dataset
    names = [n for n in SIMULATORS.names() if n not in steps]
    p = sub.add_parser(
        "data",
        help=f"generate demonstrations in LeRobot v3.0 format ({' | '.join(names)}), or run a data step on a "
        f"dataset ({' | '.join(steps)})",
    )
    sims = p.add_subparsers(dest="source", required=True, parser_class=_Parser, metavar="SIMULATOR|STEP")
    _add_split_parser(sims, "split" in SIMULATORS)
    for module in DATA_STEPS.values():
        import_module(module).add_command(sims, _Parser)
    for name in names:
        sim = get_simulator(name)
        q = sims.add_parser(name, help=sim.summary)
        sim.add_data_arguments(q)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--image-size", type=int, default=None, help=f"default: {sim.default_image_size}")
        q.add_argument("--out", required=True)
        q.add_argument("--overwrite", action="store_true")
        q.set_defaults(func=cmd_data)


def _add_split_parser(sims: Any, shadowed: bool) -> None:
    """`vla-align data split DIR`: write the dataset's split file beside it (see data/split_file.py)."""
    note = " (a simulator registered as 'split' cannot generate data from here: rename it)" if shadowed else ""
    q = sims.add_parser(
        "split",
        help="write a train/val/test(/test_ood) split file beside a dataset (DIR.splits.json)" + note,
        description="Split a dataset's episodes into train / val / test (and test_ood with --ood) and write the "
        "split file beside the dataset (never inside it); train, eval and report then use it." + note,
    )
    q.add_argument("dir", metavar="DIR", help="the LeRobot v3.0 dataset directory (read only)")
    q.add_argument(
        "--by",
        choices=["episode", "time-block"],
        default="episode",
        help="episode: random episodes (by --seed); time-block: contiguous blocks in episode order, train "
        "first, then val, then test (held-out episodes never recorded between training ones)",
    )
    q.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="hold out these out-of-domain items as split test_ood (repeatable): task=NAME,..., "
        "instruction=TEXT,... or object=WORD,... (a substring of the instruction); val/test stay in-domain",
    )
    q.add_argument("--val", type=float, default=0.1, help="fraction of the in-domain episodes for val (default 0.1)")
    q.add_argument("--test", type=float, default=0.1, help="fraction of the in-domain episodes for test (default 0.1)")
    q.add_argument("--seed", type=int, default=0, help="seed of the random episode split")
    q.add_argument("--out", metavar="FILE", help="where to write the split file (default: DIR.splits.json beside DIR)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing split file")
    q.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="FILE",
        help="leave out of every split the episodes this dedup / vote file flags (repeatable); the split file "
        "lists them under 'excluded'",
    )
    q.set_defaults(func=cmd_data_split)


def cmd_data_split(args: argparse.Namespace) -> None:
    """Write the split file of ``args.dir`` beside it and print what each split holds."""
    from . import atomic
    from .data import sidecar, split_file
    from .data.lerobot import read_info

    root = Path(args.dir)
    read_info(root)  # a LeRobot v3.0 dataset, checked
    out = Path(args.out) if args.out else split_file.default_split_path(root)
    safety.check_outside(out, [root])
    if out.exists() or out.is_symlink():
        if not args.overwrite:
            raise UserError(f"{out}: exists; pass --overwrite to replace it (runs trained on it will refuse it)")
        if not out.is_file():
            raise UserError(f"{out}: exists and is not a file; refusing to replace it; choose another --out")
        split_file.load_split_file(out)  # only a split file is replaced
    catalog = split_file.read_catalog(root)
    request = split_file.SplitRequest(args.by, args.val, args.test, args.seed, split_file.parse_ood(args.ood))
    excluded = sidecar.read_exclusions(root, args.exclude) if args.exclude else None
    doc = split_file.split_document(root, catalog, request, excluded)
    atomic.write_json(out, doc)
    _print_split_summary(split_file.summary_rows(catalog, doc["splits"]), out)
    if excluded is not None:
        print(f"{len(excluded)} flagged episode(s) left out of every split ({', '.join(args.exclude)})")
    if args.out:
        print(f"train / eval / report use it with --data.splits {out}")
    else:
        print(f"train / eval / report on {root} use it from now on (runs record it in their config.json)")


def _print_split_summary(rows: list[tuple[str, int, int, int, int]], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"splits written to {out}")
    for c in ("split", "episodes", "frames", "instructions", "shared with train"):
        table.add_column(c, justify="left" if c == "split" else "right")
    for name, episodes, frames, texts, shared in rows:
        table.add_row(name, str(episodes), str(frames), str(texts), "—" if name == "train" else str(shared))
    Console(width=120).print(table)


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


def _add_run_parser(sub: Any, name: str, summary: str, usage: str) -> argparse.ArgumentParser:
    """The train / pipeline sub-command with what they share: where the config starts (``--preset``,
    ``--config``), one flag per config field, ``--print-config`` and a ``--help`` that describes them."""
    from .presets import PRESETS, RunConfig

    description = (
        f"{summary[0].upper()}{summary[1:]}. Every config field is a flag --SECTION.FIELD VALUE, spelt with - or _ "
        "(--train.batch-size 64 = --train.batch_size=64); --print-config shows the config a command line makes."
    )
    q: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description, usage=f"%(prog)s [-h] {usage}", add_help=False
    )
    q.add_argument("-h", "--help", action=_ConfigHelp)
    q.add_argument(
        "--preset",
        metavar="NAME",
        default=DEFAULT_PRESET,
        help=f"the preset to start from: {', '.join(PRESETS.names())} (default: {DEFAULT_PRESET}; "
        "`vla-align presets` describes them)",
    )
    q.add_argument(
        "--config",
        metavar="FILE",
        help="start from this config.json instead of a preset (a run's RUN/config.json, or what --print-config "
        "printed); the config flags still override it",
    )
    q.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (--preset or --config, plus the flags; validated) as JSON and exit; "
        "nothing is trained or written",
    )
    config_lib.add_flags(q, RunConfig, skip=("preset",))
    return q


_CONFIG_USAGE = "[--preset NAME | --config FILE] [--print-config] [--SECTION.FIELD VALUE ...]"


def _device_flag(p: argparse.ArgumentParser, default: str | None) -> None:
    """``--device auto|cpu|cuda`` of eval, report and pipeline (the model's evaluation device)."""
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=default,
        help="where the model runs: auto = CUDA when a GPU is visible (bf16 autocast), else the CPU (float32)"
        + ("" if default else "; default: train.device"),
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="vla-align", description="Vision-language-action alignment toolkit")
    parser.add_argument("--version", action="version", version=f"vla-align {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_data_parser(sub)

    usage = f"(--out RUN | --resume RUN) [--data DIR] {_CONFIG_USAGE}"
    p = _add_run_parser(sub, "train", "train the aligned encoders", usage)
    p.add_argument("--out", metavar="RUN", help="run directory")
    p.add_argument("--data", metavar="DIR", help="dataset directory (overrides data.path)")
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
    p.add_argument(
        "--checkpoint",
        metavar="step-NNNNNN|last",
        help="evaluate this kept checkpoint (train.keep_checkpoints) instead; its metrics go into its folder",
    )
    _device_flag(p, "auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="write the run's alignment health report (report.html)")
    p.add_argument("--run", required=True)
    p.add_argument("--lang", choices=["zh", "en"], default="zh", help="language of the report text (default zh)")
    p.add_argument("--out", help="where to write the HTML (default RUN/report.html)")
    p.add_argument(
        "--failures", type=_count, default=6, help="failed episodes shown as three-view panels (worst first)"
    )
    p.add_argument("--data", help="dataset directory (default: the one the run was trained on)")
    _device_flag(p, "auto")
    p.set_defaults(func=cmd_report)

    usage = f"--out RUN [options] {_CONFIG_USAGE}"
    p = _add_run_parser(sub, "pipeline", "data -> train -> eval -> report in one go", usage)
    p.add_argument("--out", metavar="RUN", help="the run directory (required, except with --print-config)")
    p.add_argument("--lang", choices=["zh", "en"], default="zh", help="language of the report")
    p.add_argument("--data", help="use this existing dataset instead of generating the preset's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    _device_flag(p, None)
    p.set_defaults(func=cmd_pipeline)

    sub.add_parser("presets", help="list presets").set_defaults(func=cmd_presets)
    sub.add_parser("doctor", help="check versions, GPU, extras, MuJoCo rendering").set_defaults(func=cmd_doctor)
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


def _warning_line(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """``warnings.showwarning`` for the command line: a user-facing warning (a camera not read, a
    sidecar file a LeRobot tool dropped) is one line, not Python's file:line report."""
    first = (str(message).strip().splitlines() or [""])[0]
    print(f"vla-align: warning: {first}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure the user can fix (UserError, a path that cannot be read or written)
    is one line on stderr and exit 2; a bug is a short message naming the saved traceback, exit 1.
    Warnings are one line each."""
    import warnings

    warnings.showwarning = _warning_line
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
