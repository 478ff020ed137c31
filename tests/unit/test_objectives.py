"""The auxiliary objectives: cycle, tri-modal consistency, paraphrases, modality dropout and balance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.synthetic import write_synthetic
from tests.unit.test_model import SPECS, make_batch

from vla_align.cli import main
from vla_align.data.paraphrase import Paraphraser, rewrite
from vla_align.errors import ConfigError
from vla_align.losses.consistency import action_kl, modality_balance, paraphrase_consistency
from vla_align.losses.cycle import CycleConfig, CycleLoss, trimodal_consistency
from vla_align.losses.objective import LossConfig
from vla_align.model import blank_modalities
from vla_align.policy import PolicyConfig
from vla_align.presets import get_preset


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def test_trimodal_equals_the_naive_centroid_spread() -> None:
    zv, zl, za = unit(5, 8, seed=1), unit(5, 8, seed=2), unit(5, 8, seed=3)
    expected = 0.0
    for i in range(5):
        c = (zv[i] + zl[i] + za[i]) / 3
        expected += sum(float(((z[i] - c) ** 2).sum()) for z in (zv, zl, za)) / 3
    assert float(trimodal_consistency(zv, zl, za)) == pytest.approx(expected / 5, abs=1e-12)
    # identity: spread around the centroid = mean pairwise squared distance / 3
    pairwise = sum(float(((a - b) ** 2).sum(-1).mean()) for a, b in ((zv, zl), (zv, za), (zl, za)))
    assert float(trimodal_consistency(zv, zl, za)) == pytest.approx(pairwise / 9, abs=1e-12)
    assert float(trimodal_consistency(zv, zv, zv)) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("distance", ["cosine", "infonce"])
def test_cycle_is_bounded_below_and_trains_heads_and_embeddings(distance: str) -> None:
    torch.manual_seed(0)
    loss = CycleLoss(CycleConfig(weight=0.2, distance=distance, hidden=16), dim=8)  # type: ignore[arg-type]
    zv, zl, za = (unit(6, 8, seed=s).float().requires_grad_() for s in (1, 2, 3))
    value = loss(zv, zl, za)
    assert float(value.detach()) >= 0.0
    value.backward()
    for name, p in loss.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for z in (zv, zl, za):
        assert z.grad is not None and z.grad.abs().sum() > 0


def test_cycle_cosine_is_zero_for_perfect_bridges() -> None:
    loss = CycleLoss(CycleConfig(distance="cosine", hidden=16), dim=8)
    z = unit(4, 8).float()
    loss.g_vl.forward = lambda a, b: z  # type: ignore[method-assign]  # predicts z_A = z exactly
    loss.g_la.forward = lambda a, b: z  # type: ignore[method-assign]
    assert float(loss(z, unit(4, 8, seed=5).float(), z)) == pytest.approx(0.0, abs=1e-6)


def test_paraphrase_rewrite_changes_whole_phrases_deterministically() -> None:
    rng = np.random.default_rng(0)
    texts = ["go to the red ball", "pick up a blue key", "put the red ball next to the green box", "open the door"]
    for t in texts:
        out = rewrite(t, rng)
        assert out != t
        assert rewrite(t, np.random.default_rng(3)) == rewrite(t, np.random.default_rng(3))
    assert rewrite("theatre", rng) == "theatre"  # whole words only: no "the" inside a word
    assert rewrite("go to the box", np.random.default_rng(1)).endswith("box")


def test_paraphraser_prefers_the_datasets_instruction_sets() -> None:
    para = Paraphraser(["open the drawer", "pull the drawer open", "press the button"], ["d", "d", "b"])
    rng = np.random.default_rng(0)
    assert para(["open the drawer"], rng) == ["pull the drawer open"]
    assert para(["press the button"], rng) != ["press the button"]  # a single-member set -> templated rewrite


def test_paraphrase_consistency_is_low_when_the_paraphrase_matches() -> None:
    zl, za = unit(6, 8, seed=1).float(), unit(6, 8, seed=2).float()
    scale = torch.tensor(10.0)
    same = paraphrase_consistency(zl, zl, zl, scale)
    other = paraphrase_consistency(unit(6, 8, seed=9).float(), zl, za, scale)
    assert float(same) < float(other)


def test_modality_balance_hinge() -> None:
    full = torch.tensor([[[4.0, 0.0, 0.0]]]).repeat(3, 1, 1)
    ignored = full.clone()  # removing this modality changes nothing: KL 0
    used = torch.tensor([[[0.0, 4.0, 0.0]]]).repeat(3, 1, 1)
    loss, kls = modality_balance(full, {"image": used, "text": ignored}, margin=0.5)
    assert float(kls["text"]) == pytest.approx(0.0, abs=1e-7)
    assert float(kls["image"]) > 0.5
    assert float(loss) == pytest.approx(0.5, abs=1e-6)  # only the ignored modality is penalised
    p, q = F.softmax(full, -1), F.softmax(used, -1)
    assert float(action_kl(full, used)) == pytest.approx(float((p * (p / q).log()).sum(-1).mean()), rel=1e-6)


def test_blank_modalities_zeroes_only_the_chosen_inputs() -> None:
    cfg = get_preset("tiny")
    cfg.model.policy = PolicyConfig(enabled=True, fusion="xattn", hidden=32)
    model = cfg.model.build(SPECS["discrete"])
    out = model.forward_train(make_batch(SPECS["discrete"]), (), policy=True)
    assert out.policy_inputs is not None
    x = blank_modalities(out.policy_inputs, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert x.tokens is not None and out.policy_inputs.tokens is not None
    assert (
        torch.all(x.patches[1] == 0)
        and torch.all(x.image[4] == 0)
        and torch.equal(x.text[1], out.policy_inputs.text[1])
    )
    assert (
        torch.all(x.text[2] == 0)
        and torch.all(x.tokens[5] == 0)
        and torch.equal(x.image[2], out.policy_inputs.image[2])
    )
    assert torch.equal(x.patches[0], out.policy_inputs.patches[0])


def test_loss_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"loss\.modality_dropout"):
        LossConfig(modality_dropout=1.0)
    with pytest.raises(ConfigError, match=r"loss\.cycle\.weight"):
        CycleConfig(weight=-1)


def test_training_with_every_objective_logs_each_term_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_synthetic(tmp_path / "ds", n_train=40, n_val=8, n_test=8)
    flags = ["--preset", "tiny", "--data", str(data), "--train.steps", "10", "--model.policy.enabled", "true"]
    flags += ["--loss.cycle.weight", "0.2", "--loss.trimodal", "0.1", "--loss.paraphrase", "0.5"]
    flags += ["--loss.modality-dropout", "0.2", "--loss.modality-balance", "0.1"]
    assert main(["train", *flags, "--out", str(tmp_path / "full")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    last = lines[-1]
    for term in ("cycle", "trimodal", "paraphrase", "modality_balance", "policy", "image_text"):
        assert np.isfinite(last[f"loss/{term}"]), term
    assert {"modality/kl/image", "modality/kl/text"} <= set(last)
    # a run stopped at step 5 and resumed equals the uninterrupted one (the heads' state is saved)
    from safetensors.torch import load_file
    from tests.integration.test_balancer_training import interrupted_then_resumed

    half = tmp_path / "half"
    interrupted_then_resumed(["train", *flags], half, monkeypatch)
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(half / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_continuous_objectives_train_and_log(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "ds", n_train=24, n_val=4, n_test=4, continuous=True, lengths=(20, 40))
    flags = ["--preset", "tiny", "--data", str(data), "--train.steps", "6", "--train.log-every", "3"]
    flags += ["--loss.spectral.weight", "0.5", "--loss.spectral.window", "16", "--loss.spectral.windows", "2"]
    flags += ["--loss.spectral.recon-weight", "1", "--loss.physics.feasibility-weight", "1"]
    flags += ["--loss.physics.distill-weight", "0.5"]
    assert main(["train", *flags, "--out", str(tmp_path / "run")]) == 0
    last = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    for term in ("spectral", "spectral_recon", "feasibility", "distill"):
        assert np.isfinite(last[f"loss/{term}"]), term
    assert 0.0 <= last["health/coherence/image_action"] <= 1.0


def test_continuous_only_objectives_refuse_discrete_data(tmp_path: Path) -> None:
    data = write_synthetic(tmp_path / "ds", n_train=8, n_val=4, n_test=4)
    flags = ["--preset", "tiny", "--data", str(data), "--train.steps", "2", "--out", str(tmp_path / "run")]
    assert main(["train", *flags, "--loss.physics.distill-weight", "0.5"]) == 2
    assert main(["train", *flags, "--loss.spectral.weight", "0.5"]) == 2  # episodes shorter than the window
