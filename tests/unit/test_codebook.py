"""The shared VQ codebook (chapter 5.5): assignment, straight-through, EMA, restarts, metrics, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.reference import nearest_code_reference
from tests.synthetic import write_synthetic
from tests.unit.test_model import SPECS, make_batch

from vla_align.cli import main
from vla_align.codebook import CodebookConfig, SharedCodebook, agreement, agreement_loss, perplexity, usage
from vla_align.errors import ConfigError
from vla_align.losses.auxiliary import Codebook, Context
from vla_align.losses.objective import LossConfig
from vla_align.modalities import Embeddings
from vla_align.model import ModelOutput
from vla_align.presets import get_preset


def test_nearest_code_matches_the_naive_loop() -> None:
    book = SharedCodebook(CodebookConfig(codes=16), dim=8, seed=3)
    z = torch.randn(20, 8, generator=torch.Generator().manual_seed(1)) * 3  # not unit-norm: cosine decides
    _, ids, _ = book.quantize(z, update=False)
    assert ids.tolist() == nearest_code_reference(z.tolist(), book.codes.tolist())
    assert book.assign(z)[0].tolist() == ids.tolist()


@pytest.mark.parametrize("ema", [True, False])
def test_straight_through_gradient_reaches_the_input(ema: bool) -> None:
    book = SharedCodebook(CodebookConfig(codes=8, ema=ema), dim=4)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    z_q, ids, losses = book.quantize(z, update=False)
    torch.testing.assert_close(z_q.detach(), book.codes[ids])  # forward value: the codes
    (z_q * w).sum().backward()
    z2 = z.detach().clone().requires_grad_()
    (F.normalize(z2, dim=-1) * w).sum().backward()  # backward: identity through the quantizer
    assert z.grad is not None and z2.grad is not None
    torch.testing.assert_close(z.grad, z2.grad)
    if not ema:  # learned codes: the codebook loss moves them
        assert book.weight is not None
        losses["codebook"].backward()
        assert book.weight.grad is not None and book.weight.grad.abs().sum() > 0
    else:
        assert float(losses["codebook"]) == 0.0


def test_ema_update_matches_a_hand_computation() -> None:
    book = SharedCodebook(CodebookConfig(codes=2, decay=0.5), dim=2)
    eye = torch.eye(2)
    book.embed.copy_(eye)
    book.ema_sum.copy_(eye)
    book.ema_count.fill_(1.0)
    z = torch.tensor([[0.6, 0.8], [0.8, 0.6], [1.0, 0.0]])  # -> codes 1, 0, 0
    _, ids, losses = book.quantize(z, update=True)
    assert ids.tolist() == [1, 0, 0]
    # commitment: ||z - e||² = 0.4, 0.4, 0
    assert float(losses["commit"]) == pytest.approx(0.8 / 3, abs=1e-6)
    # n = 0.5·[1, 1] + 0.5·[2, 1];  m_0 = 0.5·[1, 0] + 0.5·([.8, .6] + [1, 0]);  m_1 = 0.5·[0, 1] + 0.5·[.6, .8]
    torch.testing.assert_close(book.ema_count, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(book.ema_sum, torch.tensor([[1.4, 0.3], [0.3, 0.9]]))
    torch.testing.assert_close(book.embed, torch.tensor([[1.4 / 1.5, 0.3 / 1.5], [0.3, 0.9]]))
    assert int(book.updates) == 1 and book.unused.tolist() == [0, 0]
    # no update in eval mode or without gradients
    before = book.embed.clone()
    book.eval()
    book.quantize(z)
    book.train()
    with torch.no_grad():
        book.quantize(z)
    assert torch.equal(book.embed, before)


def test_dead_codes_restart_on_batch_vectors_deterministically() -> None:
    cfg = CodebookConfig(codes=4, restart_after=2)
    z = F.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    books = [SharedCodebook(cfg, dim=3) for _ in range(2)]
    for book in books:
        with torch.no_grad():
            book.embed.copy_(torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]]))
            book.ema_sum.copy_(book.embed)
        z_near = F.normalize(z.abs() + torch.tensor([5.0, 0, 0]), dim=-1)  # all nearest to code 0
        book.quantize(z_near, update=True)
        assert book.unused.tolist() == [0, 1, 1, 1]
        book.quantize(z_near, update=True)  # second unused update: codes 1..3 restart
        assert book.unused.tolist() == [0, 0, 0, 0]
        for k in (1, 2, 3):
            assert any(torch.allclose(book.embed[k], v) for v in z_near), k
    assert torch.equal(books[0].embed, books[1].embed)


def test_perplexity_usage_and_agreement() -> None:
    k = 8
    uniform = torch.arange(k).repeat(3)
    assert float(perplexity(uniform, k)) == pytest.approx(k)
    assert float(perplexity(torch.zeros(10, dtype=torch.long), k)) == pytest.approx(1.0)
    assert usage(uniform, k) == 1.0 and usage(torch.tensor([2, 2, 5]), k) == 0.25
    assert agreement(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75


def test_agreement_loss_is_zero_for_equal_assignments_and_pulls_partners_together() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 6, generator=g).log_softmax(-1)
    assert float(agreement_loss(a, a)) == pytest.approx(0.0, abs=1e-7)
    b = torch.randn(4, 6, generator=g).requires_grad_()
    loss = agreement_loss(a, b.log_softmax(-1))
    p_a, q_b = a.exp(), b.log_softmax(-1)
    expected = 0.5 * ((p_a * (a - q_b)).sum(-1) + (q_b.exp() * (q_b - a)).sum(-1)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    loss.backward()
    assert b.grad is not None and b.grad.abs().sum() > 0  # a is a constant target here


def codebook_objective(**kwargs: object) -> tuple[Codebook, torch.nn.Module]:
    model = get_preset("tiny").model.build(SPECS["discrete"])
    cfg = LossConfig(codebook=CodebookConfig(weight=0.1, codes=8, **kwargs))  # type: ignore[arg-type]
    return Codebook(cfg, model), model


def test_objective_terms_weights_and_agreement_of_identical_embeddings() -> None:
    objective, model = codebook_objective()
    z = F.normalize(torch.randn(6, 32, generator=torch.Generator().manual_seed(7)), dim=-1).requires_grad_()
    ctx = Context(
        model=model,  # type: ignore[arg-type]
        batch=make_batch(SPECS["discrete"]),
        out=ModelOutput(emb=Embeddings(image=z, text=z, action=z)),
        step=0,
        rng=np.random.default_rng(0),
    )
    terms = objective(ctx)
    assert set(terms) == {"vq_commit", "vq_agreement"}
    assert objective.weights() == pytest.approx({"vq_commit": 0.1 * 0.25, "vq_agreement": 0.1})
    assert float(terms["vq_agreement"].detach()) == pytest.approx(0.0, abs=1e-6)
    m = objective.last_metrics
    for pair in ("image_text", "image_action", "text_action", "all"):
        assert m[f"codebook/agreement/{pair}"] == 1.0
    assert 1.0 <= m["codebook/perplexity/image"] <= 6.0 and 0 < m["codebook/usage/text"] <= 1.0
    terms["vq_commit"].backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # only the modalities present are quantized; learned codes add the codebook term
    objective, model = codebook_objective(ema=False)
    ctx.out = ModelOutput(emb=Embeddings(image=z.detach(), text=z.detach()))
    terms = objective(ctx)
    assert set(terms) == {"vq_commit", "vq_codebook", "vq_agreement"}
    assert set(objective.last_metrics) == {
        "codebook/perplexity/image",
        "codebook/perplexity/text",
        "codebook/usage/image",
        "codebook/usage/text",
        "codebook/agreement/image_text",
    }


def test_config_rejects_bad_values() -> None:
    for field, value in (("weight", -1), ("codes", 1), ("beta", -0.1), ("decay", 1.0), ("restart_after", -1)):
        with pytest.raises(ConfigError, match=rf"loss\.codebook\.{field}"):
            CodebookConfig(**{field: value})  # type: ignore[arg-type]


def test_codebook_trains_logs_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file
    from tests.integration.test_balancer_training import interrupted_then_resumed

    from vla_align import checkpoint

    data = write_synthetic(tmp_path / "ds", n_train=24, n_val=4, n_test=4)
    flags = ["train", "--preset", "tiny", "--data", str(data), "--train.steps", "6", "--train.log-every", "3"]
    flags += ["--loss.codebook.weight", "0.1", "--loss.codebook.codes", "16", "--loss.codebook.restart-after", "2"]
    assert main([*flags, "--out", str(tmp_path / "full")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in lines if "loss/total" in r][-1]
    for key in ("loss/vq_commit", "loss/vq_agreement", "codebook/perplexity/action", "codebook/agreement/image_text"):
        assert np.isfinite(last[key]), key
    half = tmp_path / "half"
    interrupted_then_resumed(flags, half, monkeypatch, at=3)
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(half / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    aux_a = checkpoint.load_train_state(tmp_path / "full" / "checkpoint")
    aux_b = checkpoint.load_train_state(half / "checkpoint")
    assert aux_a is not None and aux_b is not None
    buffers = {k for k in aux_a["aux"] if ".codebook." in k}
    assert {"objectives.codebook.codebook.embed", "objectives.codebook.codebook.updates"} <= buffers
    assert all(torch.equal(aux_a["aux"][k], aux_b["aux"][k]) for k in buffers)
    assert int(aux_b["aux"]["objectives.codebook.codebook.updates"]) == 6
