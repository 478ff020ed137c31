"""Fusion modules and the policy head: shapes, gradients, the frozen-encoder stage, the masked loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.synthetic import write_synthetic
from tests.unit.test_model import SPECS, make_batch

from vla_align.data.lerobot import read_dataset
from vla_align.data.windows import ChunkSampler
from vla_align.errors import ConfigError
from vla_align.fusion import FUSIONS
from vla_align.policy import PolicyConfig
from vla_align.presets import get_preset


def policy_model(fusion: str, chunk: int = 1):  # type: ignore[no-untyped-def]
    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True, fusion=fusion, hidden=32, chunk=chunk)  # type: ignore[arg-type]
    return cfg.model.build(SPECS["discrete"])


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_every_policy_parameter_gets_a_gradient(fusion: str) -> None:
    model = policy_model(fusion, chunk=3)
    batch = make_batch(SPECS["discrete"])
    batch.prev_action = torch.tensor([-1, 0, 1, 2, 3, 4])
    _emb, logits = model.run(batch, ("image", "text"), policy=True)
    assert logits is not None and logits.shape == (6, 3, 7)
    assert model.policy is not None
    loss = model.policy.loss(logits, batch.action, batch.action_mask)
    loss.backward()
    for name, p in model.policy.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the policy's loss reaches the encoders when they are not frozen
    assert model.image_encoder.conv[0].weight.grad is not None


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_frozen_stage_keeps_policy_gradients_out_of_the_encoders(fusion: str) -> None:
    model = policy_model(fusion)
    batch = make_batch(SPECS["discrete"])
    _, logits = model.run(batch, (), policy=True, detach_policy_inputs=True)
    assert logits is not None and model.policy is not None
    model.policy.loss(logits, batch.action, batch.action_mask).backward()
    for name, p in model.named_parameters():
        if name.startswith(("image_encoder.", "text_encoder.")):
            assert p.grad is None or p.grad.abs().sum() == 0, name


def test_policy_loss_is_masked_cross_entropy() -> None:
    model = policy_model("late", chunk=4)
    assert model.policy is not None
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, 7, generator=g)
    action = torch.randint(0, 7, (5, 8), generator=g)
    mask = torch.ones(5, 8, dtype=torch.bool)
    mask[0, 2:] = False
    mask[3, 1:] = False
    total, count = 0.0, 0
    for b in range(5):
        for t in range(4):
            if mask[b, t]:
                total += float(F.cross_entropy(logits[b, t][None], action[b, t][None]))
                count += 1
    torch.testing.assert_close(model.policy.loss(logits, action, mask), torch.tensor(total / count))


def test_act_logits_matches_the_training_path_and_batch_independence() -> None:
    model = policy_model("xattn", chunk=2).eval()
    batch = make_batch(SPECS["discrete"])
    batch.prev_action = torch.tensor([-1, 0, 1, 2, 3, 4])
    _, logits = model.run(batch, (), policy=True)
    assert logits is not None
    acted = model.act_logits(batch.image, batch.text, batch.prev_action)
    torch.testing.assert_close(acted, logits.detach())
    one = model.act_logits(batch.image[2:3], batch.text[2:3], batch.prev_action[2:3])
    torch.testing.assert_close(one, acted[2:3], atol=1e-5, rtol=1e-5)  # no batch statistics anywhere


def test_policy_config_errors_say_what_to_change() -> None:
    with pytest.raises(ConfigError, match="fusion"):
        PolicyConfig(fusion="concat")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="execute"):
        PolicyConfig(chunk=2, execute=3)
    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True)
    assert type(cfg.model.build(SPECS["continuous"]).policy).__name__ == "ContinuousPolicy"
    cfg.model.policy = PolicyConfig(enabled=True, chunk=cfg.model.action.chunk_len + 1)
    with pytest.raises(ConfigError, match="chunk_len"):
        cfg.model.build(SPECS["continuous"])
    with pytest.raises(ConfigError, match="normalize"):
        PolicyConfig(normalize="zscore")  # type: ignore[arg-type]


def test_sampler_history_lists_previous_actions_most_recent_first(tmp_path: Path) -> None:
    table = read_dataset(write_synthetic(tmp_path / "ds"), split="train")
    sampler = ChunkSampler(table, chunk_len=4, history=3)
    rows = np.arange(table.num_frames)
    prev = sampler.batch(rows).prev_action.numpy()  # (F, 3)
    assert prev.shape == (table.num_frames, 3)
    for r in rows:  # naive: walk back inside the episode
        t = int(sampler.frame_in_episode[r])
        expected = [int(table.actions[r - k]) if t >= k else -1 for k in (1, 2, 3)]
        assert prev[r].tolist() == expected


def test_history_changes_the_policy_input_and_old_callers_still_work() -> None:
    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True, fusion="late", hidden=32, history=3)
    model = cfg.model.build(SPECS["discrete"]).eval()
    batch = make_batch(SPECS["discrete"])
    recent = torch.tensor([[0, 1, 2]] * 6)
    older = torch.tensor([[0, 1, 5]] * 6)  # differs only three steps back
    a = model.act_logits(batch.image, batch.text, recent)
    b = model.act_logits(batch.image, batch.text, older)
    assert not torch.allclose(a, b)
    # a (B,) previous action is read as h = 1 with the older steps unknown
    short = model.act_logits(batch.image, batch.text, torch.tensor([0] * 6))
    padded = model.act_logits(batch.image, batch.text, torch.tensor([[0, -1, -1]] * 6))
    torch.testing.assert_close(short, padded)


def test_selection_rules() -> None:
    from vla_align.selection import SelectionConfig, selection_score

    mean, gated = SelectionConfig(), SelectionConfig(rule="gated", min_retrieval=0.7)
    assert selection_score(0.8, 0.9, mean) == pytest.approx(0.85)
    assert selection_score(0.6, None, gated) == 0.6  # no simulator: retrieval alone
    # gated: success decides among checks above the gate; any check above beats every check below
    above = [selection_score(r, s, gated) for r, s in ((0.71, 0.97), (0.82, 0.96))]
    below = selection_score(0.69, 0.99, gated)
    assert above[0] > above[1] > below
    assert selection_score(0.60, 0.99, gated) > selection_score(0.69, 0.5, gated)  # all below: the mean rule


def test_history_dropout_trains_and_is_validated(tmp_path: Path) -> None:
    from vla_align.cli import main

    with pytest.raises(ConfigError, match="history_dropout"):
        PolicyConfig(history_dropout=1.0)
    data = write_synthetic(tmp_path / "ds", n_train=16, n_val=4, n_test=4)
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--train.steps", "4"]
    args += ["--model.policy.enabled", "true", "--model.policy.history", "3", "--model.policy.history-dropout", "0.5"]
    assert main(args) == 0
