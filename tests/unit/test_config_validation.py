"""One validation layer for every config value (issue 17).

* ``from_dict`` (config files and every ``--a.b-c`` flag go through it): a float field is finite unless
  its metadata allows infinity, a bool is neither an int nor a float, an int takes no fraction;
* every config dataclass checks its ranges in ``__post_init__``, NaN included, with a message that
  names the config path and its flag, the allowed range and the value.

The walk covers every leaf of ``RunConfig`` (every variant of the polymorphic nodes included), so a
field added later without a check fails here.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.synthetic import write_synthetic

from vla_align import config as config_lib
from vla_align.cli import main
from vla_align.config import ALLOW_INF, _field_types, _leaves, is_variant_type
from vla_align.errors import ConfigError
from vla_align.presets import RunConfig, get_preset

NAN, INF = math.nan, math.inf
# (config path, type) of every leaf, once (the short form ``--model.policy.head NAME`` is the name key's)
LEAVES = sorted({(path, tp) for flag, path, tp in _leaves(RunConfig) if flag == path}, key=lambda leaf: leaf[0])
FLOATS = [path for path, tp in LEAVES if tp is float]
INTS = [path for path, tp in LEAVES if tp is int]
INT_TUPLES = [path for path, tp in LEAVES if typing.get_origin(tp) is tuple and typing.get_args(tp)[0] is int]
# leaves that are not numbers themselves but hold numbers: a negative and a NaN value for each
HOLDERS: dict[str, tuple[Any, Any]] = {
    "loss.spectral.band": ([-1.0, 2.0], [NAN, 2.0]),
    "loss.balancer.floors": ({"policy": -0.5}, {"policy": NAN}),
    "loss.physics.limits": ({"velocity": [-1.0], "dt": 0.1}, {"velocity": [NAN], "dt": 0.1}),
}


def _node_class(path: str) -> tuple[list[tuple[str, Any]], Any]:
    """The classes along ``path``: a variant node resolves to the first variant that has the next field."""
    *parents, leaf = path.split(".")
    chain: list[tuple[str, Any]] = []
    cls: Any = RunConfig
    for i, part in enumerate(parents):
        tp = _field_types(cls)[part]
        if is_variant_type(tp):
            wanted = [*parents, leaf][i + 1]
            tp = next(c for _n, c in tp.registry.items() if wanted in {f.name for f in dataclasses.fields(c)})
            chain.append((part, tp))
        else:
            chain.append((part, None))
        cls = tp
    return chain, cls


def config_data(path: str, value: Any = dataclasses.MISSING) -> dict[str, Any]:
    """The tiny preset as a dict with ``value`` at ``path`` (default: the leaf's own default), every
    variant node on the way switched to the variant that has the field (its defaults)."""
    node = data = config_lib.to_dict(get_preset("tiny"))
    chain, _cls = _node_class(path)
    for part, variant in chain:
        if variant is not None:
            node[part] = config_lib.to_dict(variant())
        node = node[part]
    leaf = path.rsplit(".", 1)[-1]
    node[leaf] = node[leaf] if value is dataclasses.MISSING else value
    return data


def refusal(path: str, value: Any) -> str:
    """The message of the ConfigError that ``value`` at ``path`` raises (the test fails when none does)."""
    data = config_data(path, value)
    with pytest.raises(ConfigError) as info:
        config_lib.from_dict(RunConfig, data)
    return str(info.value)


def names_the_field(message: str, path: str) -> bool:
    return path in message and f"--{path.replace('_', '-')}" in message


def test_the_walk_reaches_every_kind_of_leaf_and_the_defaults_are_valid() -> None:
    assert len(FLOATS) >= 40 and len(INTS) >= 50
    assert set(INT_TUPLES) == {"model.image.channels", "model.image.strides", "eval.ks"}
    assert {"train.grad_clip", "train.min_lr_ratio", "train.weight_decay", "model.policy.head.time_alpha"} <= set(
        FLOATS
    )
    assert {"train.threads", "train.max_bad_steps", "model.policy.fusion.heads", "loss.balancer.seed"} <= set(INTS)
    assert set(HOLDERS) <= {path for path, _tp in LEAVES}
    for path in FLOATS + INTS + INT_TUPLES + list(HOLDERS):
        config_lib.from_dict(RunConfig, config_data(path))  # the switched variants' defaults load


@pytest.mark.parametrize("path", FLOATS)
def test_every_float_leaf_refuses_nan_infinity_and_negatives(path: str) -> None:
    for bad in (NAN, INF, -INF, -1.0):
        message = refusal(path, bad)
        assert names_the_field(message, path), message
        assert repr(bad) in message, message
    assert "finite" in refusal(path, NAN)


@pytest.mark.parametrize("path", INTS)
def test_every_int_leaf_refuses_negatives_fractions_bools_and_nan(path: str) -> None:
    message = refusal(path, -1)
    assert names_the_field(message, path) and "-1" in message, message
    for bad in (2.5, NAN, True, "3"):
        assert path in refusal(path, bad)


@pytest.mark.parametrize("path", INT_TUPLES)
def test_every_int_list_leaf_refuses_negative_entries(path: str) -> None:
    default = config_data(path)
    node = default
    for part in path.split("."):
        node = node[part]
    message = refusal(path, [-1] * len(node))
    assert names_the_field(message, path), message
    assert path in refusal(path, [1.5] * len(node))


@pytest.mark.parametrize("path", sorted(HOLDERS))
def test_leaves_holding_numbers_refuse_negative_and_nan_entries(path: str) -> None:
    for bad in HOLDERS[path]:
        assert path in refusal(path, bad)


def test_every_float_field_of_every_config_class_refuses_nan_when_built_directly() -> None:
    """``__post_init__`` itself is NaN-safe (a config built in Python skips ``from_dict``)."""
    for path in FLOATS:
        _chain, cls = _node_class(path)
        leaf = path.rsplit(".", 1)[-1]
        with pytest.raises(ConfigError) as info:
            cls(**{leaf: NAN})
        assert names_the_field(str(info.value), path), str(info.value)


def test_whole_floats_are_read_as_ints_and_ints_as_floats() -> None:
    data = config_data("train.steps", 30.0)
    data["train"]["grad_clip"] = 2
    cfg = config_lib.from_dict(RunConfig, data)
    assert cfg.train.steps == 30 and isinstance(cfg.train.steps, int)
    assert cfg.train.grad_clip == 2.0 and isinstance(cfg.train.grad_clip, float)


def test_bools_are_not_numbers_and_numbers_are_not_bools() -> None:
    assert "train.steps" in refusal("train.steps", True)
    assert "train.lr" in refusal("train.lr", False)
    assert "model.learn_temperature" in refusal("model.learn_temperature", 1)


def test_a_field_whose_metadata_allows_infinity_takes_it_but_never_nan() -> None:
    @dataclass
    class Limits:
        cap: float = field(default=1.0, metadata={ALLOW_INF: True})
        gain: float = 1.0

    assert config_lib.from_dict(Limits, {"cap": INF}).cap == INF
    with pytest.raises(ConfigError, match=r"cap must be a finite number, got nan"):
        config_lib.from_dict(Limits, {"cap": NAN})
    with pytest.raises(ConfigError, match=r"gain must be a finite number, got inf \(flag --gain\)"):
        config_lib.from_dict(Limits, {"gain": INF})


def test_numpy_numbers_pass_the_range_checks() -> None:
    import numpy as np

    from vla_align.train import TrainConfig

    cfg = TrainConfig(steps=np.int64(5), grad_clip=np.float32(0.5))  # type: ignore[arg-type]
    assert cfg.steps == 5
    with pytest.raises(ConfigError, match=r"train\.grad_clip"):
        TrainConfig(grad_clip=np.float64(np.nan))  # type: ignore[arg-type]


def test_a_config_file_that_is_not_text_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cfg.json"
    path.write_bytes(b"\x89\xff\x00binary")
    with pytest.raises(ConfigError, match="not a text file"):
        config_lib.load_json(path)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "cfg.json" in err


def test_messages_say_the_range_and_why() -> None:
    message = refusal("train.grad_clip", -1.0)
    assert "train.grad_clip must be a finite number > 0" in message and "flips the gradient" in message
    assert "got -1.0 (flag --train.grad-clip)" in message
    assert "in 0..1024" in refusal("train.threads", -1)
    assert "[0, 1]" in refusal("train.min_lr_ratio", 1.5)
    assert "unsigned 32-bit" in refusal("train.seed", 2**32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("d") / "synth", n_train=8, n_val=4, n_test=4)


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--train.grad-clip", "nan", "finite"),
        ("--train.min-lr-ratio", "nan", "finite"),
        ("--train.weight-decay", "nan", "finite"),
        ("--train.grad-clip", "inf", "finite"),
        ("--train.grad-clip", "-1", "> 0"),
        ("--train.grad-clip", "0", "> 0"),
        ("--train.min-lr-ratio", "-0.5", "[0, 1]"),
        ("--train.weight-decay", "-0.1", "[0, 1]"),
        ("--train.threads", "-1", "0..1024"),
        ("--train.max-bad-steps", "-1", ">= 0"),
        ("--train.seed", "-3", "unsigned 32-bit"),
        ("--model.policy.weight", "nan", "finite"),
        ("--loss.codebook.weight", "nan", "finite"),
        ("--loss.weights.image-text", "-1", ">= 0"),
    ],
)
def test_bad_values_on_the_command_line_end_in_one_line_and_exit_2(
    flag: str, value: str, words: str, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--data", str(dataset), "--out", str(out), flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert flag in lines[0] and words in lines[0], lines[0]
    assert not out.exists()  # refused before anything was written
