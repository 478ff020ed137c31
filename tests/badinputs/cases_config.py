"""Bad configuration: every numeric flag with NaN / Inf / a negative or zero value where that is invalid,
wrong types, unknown names and keys, and bad --config JSON files."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .case import Case, Ctx

# Two steps: a config problem must stop the run before the first step; if it does not, the case stays cheap.
TRAIN = ("train", "--preset", "tiny", "--data", "{data}", "--out", "{out}", "--train.steps", "2")
POLICY = ("--model.policy.enabled", "true")
NAN, INF = "nan", "inf"

# (flag, value, flags it needs to be read, why). The keywords are the field's name, with _ or -.
FLAG_VALUES: list[tuple[str, str, tuple[str, ...], str]] = [
    ("--train.steps", "0", (), ""),
    ("--train.steps", "-5", (), ""),
    ("--train.steps", NAN, (), "an int flag given nan"),
    ("--train.batch-size", "0", (), ""),
    ("--train.batch-size", "1", (), "InfoNCE needs negatives"),
    ("--train.lr", NAN, (), ""),
    ("--train.lr", INF, (), ""),
    ("--train.lr", "-0.001", (), ""),
    ("--train.lr", "0", (), ""),
    ("--train.min-lr-ratio", NAN, (), "finding 3"),
    ("--train.min-lr-ratio", "-0.5", (), "finding 3: a negative learning rate"),
    ("--train.min-lr-ratio", INF, (), ""),
    ("--train.weight-decay", NAN, (), "finding 3"),
    ("--train.weight-decay", "-0.1", (), ""),
    ("--train.weight-decay", INF, (), ""),
    ("--train.warmup-steps", "-1", (), ""),
    ("--train.temperature-lr", NAN, (), ""),
    ("--train.temperature-lr", "-1", (), ""),
    ("--train.grad-clip", NAN, (), "finding 3: passes validation, NaN checkpoint"),
    ("--train.grad-clip", "-1", (), "finding 3: a negative clip flips the gradient"),
    ("--train.augment-shift", "-2", (), ""),
    ("--train.augment-mirror", NAN, (), ""),
    ("--train.augment-mirror", "1.5", (), ""),
    ("--train.seed", "-1", (), "numpy refuses negative seeds"),
    ("--train.log-every", "0", (), ""),
    ("--train.checkpoint-every", "0", (), ""),
    ("--train.checkpoint-every", "-1", (), ""),
    ("--train.threads", "-1", (), "finding 9"),
    ("--train.select.every", "-1", (), ""),
    ("--train.select.episodes", "-1", (), ""),
    ("--train.select.patience", "-1", (), ""),
    ("--train.select.min-retrieval", NAN, (), ""),
    ("--train.select.min-retrieval", "2", (), ""),
    ("--model.embed-dim", "0", (), ""),
    ("--model.embed-dim", "-32", (), ""),
    ("--model.image.channels", "0", (), ""),
    ("--model.image.strides", "0", (), ""),
    ("--model.image.pool", "-1", (), ""),
    ("--model.image.feature-dim", "0", (), ""),
    ("--model.text.feature-dim", "0", (), ""),
    ("--model.text.vocab-buckets", "0", (), ""),
    ("--model.text.max-words", "0", (), ""),
    ("--model.text.word-dim", "-1", (), ""),
    ("--model.action.chunk-len", "0", (), ""),
    ("--model.action.step-dim", "0", (), ""),
    ("--model.action.feature-dim", "0", (), ""),
    ("--model.init-temperature", "0", (), ""),
    ("--model.init-temperature", NAN, (), ""),
    ("--model.init-temperature", "-0.07", (), ""),
    ("--model.max-logit-scale", NAN, (), ""),
    ("--model.max-logit-scale", "-1", (), ""),
    ("--model.policy.hidden", "0", POLICY, ""),
    ("--model.policy.chunk", "0", POLICY, ""),
    ("--model.policy.execute", "0", POLICY, ""),
    ("--model.policy.history", "-1", POLICY, ""),
    ("--model.policy.history-dropout", NAN, POLICY, ""),
    ("--model.policy.history-dropout", "1.5", POLICY, ""),
    ("--model.policy.weight", NAN, POLICY, ""),
    ("--model.policy.weight", "-1", POLICY, ""),
    ("--model.policy.start-step", "-1", POLICY, ""),
    ("--model.policy.freeze-encoders-until", "-1", POLICY, ""),
    ("--model.policy.label-smoothing", NAN, POLICY, ""),
    ("--model.policy.label-smoothing", "1.5", POLICY, ""),
    ("--model.policy.fusion.channels", "0", POLICY, ""),
    ("--model.policy.fusion.heads", "0", (*POLICY, "--model.policy.fusion", "xattn"), ""),
    ("--model.policy.head.hidden", "0", (*POLICY, "--model.policy.head", "binned"), ""),
    ("--model.policy.head.depth", "-1", (*POLICY, "--model.policy.head", "binned"), ""),
    ("--model.policy.head.bins", "1", (*POLICY, "--model.policy.head", "binned"), ""),
    ("--model.policy.head.temperature", NAN, (*POLICY, "--model.policy.head", "binned"), ""),
    ("--model.policy.head.temperature", "-1", (*POLICY, "--model.policy.head", "binned"), ""),
    ("--model.policy.head.steps", "0", (*POLICY, "--model.policy.head", "flow"), ""),
    ("--model.policy.head.time-min", NAN, (*POLICY, "--model.policy.head", "flow"), ""),
    ("--model.policy.head.time-alpha", "-1", (*POLICY, "--model.policy.head", "flow"), ""),
    ("--loss.weights.image-text", NAN, (), ""),
    ("--loss.weights.image-text", "-1", (), ""),
    ("--loss.weights.image-text", INF, (), ""),
    ("--loss.weights.text-action", "-1", (), ""),
    ("--loss.weights.image-action", NAN, (), ""),
    ("--loss.pairwise-first-steps", "-1", (), ""),
    ("--loss.cycle.weight", NAN, (), ""),
    ("--loss.cycle.weight", "-0.2", (), ""),
    ("--loss.cycle.temperature", "0", (), ""),
    ("--loss.trimodal", NAN, (), ""),
    ("--loss.paraphrase", "-1", (), ""),
    ("--loss.modality-dropout", "1.5", POLICY, ""),
    ("--loss.modality-balance", NAN, POLICY, ""),
    ("--loss.balance-margin", NAN, POLICY, ""),
    ("--loss.spectral.weight", NAN, (), ""),
    ("--loss.spectral.nperseg", "-1", (), "0 means auto; a negative segment length is not"),
    ("--loss.spectral.recon-weight", NAN, (), ""),
    ("--loss.spectral.recon-decay", "-1", (), ""),
    ("--loss.spectral.window", "0", (), ""),
    ("--loss.spectral.windows", "0", (), ""),
    ("--loss.physics.distill-weight", "-1", (), ""),
    ("--loss.physics.distill-temperature", "0", (), ""),
    ("--loss.physics.percentile", "150", (), ""),
    ("--loss.physics.feasibility-weight", NAN, (), ""),
    ("--loss.codebook.codes", "0", (), ""),
    ("--loss.codebook.beta", NAN, (), ""),
    ("--loss.codebook.decay", "1.5", (), ""),
    ("--loss.codebook.temperature", "0", (), ""),
    ("--loss.codebook.restart-after", "-1", (), ""),
    ("--loss.codebook.agreement", NAN, (), ""),
    ("--loss.balancer.alpha", NAN, ("--loss.balancer", "gradnorm"), ""),
    ("--loss.balancer.lr", "-1", ("--loss.balancer", "gradnorm"), ""),
    ("--loss.balancer.conflict-every", "-1", (), ""),
    ("--loss.balancer.prior-floor", NAN, (), ""),
    ("--loss.balancer.prior-floor", "1.5", (), "a floor is a fraction of the weight"),
    ("--loss.balancer.seed", "-1", ("--loss.balancer", "pcgrad"), ""),
    ("--model.policy.head.chunk-len", "0", POLICY, ""),
    ("--model.policy.head.time-dim", "0", (*POLICY, "--model.policy.head", "flow"), ""),
    ("--eval.seed", "-1", (), ""),
    ("--eval.sim.seed", "-1", (), ""),
    ("--eval.batch-size", "0", (), ""),
    ("--eval.ndcg-k", "0", (), ""),
    ("--eval.ks", "0", (), ""),
    ("--eval.max-episodes", "-1", (), "finding 6"),
    ("--eval.sim.episodes", "-5", (), ""),
    ("--eval.sim.envs", "0", (), ""),
    ("--eval.sim.workers", "-1", (), ""),
    ("--eval.sim.max-steps", "-1", (), ""),
    ("--data.image-size", "0", (), ""),
    ("--data.train-episodes", "-1", (), ""),
    ("--data.val-episodes", "0", (), ""),
    ("--data.test-episodes", "0", (), ""),
    ("--data.seed", "-1", (), ""),
]


def _use_data(ctx: Ctx) -> None:
    ctx.use("data")


def _keywords(flag: str) -> tuple[str, ...]:
    """The field and the section it is in (``--loss.cycle.weight``: cycle, weight), each with _ or -."""
    *_, parent, leaf = flag.lstrip("-").split(".")
    return tuple(f"{w.replace('-', '_')}|{w}" if "-" in w else w for w in (parent, leaf))


def _flag_cases() -> list[Case]:
    out = []
    for flag, value, needs, why in FLAG_VALUES:
        name = f"config/{flag.lstrip('-')}={value}"
        out.append(Case(name, "config", (*TRAIN, *needs, flag, value), _keywords(flag), _use_data, why))
    return out


def _type_cases() -> list[Case]:
    def c(id: str, keywords: tuple[str, ...], *extra: str, base: tuple[str, ...] = TRAIN, why: str = "") -> Case:
        return Case(f"config/{id}", "config", (*base, *extra), keywords, _use_data, why)

    pipeline = ("pipeline", "--preset", "tiny", "--out", "{out}", "--train.steps", "2")
    return [
        c("steps-not-a-number", ("--train.steps",), "--train.steps", "abc"),
        c("lr-not-a-number", ("--train.lr",), "--train.lr", "fast"),
        c("bool-not-a-bool", ("--model.policy.enabled",), "--model.policy.enabled", "maybe"),
        c("unknown-head", ("nosuch",), *POLICY, "--model.policy.head", "nosuch"),
        c("unknown-fusion", ("nosuch",), *POLICY, "--model.policy.fusion", "nosuch"),
        c("unknown-balancer", ("nosuch",), "--loss.balancer", "nosuch"),
        c("unknown-text-backbone", ("nosuch",), "--model.text", "nosuch"),
        c("unknown-device", ("tpu",), "--train.device", "tpu"),
        c("unknown-preset", ("nosuch",), "--preset", "nosuch"),
        c("unknown-flag", ("--train.stepz",), "--train.stepz", "3"),
        c("misspelt-section", ("--model.embd-dim",), "--model.embd-dim", "3"),
        c("channels-not-ints", ("--model.image.channels",), "--model.image.channels", "8", "x"),
        c("channels-strides-mismatch", ("channels|strides",), "--model.image.channels", "8", "16", "32"),
        c("execute-beyond-chunk", ("execute",), *POLICY, "--model.policy.chunk", "2", "--model.policy.execute", "4"),
        c(
            "flag-of-another-head",
            ("bins",),
            *POLICY,
            "--model.policy.head.bins",
            "8",
            why="regression head has no bins",
        ),
        c("unknown-simulator", ("nosuch",), "--data.source", "nosuch", base=pipeline),
        c("unknown-level", ("nosuch",), "--data.levels", "NoSuch", base=pipeline),
    ]


def _config_file(
    id: str, edit: Callable[[dict[str, Any]], object] | str | bytes, keywords: tuple[str, ...], why: str = ""
) -> Case:
    """``train --config cfg.json``: the trained fixture run's whole config.json, edited (or raw text)."""

    def setup(ctx: Ctx) -> None:
        ctx.use("data")
        if isinstance(edit, str | bytes):
            data = edit.encode() if isinstance(edit, str) else edit
        else:
            cfg = json.loads((ctx.pristine / "run" / "config.json").read_text())
            cfg.pop("dataset", None)
            edit(cfg)
            data = json.dumps(cfg, indent=2).encode()
        (ctx.root / "cfg.json").write_bytes(data)

    argv = ("train", "--config", "{root}/cfg.json", "--data", "{data}", "--out", "{out}", "--train.steps", "2")
    return Case(f"config/file-{id}", "config", argv, keywords, setup, why)


def _put(dotted: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(cfg: dict[str, Any]) -> None:
        *parents, leaf = dotted.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value

    return edit


def _file_cases() -> list[Case]:
    f = "cfg.json"
    return [
        _config_file("not-json", "{ nope", (f,)),
        _config_file("empty", "", (f,)),
        _config_file("a-list", "[1, 2]", (f,)),
        _config_file("binary", b"\x00\xff\xfe garbage", (f,)),
        _config_file("unknown-top-key", _put("modle", {}), ("modle",)),
        _config_file("unknown-nested-key", _put("eval.batch_sise", 3), ("batch_sise",)),
        _config_file("steps-a-string", _put("train.steps", "ten"), ("steps",)),
        _config_file("steps-a-bool", _put("train.steps", True), ("steps",), "a bool is not an int"),
        _config_file("steps-a-float", _put("train.steps", 2.5), ("steps",)),
        _config_file("lr-nan", _put("train.lr", math.nan), ("lr",)),
        _config_file("grad-clip-negative", _put("train.grad_clip", -1.0), ("grad_clip",)),
        _config_file("weight-decay-infinity", _put("train.weight_decay", math.inf), ("weight_decay",)),
        _config_file("balancer-unknown", _put("loss.balancer", {"name": "nosuch"}), ("nosuch",)),
        _config_file("head-unknown", _put("model.policy.head", "nosuch"), ("nosuch",)),
        _config_file("section-not-a-mapping", _put("eval", "fast"), ("eval",)),
        _config_file("section-null", _put("eval", None), ("eval",)),
        _config_file("ks-a-string", _put("eval.ks", "5"), ("ks",)),
        _config_file("ks-zero", _put("eval.ks", [0]), ("ks",)),
        _config_file("channels-mixed", _put("model.image.channels", [8, "x"]), ("channels",)),
        _config_file("preset-a-number", _put("preset", 5), ("preset",)),
        _config_file("embed-dim-null", _put("model.embed_dim", None), ("embed_dim",)),
        Case(
            "config/file-missing", "config", ("train", "--config", "{root}/nope.json", "--out", "{out}"), ("nope.json",)
        ),
        Case("config/file-a-directory", "config", ("train", "--config", "{root}", "--out", "{out}"), ("{root}",)),
    ]


def config_cases() -> list[Case]:
    return [*_flag_cases(), *_type_cases(), *_file_cases()]
