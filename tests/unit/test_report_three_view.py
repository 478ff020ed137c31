"""Three-view panels: limits catch an injected jolt and nothing else, the coherence view is right on known
signals, and the figure renders (criterion 4 of the report issue, on a synthetic continuous trajectory)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from vla_align.physics import PhysicalLimits
from vla_align.report import build_three_view, episode_coherence, synthetic_three_view
from vla_align.report.figures import three_view_figure


def test_synthetic_jolt_is_flagged_and_only_around_it() -> None:
    view = synthetic_three_view()
    steps = view.violation_steps
    flagged = sorted({s for v in steps.values() for s in v})
    assert flagged, "the injected jolt must break a limit"
    assert all(58 <= s <= 66 for s in flagged), flagged  # jerk reaches 3 steps past the jolt
    assert steps["jerk"]  # a 5 cm step at 10 Hz is a jerk spike
    assert view.limits is not None and view.derivatives["jerk"].shape == (len(view.signal) - 3, 2)
    assert view.band_coherence is not None and 0.0 <= view.band_coherence <= 1.0


def test_flags_match_a_naive_check() -> None:
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=(40, 3)), axis=0)
    limits = PhysicalLimits(velocity=[2.0] * 3, acceleration=[3.0] * 3, jerk=[5.0] * 3, dt=0.5)
    view = build_three_view("t", np.zeros((8, 8, 3), np.uint8), x, ["a", "b", "c"], 0.5, limits)
    d = x
    for k, name in enumerate(("velocity", "acceleration", "jerk"), start=1):
        d = np.diff(d, axis=0) / 0.5
        naive = np.zeros(40, dtype=bool)
        naive[k:] = (np.abs(d) > getattr(limits, name)[0]).any(1)
        np.testing.assert_array_equal(view.flags[name], naive, err_msg=name)


def test_coherence_of_a_signal_with_itself_is_one_and_short_episodes_get_none() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 3))
    freqs, gamma, band, mean = episode_coherence(2.0 * a + 1.0, a, fs=10.0) or (None, None, None, None)
    assert gamma is not None and np.allclose(gamma, 1.0, atol=1e-6) and mean == pytest.approx(1.0, abs=1e-6)
    assert band is not None and band[0] > 0 and freqs is not None
    assert episode_coherence(a[:8], a[:8], fs=10.0) is None
    assert episode_coherence(np.ones((64, 2)), a[:, :2], fs=10.0) is None  # nothing varies in v


def test_three_view_figure_is_a_png() -> None:
    uri = three_view_figure(synthetic_three_view())
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("fusion", ["xattn", "film"])
def test_attention_heat_uses_cross_attention_when_the_fusion_has_it(fusion: str) -> None:
    import torch

    from vla_align.data.episode import ActionSpec
    from vla_align.policy import PolicyConfig
    from vla_align.presets import get_preset
    from vla_align.sim.babyai.failures import attention_heat

    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True, fusion=fusion, hidden=32, history=2)
    torch.manual_seed(0)
    model = cfg.model.build(ActionSpec(kind="discrete", num_actions=7)).eval()
    frame = np.random.default_rng(0).integers(0, 255, size=(28, 28, 3), dtype=np.uint8)
    heat, how = attention_heat(model, frame, "go to the red ball", [2, -1])
    assert heat.shape == (28, 28) and heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6
    assert ("cross-attention" in how) == (fusion == "xattn")
