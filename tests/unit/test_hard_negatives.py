"""Semantic hard negatives (data.hard_negatives): the mined neighbour relation, the batch composition
(fraction, each hard row a neighbour of its anchor, determinism) and the unchanged default path."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from tests.synthetic import write_synthetic
from tests.unit.test_step import NAMED, load_benchmark_common

from vla_align.cli import main
from vla_align.data.hard_negatives import KINDS, HardNegativeConfig, HardNegatives, content_words
from vla_align.data.lerobot import FrameTable
from vla_align.data.windows import ChunkSampler
from vla_align.errors import ConfigError

TEXTS = [f"go to the {c} {o}" for c in ("red", "green", "blue", "grey") for o in ("ball", "box", "key")]
TEXTS += ["pick up the red ball", "pick up a blue key", "go to a red ball"]  # other verb; an article paraphrase


def table(episodes: int = 45, length: int = 6, texts: list[str] | None = None) -> FrameTable:
    result: FrameTable = load_benchmark_common().synthetic_table(NAMED, 28, episodes, length, 0, texts or TEXTS)
    return result


def neighbours(kind: str, anchor: str, other: str) -> bool:
    a, b = content_words(anchor), content_words(other)
    if a == b:
        return False
    if kind == "attribute":
        return len(a) == len(b) and a[0] == b[0] and sum(x != y for x, y in zip(a, b, strict=True)) == 1
    return a[0] == b[0]  # verb


def test_content_words_drop_articles_and_punctuation() -> None:
    assert content_words("Go to the red ball, then a key.") == ("go", "to", "red", "ball", "then", "key")


def test_mined_relation() -> None:
    t = table()
    hard = HardNegatives(t, ("attribute", "verb"))
    groups = {t.instructions[e]: e for e in range(t.num_episodes)}

    def texts_of(kind: int, instruction: str) -> set[str]:
        pools = hard.neighbours[kind][groups[instruction]]
        return {t.instructions[int(hard.row_episode[hard.pools[p][0]])] for p in pools}

    assert texts_of(0, "go to the red ball") == {
        *(f"go to the {c} ball" for c in ("green", "blue", "grey")),
        "go to the red box",
        "go to the red key",
    }  # not "go to a red ball" (the same words but the article), not "pick up the red ball" (another verb)
    assert texts_of(0, "pick up the red ball") == set()  # "pick up a blue key" is two words away
    assert texts_of(1, "pick up the red ball") == {"pick up a blue key"}
    assert len(texts_of(1, "go to the red ball")) == 11  # the other go-to instructions but its article twin


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_batch_composition_fraction_relation_and_determinism(fraction: float) -> None:
    t = table()
    cfg = HardNegativeConfig(fraction=fraction, kinds=("attribute", "verb"))
    sampler = ChunkSampler(t, 4, 1, cfg)
    batch_size = 32
    n_hard = round(fraction * batch_size)
    rows, where, kind = sampler.draw_with_hard(np.random.default_rng([0, 7]), batch_size)
    assert len(rows) == batch_size and len(where) == len(kind) == n_hard
    instruction = [t.instructions[int(e)] for e in sampler.row_episode[rows]]
    for i in range(n_hard):
        anchor, hard = instruction[int(where[i])], instruction[batch_size - n_hard + i]
        assert int(where[i]) < batch_size - n_hard
        assert hard != anchor and neighbours(KINDS[int(kind[i])], anchor, hard), (anchor, hard)
    assert set(kind.tolist()) == {0, 1}  # both kinds are drawn
    again = sampler.draw(np.random.default_rng([0, 7]), batch_size)
    assert np.array_equal(again, rows)
    assert not np.array_equal(sampler.draw(np.random.default_rng([0, 8]), batch_size), rows)
    batch = sampler.sample(np.random.default_rng([0, 7]), batch_size)
    assert batch.text == instruction and batch.text_group.tolist() == t.task_index[sampler.row_episode[rows]].tolist()


def test_off_draws_exactly_the_rows_it_always_drew() -> None:
    t = table()
    plain = ChunkSampler(t, 4, 1)
    off = ChunkSampler(t, 4, 1, HardNegativeConfig(fraction=0.0))
    assert off.hard is None
    for step in range(3):
        want = np.random.default_rng([0, step]).integers(0, t.num_frames, size=16)  # the sampler's old draw
        assert np.array_equal(plain.draw(np.random.default_rng([0, step]), 16), want)
        assert np.array_equal(off.draw(np.random.default_rng([0, step]), 16), want)
    weighted = dataclasses.replace(t, row_weight=np.linspace(0.0, 1.0, t.num_frames))
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(
        ChunkSampler(weighted, 4, 1, HardNegativeConfig()).draw(rng_a, 16), ChunkSampler(weighted, 4, 1).draw(rng_b, 16)
    )


def test_zero_weight_rows_are_never_hard_negatives() -> None:
    t = table()
    weight = np.ones(t.num_frames)
    weight[::2] = 0.0
    sampler = ChunkSampler(dataclasses.replace(t, row_weight=weight), 4, 1, HardNegativeConfig(fraction=0.5))
    for step in range(5):
        rows = sampler.draw(np.random.default_rng([1, step]), 20)
        assert np.all(weight[rows] > 0)


def test_scene_neighbours_share_env_task_and_seed() -> None:
    t = table(episodes=12, texts=["go to the red ball", "open the door", "go to the red ball"])
    seeds = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])  # episodes 2k and 2k+1 share a scene
    t = dataclasses.replace(t, seeds=seeds, env_tasks=["BabyAI-Level-v0"] * 12)
    sampler = ChunkSampler(t, 4, 1, HardNegativeConfig(fraction=0.5, kinds=("scene",)))
    rows, where, kind = sampler.draw_with_hard(np.random.default_rng(0), 24)
    episode = sampler.row_episode[rows]
    assert set(kind.tolist()) == {KINDS.index("scene")}
    for i in range(12):
        anchor, hard = int(episode[int(where[i])]), int(episode[12 + i])
        assert seeds[anchor] == seeds[hard] and t.instructions[anchor] != t.instructions[hard]


def test_no_neighbour_pair_warns_once_and_samples_plainly() -> None:
    t = table(episodes=6, texts=["stop", "wait"])  # one-word instructions, unique seeds: no pair of any kind
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampler = ChunkSampler(t, 4, 1, HardNegativeConfig(fraction=0.5, kinds=("attribute", "scene")))
    assert len(caught) == 1 and "no neighbour pair" in str(caught[0].message)
    assert "\n" not in str(caught[0].message)
    assert sampler.hard is None
    want = np.random.default_rng(5).integers(0, t.num_frames, size=8)
    assert np.array_equal(sampler.draw(np.random.default_rng(5), 8), want)


def test_config_rejects_bad_values() -> None:
    for kwargs in ({"fraction": 1.0}, {"fraction": -0.1}, {"kinds": ("colour",)}, {"kinds": ()}):
        with pytest.raises(ConfigError, match=r"data\.hard_negatives\."):
            HardNegativeConfig(**kwargs)  # type: ignore[arg-type]
    assert HardNegativeConfig(fraction=0.99).rows(4) == 3  # at least one anchor


def test_training_with_hard_negatives_from_the_command_line(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "ds", n_train=24, n_val=4, n_test=4)
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--train.steps", "2"]
    args += ["--data.hard-negatives.fraction", "0.25", "--data.hard-negatives.kinds", "attribute", "verb"]
    args += ["--loss.memory-bank.size", "16", "--train.batch-size", "8"]
    assert main(args) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["hard_negatives"] == {"fraction": 0.25, "kinds": ["attribute", "verb"]}
    assert saved["loss"]["memory_bank"]["size"] == 16
