"""The report's honesty checks: indicators that do not apply to discrete / turn-based runs are "not
applicable" with the reason, pairs whose loss sits at chance (or whose MI bound is ≤ 0) are flagged and
pairs that learn are not, and Chinese reports draw Chinese figure labels in a CJK font."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vla_align.report import figures
from vla_align.report.build import ReportInputs, _health_verdicts, _read_history, render
from vla_align.report.flags import Applicability, applicability, pair_flags, tail_mean
from vla_align.report.text import TEXT

BABYAI = {"info": {"action_spec": {"kind": "discrete", "num_actions": 7}, "source": "babyai"}, "path": ""}
METAWORLD = {"info": {"action_spec": {"kind": "continuous", "dim": 4}, "control_fps": 10.0}, "path": ""}


def test_discrete_turn_based_run_scores_neither_spectral_indicator() -> None:
    scope = applicability({"dataset": BABYAI}, health_fps=1.0)
    assert scope == Applicability(discrete=True, fps=1.0) and scope.turn_based
    t = TEXT["en"]
    assert "discrete actions" in scope.coherence_reason(t) and "0.5 Hz" in scope.coherence_reason(t)
    assert "turn-based" in scope.offset_reason(t)
    verdicts = _health_verdicts({"health/coherence/band_average": 0.2, "health/offset_p50_ms": 500.0}, None, t, scope)
    coh, offset = verdicts[1], verdicts[2]
    assert coh["badge"] == offset["badge"] == "na" and coh["verdict"] == "not applicable"
    assert coh["value"] == "0.200" and "discrete actions" in coh["reason"]  # measured, shown, not scored
    assert "turn-based" in offset["reason"]


def test_discrete_run_without_a_known_rate_still_skips_coherence(tmp_path: Path) -> None:
    scope = applicability({"dataset": BABYAI})
    assert scope == Applicability(discrete=True, fps=None)
    assert scope.coherence_reason(TEXT["zh"]).startswith("离散动作") and scope.offset_reason(TEXT["zh"]) == ""
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_text(json.dumps({"fps": 1}))
    assert applicability({"dataset": {**BABYAI, "path": str(tmp_path)}}).fps == 1.0  # the dataset's own rate


@pytest.mark.parametrize(("coherence", "badge"), [(0.2, "fail"), (0.7, "pass")])
def test_continuous_run_is_scored(coherence: float, badge: str) -> None:
    scope = applicability({"dataset": METAWORLD})
    assert scope == Applicability(discrete=False, fps=10.0) and not scope.turn_based
    t = TEXT["en"]
    assert scope.coherence_reason(t) == scope.offset_reason(t) == ""
    verdicts = _health_verdicts({"health/coherence/band_average": coherence}, None, t, scope)
    assert verdicts[1]["badge"] == badge and verdicts[1]["reason"] == ""
    offset = verdicts[2]  # applies, but no value: grey, and it says "not measured", not "not applicable"
    assert offset["badge"] == "na" and offset["value"] == offset["verdict"] == "not measured"


def _history(path: Path, batch: int = 256, steps: int = 200) -> list[dict[str, Any]]:
    """A synthetic metrics.jsonl: text_action stays at log B, the other two pairs fall."""
    rng = np.random.default_rng(0)
    log_b = math.log(batch)
    with path.open("w") as f:
        for step in range(10, steps + 1, 10):
            record: dict[str, Any] = {"step": step, "loss/total": 1.0}
            for pair, loss in (
                ("image_text", log_b * math.exp(-step / 40) + 0.5),
                ("image_action", log_b * (1 - step / (1.5 * steps))),
                ("text_action", log_b + rng.normal(0, 0.02)),
            ):
                record[f"loss/{pair}"] = loss
                record[f"health/mi_bound/{pair}"] = log_b - loss
            f.write(json.dumps(record) + "\n")
    return _read_history(path)


def test_only_the_pair_at_chance_is_flagged(tmp_path: Path) -> None:
    history = _history(tmp_path / "metrics.jsonl")
    (flag,) = pair_flags(history, 256)
    assert flag.pair == "text_action" and "chance" in flag.reasons
    assert flag.log_b == pytest.approx(math.log(256))
    assert flag.loss is not None and abs(flag.loss - math.log(256)) < 0.05
    tail = [r["loss/image_action"] for r in history if r["step"] >= 200 - 0.1 * 190]
    assert tail_mean(history, "loss/image_action") == pytest.approx(sum(tail) / len(tail))


def test_mi_bound_at_or_below_zero_is_flagged(tmp_path: Path) -> None:
    history = _history(tmp_path / "metrics.jsonl")
    flags = {f.pair: f for f in pair_flags(history, None, {"image_text": 1.2, "image_action": -0.1})}
    assert set(flags) == {"image_action", "text_action"}  # no batch size: no chance check, the MI bounds decide
    assert flags["image_action"].reasons == ("mi_heldout",) and flags["image_action"].learning
    assert not flags["text_action"].learning
    assert "mi_train" in flags["text_action"].reasons or flags["text_action"].mi_train is None
    assert pair_flags([], 256) == []


def test_report_names_the_pair_at_chance_and_its_numbers(tmp_path: Path) -> None:
    history = _history(tmp_path / "metrics.jsonl", steps=60)
    config = {"train": {"batch_size": 256}, "dataset": BABYAI}
    html = render(ReportInputs(tmp_path, config, {}, history), "en")
    assert html.count('<tr class="fail" data-pair=') == 1 and 'data-pair="text_action"' in html
    assert "pair text_action" in html and "its loss is at chance" in html
    assert f"log B = {math.log(256):.2f}" in html and "0.95 · log B" in html and "last 10 %" in html
    assert "pair image_text" not in html and "pair image_action" not in html
    zh = render(ReportInputs(tmp_path, config, {}, history), "zh")
    assert "模态对 text_action" in zh and "未在学习" in zh and "不适用" in zh


def test_zh_figures_draw_chinese_labels_in_a_cjk_font(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib import font_manager, rcParams

    font = figures.cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (fonts-wqy-microhei)")
    drawn: list[Any] = []
    save = figures.to_uri

    def keep(fig: Any) -> str:
        drawn.append(fig)
        return save(fig)

    monkeypatch.setattr(figures, "to_uri", keep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph warns: it must not happen
        with figures.language("zh") as used:
            assert used == font and rcParams["font.sans-serif"][0] == font
            uri = figures.line_chart({"loss/a": [(1, 1.0), (2, 0.5)]}, figures.label("training_losses"), "nats")
            ax = drawn[0].axes[0]
            wanted = font_manager.findfont(font_manager.FontProperties(family=font))
            for text in (ax.title, ax.xaxis.label):  # the font the figure was saved with
                assert font_manager.findfont(text.get_fontproperties()) == wanted
    assert uri.startswith("data:image/png;base64,")
    assert ax.get_title() == "训练损失" and ax.get_xlabel() == "训练步"
    assert figures.label("step") == "step" and rcParams["font.sans-serif"][0] != font  # restored after


def test_zh_figures_fall_back_to_english_without_a_cjk_font(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(figures, "cjk_font", lambda: None)
    with figures.language("zh") as used:
        assert used is None and figures.label("step") == "step"
    html = render(ReportInputs(tmp_path, {"dataset": METAWORLD}, {}, []), "zh")
    assert TEXT["zh"]["figure_lang_no_cjk"] in html
    assert "no CJK font" in capsys.readouterr().err
