import argparse

import pytest

from vla_align import config as config_lib
from vla_align.errors import ConfigError
from vla_align.presets import PRESETS, RunConfig, get_preset


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_round_trips(name: str) -> None:
    cfg = get_preset(name)
    assert cfg.preset == name
    again = config_lib.from_dict(RunConfig, config_lib.to_dict(cfg))
    assert again == cfg


def test_unknown_key_names_the_key() -> None:
    data = config_lib.to_dict(get_preset("tiny"))
    data["model"]["embd_dim"] = 3
    with pytest.raises(ConfigError, match=r"model\.'?embd_dim"):
        config_lib.from_dict(RunConfig, data)


def test_wrong_type_and_invalid_value() -> None:
    data = config_lib.to_dict(get_preset("tiny"))
    data["train"]["steps"] = "many"
    with pytest.raises(ConfigError, match=r"train\.steps"):
        config_lib.from_dict(RunConfig, data)
    data = config_lib.to_dict(get_preset("tiny"))
    data["train"]["temperature_lr"] = 0.01
    with pytest.raises(ConfigError, match="temperature_lr"):
        config_lib.from_dict(RunConfig, data)


def test_unknown_preset_lists_known() -> None:
    with pytest.raises(ConfigError, match="babyai-quick"):
        get_preset("nope")


def test_flags_override_nested_fields() -> None:
    parser = argparse.ArgumentParser()
    config_lib.add_flags(parser, RunConfig)
    args = parser.parse_args(
        [
            "--model.embed-dim",
            "128",
            "--data.levels",
            "GoToLocal",
            "PutNextLocal",
            "--loss.weights.image-action",
            "0.25",
            "--model.learn-temperature",
            "false",
        ]
    )
    cfg = config_lib.apply_flags(get_preset("tiny"), args)
    assert cfg.model.embed_dim == 128
    assert cfg.data.levels == ("GoToLocal", "PutNextLocal")
    assert cfg.loss.weights.image_action == 0.25
    assert cfg.model.learn_temperature is False
    assert cfg.train == get_preset("tiny").train


def test_flag_values_are_validated() -> None:
    parser = argparse.ArgumentParser()
    config_lib.add_flags(parser, RunConfig)
    args = parser.parse_args(["--model.embed-dim", "4"])
    with pytest.raises(ConfigError, match="embed_dim"):
        config_lib.apply_flags(get_preset("tiny"), args)
