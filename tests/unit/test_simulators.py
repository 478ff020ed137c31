"""Every registered simulator (the built-in ones and the test suite's ``reach2d``) honours the seam."""

from __future__ import annotations

import argparse

import numpy as np
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


def test_asking_for_more_closed_loop_episodes_than_the_split_has_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """`eval --episodes 500` on a split with 3 replayable demonstrations runs 3 and says so, once."""
    from vla_align.sim.babyai.rollout import HeldOut, episode_specs

    held = HeldOut(
        "datasets/tiny",
        np.array([11, 12, -1, 14], dtype=np.int64),
        ["BabyAI-GoToLocal-v0"] * 4,
        ["go to the red ball", "go to a key", "go to the box", "go to the grey ball"],
        np.array([True, True, True, True]),
        np.array([5, 6, 7, 8], dtype=np.int64),
    )
    specs = episode_specs(held, 500, seed=0)
    assert [s.seed for s in specs] == [11, 12, 14]
    err = capsys.readouterr().err
    assert "500 closed-loop episodes asked for" in err and "running 3" in err
    assert len(episode_specs(held, 500, seed=0, ablation="shuffle_text")) == 3
    assert "asked for" not in capsys.readouterr().err  # once per evaluation, not per ablation
    episode_specs(held, 2, seed=0)
    assert "asked for" not in capsys.readouterr().err
