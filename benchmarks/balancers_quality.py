"""Part (b) of the balancer benchmark: retrieval and closed-loop success per balancer at equal steps.

    .venv/bin/python benchmarks/balancers_quality.py --data datasets/babyai-GoToLocal-aed39d58 \
        --steps 1000 --episodes 500 --out runs/bench-balancers

One `vla-align train` per balancer (fixed, pcgrad, gradnorm, uncertainty, pcgrad_gradnorm) on the
same dataset, preset, seed and number of steps, with the chapter's cycle term on (λ_cyc = 0.2) so five
objectives compete (three pair InfoNCE terms, the policy's behaviour cloning, the cycle term); then
`vla-align eval --episodes N` on the test split. Equal steps is equal data; the per-objective
balancers cost more per step (see benchmarks/balancers.py), so the wall time of each run is printed
beside it. Prints a Markdown table (and writes OUT/table.md) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from common import train_and_eval, write_table

BALANCERS = ["fixed", "pcgrad", "gradnorm", "uncertainty", "pcgrad_gradnorm"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a BabyAI dataset (vla-align data babyai ...)")
    parser.add_argument("--preset", default="babyai-quick")
    parser.add_argument("--balancers", nargs="+", default=BALANCERS)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=500, help="closed-loop test episodes per run")
    parser.add_argument("--cycle", type=float, default=0.2, help="λ_cyc (0 = four objectives)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-balancers"))
    args = parser.parse_args()
    rows = []
    for name in args.balancers:
        out = args.out / name
        if not (out / "metrics.json").is_file():
            flags = ["--train.select.every", "0", "--loss.cycle.weight", str(args.cycle), "--loss.balancer.name", name]
            train_s = train_and_eval(args.preset, args.data, out, args.steps, flags, args.episodes)
            (out / "wall.json").write_text(json.dumps({"train_s": train_s}))
        m = json.loads((out / "metrics.json").read_text())
        train_s = (
            json.loads((out / "wall.json").read_text())["train_s"] if (out / "wall.json").is_file() else float("nan")
        )
        weights = {}
        for line in (out / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if any(k.startswith("balance/weight/") for k in record):
                weights = {
                    k.removeprefix("balance/weight/"): v for k, v in record.items() if k.startswith("balance/weight/")
                }
        rows.append((name, m, train_s, weights))

    def f(m: dict[str, float], key: str) -> str:
        return f"{m[key]:.3f}" if key in m else "n/a"

    lines = [
        f"BabyAI, dataset {args.data}, preset {args.preset}, {args.steps} steps per run, λ_cyc {args.cycle}, "
        f"{args.episodes} closed-loop test episodes; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}",
        "",
        "| balancer | success | SPL | shuffled-text success | image→text R@10 | text→image R@10 "
        "| image+text→action R@10 | train s | final weights |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, m, train_s, weights in rows:
        w = ", ".join(f"{k} {v:.2f}" for k, v in weights.items()) or "fixed"
        lines.append(
            f"| {name} | {f(m, 'sim/success_rate')} | {f(m, 'sim/spl')} "
            f"| {f(m, 'ablation/shuffle_text/sim/success_rate')} | {f(m, 'retrieval/image_to_text/R@10')} "
            f"| {f(m, 'retrieval/text_to_image/R@10')} | {f(m, 'retrieval/image+text_to_action/R@10')} "
            f"| {train_s:.0f} | {w} |"
        )
    write_table(lines, args.out)


if __name__ == "__main__":
    main()
