"""Meta-World task names and instruction sets (no simulator needed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vla_align.data.paraphrase import Paraphraser
from vla_align.errors import UserError
from vla_align.sim.metaworld.env import MT10_TASKS, MT50_TASKS, make_env, resolve_tasks
from vla_align.sim.metaworld.instructions import INSTRUCTIONS, instruction_for, instructions_for


def test_every_mt50_task_has_three_distinct_instructions() -> None:
    assert len(MT50_TASKS) == len(set(MT50_TASKS)) == 50 and set(MT10_TASKS) <= set(MT50_TASKS)
    assert set(INSTRUCTIONS) == set(MT50_TASKS)
    for task in MT50_TASKS:
        texts = instructions_for(task)
        assert len(set(texts)) == len(texts) >= 3, task
        assert all(t == t.strip() and t and t == t.lower() and not t.endswith(".") for t in texts), task
    # one instruction names one task: a set never shares a sentence with another set
    every = [t for texts in INSTRUCTIONS.values() for t in texts]
    assert len(every) == len(set(every))


def test_instruction_draw_is_deterministic_and_uses_the_whole_set() -> None:
    for task in ("drawer-open-v3", "reach-v3"):
        drawn = [instruction_for(task, seed) for seed in range(200)]
        assert drawn == [instruction_for(task, seed) for seed in range(200)]
        assert set(drawn) == set(INSTRUCTIONS[task])
    with pytest.raises(UserError, match="no instructions"):
        instruction_for("drawer-open-v2", 0)


def test_paraphrases_come_from_the_task_set() -> None:
    texts = INSTRUCTIONS["drawer-open-v3"][:2] + INSTRUCTIONS["door-open-v3"][:1]
    sets = ["drawer-open-v3", "drawer-open-v3", "door-open-v3"]
    out = Paraphraser(texts, sets)(texts, np.random.default_rng(0))
    assert out[0] == texts[1] and out[1] == texts[0]


def test_resolve_tasks() -> None:
    assert resolve_tasks("mt10") == MT10_TASKS and resolve_tasks(["MT50"]) == MT50_TASKS
    assert resolve_tasks(["drawer-open", "reach-v3,drawer-open-v3", "mt10"])[:3] == [
        "drawer-open-v3",
        "reach-v3",
        "push-v3",
    ]
    assert len(resolve_tasks(["mt10", "mt50"])) == 50
    with pytest.raises(UserError, match="did you mean pick-place"):
        resolve_tasks(["pick-plce"])
    with pytest.raises(UserError, match="at least one"):
        resolve_tasks([" , "])


def test_missing_extra_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "metaworld.env_dict", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"pip install 'vla-align\[metaworld\]'"):
        make_env("reach")
