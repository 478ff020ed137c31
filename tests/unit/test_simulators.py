"""Every registered simulator (the built-in ones and the test suite's ``reach2d``) honours the seam."""

from __future__ import annotations

import argparse

import pytest
import tests.reach_sim  # noqa: F401  (registers reach2d)

from vla_align.cli import build_parser
from vla_align.errors import ConfigError
from vla_align.sim import SIMULATORS, DataConfig, Simulator, get_simulator, simulator_for


@pytest.mark.parametrize("name", SIMULATORS.names())
def test_every_simulator_is_registered_under_its_name(name: str) -> None:
    sim = get_simulator(name)
    assert isinstance(sim, Simulator) and sim.name == name and sim.summary
    assert simulator_for({"source": name}).name == name  # type: ignore[union-attr]
    assert DataConfig(source=name).source == name


@pytest.mark.parametrize("name", SIMULATORS.names())
def test_every_simulator_has_its_own_data_command(name: str) -> None:
    parser = argparse.ArgumentParser()
    get_simulator(name).add_data_arguments(parser)  # no clash with the flags every simulator gets
    args = build_parser().parse_args(["data", name, "--out", "somewhere"])
    assert args.source == name and args.out == "somewhere" and args.seed == 0


def test_data_without_a_registered_simulator_has_none() -> None:
    assert simulator_for({"source": "synthetic"}) is None
    assert simulator_for({}) is None
    with pytest.raises(ConfigError, match=r"not a registered simulator; use one of .*babyai.*metaworld"):
        DataConfig(source="nosuch")
