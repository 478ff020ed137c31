"""ActionNormalizer: fitted statistics, the three modes, round trips, checkpoints, constant dimensions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vla_align.data.lerobot_stats import to_lists, vector_stats
from vla_align.data.normalizer import STAT_KEYS, ActionNormalizer
from vla_align.errors import ConfigError, DatasetError

MODES = ("mean_std", "min_max", "percentile")


def _actions(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * np.array([0.1, 2.0, 30.0, 1.0]) + np.array([0.0, -1.0, 100.0, 0.5])
    x[:, 3] = 0.25  # a constant dimension (a gripper that never moves)
    return x


@pytest.mark.parametrize("mode", MODES)
def test_round_trip_and_constant_dimension(mode: str) -> None:
    x = _actions()
    norm = ActionNormalizer.fit(x, mode=mode)  # type: ignore[arg-type]
    t = torch.from_numpy(x)
    y = norm.normalize(t)
    assert y.dtype == torch.float64 and torch.isfinite(y).all()
    assert torch.allclose(norm.unnormalize(y), t, rtol=1e-6, atol=1e-6)
    assert torch.equal(y[:, 3], torch.zeros(len(x), dtype=torch.float64))  # constant dim -> exactly 0
    assert torch.allclose(norm.unnormalize(torch.zeros(1, 4))[0, 3], torch.tensor(0.25))
    z = torch.randn(3, 8, 4)  # any (..., A), float32
    assert torch.allclose(norm.normalize(norm.unnormalize(z)), z, atol=1e-4)


def test_modes_map_the_training_data_as_documented() -> None:
    x = _actions()
    t = torch.from_numpy(x)[:, :3]
    y = ActionNormalizer.fit(x, "mean_std").normalize(torch.from_numpy(x))[:, :3]
    assert torch.allclose(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(y.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5)
    y = ActionNormalizer.fit(x, "min_max").normalize(torch.from_numpy(x))[:, :3]
    assert torch.allclose(y.amin(0), -torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(y.amax(0), torch.ones(3, dtype=torch.float64), atol=1e-5)
    norm = ActionNormalizer.fit(x, "percentile")
    q = torch.from_numpy(np.percentile(x, [1, 99], axis=0))  # (2, 4)
    yq = norm.normalize(q)[:, :3]
    assert torch.allclose(yq, torch.tensor([[-1.0] * 3, [1.0] * 3], dtype=torch.float64), atol=1e-5)
    assert (t.min(0).values < q[0, :3]).all()  # percentiles sit inside min/max: training data exceeds ±1


def test_state_dict_round_trip_into_fresh_module(tmp_path: Path) -> None:
    norm = ActionNormalizer.fit(_actions(), mode="min_max", names=["x", "y", "z", "grip"], units=["m"] * 3 + ["1"])
    assert set(norm.state_dict()) == set(STAT_KEYS)
    path = tmp_path / "model.safetensors"
    save_file({f"normalizer.{k}": v for k, v in norm.state_dict().items()}, str(path))
    loaded = load_file(str(path))
    fresh = ActionNormalizer(**norm.meta())
    fresh.load_state_dict({k.removeprefix("normalizer."): v for k, v in loaded.items()})
    z = torch.randn(5, 4)
    assert torch.equal(fresh.normalize(z), norm.normalize(z))
    assert fresh.names == ["x", "y", "z", "grip"] and fresh.units[0] == "m"
    assert fresh.mode == "min_max"


def test_from_stats_reads_the_lerobot_layout_we_write() -> None:
    x = _actions()
    written = to_lists(vector_stats(x))  # what the writer puts in stats.json, quantiles included
    plain = {k: written[k] for k in ("mean", "std", "min", "max", "count")}  # a file without quantiles
    stats_json = {"action": plain, "timestamp": {"mean": [0.0], "std": [1.0], "min": [0.0], "max": [1.0]}}
    fitted = ActionNormalizer.fit(x, "mean_std")
    for source in (stats_json, stats_json["action"]):
        norm = ActionNormalizer.from_stats(source, key="action", mode="mean_std")
        for k in ("mean", "std", "min", "max"):
            assert torch.allclose(getattr(norm, k), getattr(fitted, k), atol=1e-5), k
        assert torch.equal(norm.q01, norm.min) and torch.equal(norm.q99, norm.max)  # no q01/q99 stored
    norm = ActionNormalizer.from_stats({"action": written}, mode="percentile")
    assert torch.allclose(norm.q01, torch.tensor(written["q01"], dtype=norm.q01.dtype))
    with_q = {**stats_json["action"], "q01": [-1.0, -2.0, -3.0, -4.0], "q99": [1.0, 2.0, 3.0, 4.0]}
    norm = ActionNormalizer.from_stats(with_q, mode="percentile")
    assert norm.q99.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_errors_say_what_to_change() -> None:
    with pytest.raises(DatasetError, match="no feature 'action'"):
        ActionNormalizer.from_stats({"observation.state": {"mean": [0.0]}})
    with pytest.raises(DatasetError, match="lacks std"):
        ActionNormalizer.from_stats({"action": {"mean": [0.0], "min": [0.0], "max": [1.0]}})
    with pytest.raises(DatasetError, match="different lengths"):
        ActionNormalizer.from_stats({"mean": [0.0, 1.0], "std": [1.0], "min": [0.0], "max": [1.0]})
    with pytest.raises(ConfigError, match="mode must be one of"):
        ActionNormalizer(3, mode="zscore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="units has 2 entries for 3"):
        ActionNormalizer(3, units=["m", "m"])
    with pytest.raises(DatasetError, match="NaN"):
        ActionNormalizer.fit(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"x must be \(\.\.\., 3\)"):
        ActionNormalizer(3).normalize(torch.zeros(2, 4))
