"""The memory bank (loss.memory_bank): InfoNCE with queued columns against the loop reference, the FIFO
queue, the size check at setup, a skipped step putting the queue back, and an exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tests.reference import info_nce_memory_reference
from tests.synthetic import write_synthetic
from tests.unit.test_step import NAMED, memory_table, tiny_step

from vla_align import checkpoint
from vla_align.cli import main
from vla_align.data.windows import ChunkSampler
from vla_align.errors import ConfigError
from vla_align.losses import AlignmentLoss, LossConfig
from vla_align.losses.contrastive import group_positives, info_nce, info_nce_memory
from vla_align.losses.memory_bank import MemoryBankConfig, Queue
from vla_align.modalities import Batch, Embeddings
from vla_align.presets import get_preset
from vla_align.train import make_optimizer

B, QA, QB, D = 5, 4, 6, 3
GROUPS = [0, 1, 0, 2, 1]
QUEUE_GROUPS_A = [1, 3, 0, 2]
QUEUE_GROUPS_B = [2, 0, 0, 3, 1, 4]


def _unit(n: int, g: torch.Generator, grad: bool = True) -> torch.Tensor:
    return F.normalize(torch.randn(n, D, generator=g, dtype=torch.float64), dim=-1).requires_grad_(grad)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_loop_reference_and_gradients_reach_only_the_batch(shared: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    z_a, z_b = _unit(B, g), _unit(B, g)
    queue_a, queue_b = _unit(QA, g, grad=False), _unit(QB, g, grad=False)
    scale = torch.tensor(3.1, dtype=torch.float64, requires_grad=True)
    groups = torch.tensor(GROUPS)
    qa, qb = torch.tensor(QUEUE_GROUPS_A), torch.tensor(QUEUE_GROUPS_B)
    if shared:
        pos, pos_a, pos_b = group_positives(groups), group_positives(groups, qa), group_positives(groups, qb)
    else:
        pos, pos_a, pos_b = None, torch.zeros(B, QA, dtype=torch.bool), torch.zeros(B, QB, dtype=torch.bool)
    loss = info_nce_memory(z_a, z_b, scale, pos, queue_a, queue_b, pos_a, pos_b)
    ref = info_nce_memory_reference(z_a, z_b, scale, GROUPS, queue_a, queue_b, QUEUE_GROUPS_A, QUEUE_GROUPS_B, shared)
    assert loss.dtype == ref.dtype == torch.float64
    assert abs(loss.item() - ref.item()) < 1e-10
    got = torch.autograd.grad(loss, (z_a, z_b, scale))
    want = torch.autograd.grad(ref, (z_a, z_b, scale))
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
    # the queue is a constant: it takes no gradient even when asked to
    queue_a.requires_grad_(), queue_b.requires_grad_()
    loss = info_nce_memory(z_a, z_b, scale, pos, queue_a.detach(), queue_b.detach(), pos_a, pos_b)
    loss.backward()
    assert queue_a.grad is None and queue_b.grad is None
    assert z_a.grad is not None and z_b.grad is not None and float(z_a.grad.abs().sum()) > 0


def test_the_queue_changes_the_loss_and_empty_queues_give_plain_info_nce() -> None:
    g = torch.Generator().manual_seed(3)
    z_a, z_b = _unit(B, g), _unit(B, g)
    scale = torch.tensor(2.0, dtype=torch.float64)
    pos = group_positives(torch.tensor(GROUPS))
    empty = torch.zeros(0, D, dtype=torch.float64)
    none = torch.zeros(B, 0, dtype=torch.bool)
    plain = info_nce(z_a, z_b, scale, pos)
    assert abs(info_nce_memory(z_a, z_b, scale, pos, empty, empty, none, none).item() - plain.item()) < 1e-12
    queue = _unit(QB, g, grad=False)
    negatives = torch.zeros(B, QB, dtype=torch.bool)
    far = info_nce_memory(z_a, z_b, scale, pos, queue, queue, negatives, negatives)
    assert far.item() - plain.item() > 1e-3  # extra negatives raise the loss


def test_queue_is_a_fifo_ring_with_groups_and_ages() -> None:
    queue = Queue(size=5, dim=2)
    assert queue.entries(0, 0)[0].shape == (0, 2)
    for step in range(3):  # 3 + 3 + 3 rows into 5 slots
        z = torch.full((3, 2), float(step)).requires_grad_()
        queue.push(z, torch.tensor([10 * step, 10 * step + 1, 10 * step + 2]), step)
    assert int(queue.count) == 5 and int(queue.ptr) == 4
    emb, groups = queue.entries(2, 0)
    assert not emb.requires_grad
    # step 0 wrote slots 0-2, step 1 slots 3, 4, 0, step 2 slots 1-3
    assert emb[:, 0].tolist() == [1.0, 2.0, 2.0, 2.0, 1.0]
    assert groups.tolist() == [12, 20, 21, 22, 11]
    assert queue.entries(2, 1)[1].tolist() == [12, 20, 21, 22, 11]
    assert queue.entries(3, 1)[1].tolist() == [20, 21, 22]  # max_age 1 at step 3 drops step 1's rows
    queue.push(torch.zeros(7, 2), torch.arange(7), 3)  # more rows than slots: the last 5
    assert sorted(queue.entries(3, 0)[1].tolist()) == [2, 3, 4, 5, 6]


def test_alignment_loss_counts_same_instruction_entries_as_positives() -> None:
    """Against the reference through ``AlignmentLoss``: the text pairs share group positives with the queue,
    image_action (no text) treats every entry as a negative, like its in-batch rule."""
    g = torch.Generator().manual_seed(5)
    cfg = LossConfig(memory_bank=MemoryBankConfig(size=6))
    bank = cfg.memory_bank.build(D, ("image", "text", "action")).double()  # float64 queues for the 1e-10 check
    past = Embeddings(image=_unit(B, g, False), text=_unit(B, g, False), action=_unit(B, g, False))
    past_groups = torch.tensor([2, 0, 0, 3, 1])
    bank.enqueue(past, past_groups, step=0)
    emb = Embeddings(image=_unit(B, g), text=_unit(B, g), action=_unit(B, g))
    batch = Batch(
        image=torch.zeros(B, 4, 4, 3, dtype=torch.uint8),
        text=[""] * B,
        action=torch.zeros(B, 1, dtype=torch.long),
        action_mask=torch.ones(B, 1, dtype=torch.bool),
        text_group=torch.tensor(GROUPS),
        episode=torch.arange(B),
        frame=torch.zeros(B, dtype=torch.long),
        prev_action=torch.zeros(B, 1, dtype=torch.long),
        state=torch.empty(0, 0),
    )
    scale = torch.tensor(2.5, dtype=torch.float64)
    scales = {"image_text": scale, "image_action": scale, "text_action": scale}
    values = AlignmentLoss(cfg)(emb, batch, scales, 1, bank)  # type: ignore[arg-type]
    pg = past_groups.tolist()
    for pair, (a, b) in {"image_text": ("image", "text"), "image_action": ("image", "action")}.items():
        za, zb, qa, qb = emb.get(a), emb.get(b), past.get(a), past.get(b)  # type: ignore[arg-type]
        ref = info_nce_memory_reference(za, zb, scale, GROUPS, qa, qb, pg, pg, shared=pair == "image_text")
        assert abs(values[pair].item() - ref.item()) < 1e-10, pair


def test_a_bank_larger_than_the_training_split_is_refused_in_one_line() -> None:
    table = memory_table(NAMED)  # 8 episodes x 12 frames
    cfg = get_preset("tiny")
    cfg.loss.memory_bank.size = table.num_frames + 1
    with pytest.raises(ConfigError) as info:
        tiny_step(table, cfg)
    message = str(info.value)
    assert message == (
        f"loss.memory_bank.size {table.num_frames + 1} exceeds the {table.num_frames} training samples of "
        f"{table.root}; use at most {table.num_frames}"
    )
    cfg.loss.memory_bank.size = table.num_frames
    assert tiny_step(table, cfg).bank is not None


def test_config_rejects_bad_values() -> None:
    for kwargs in ({"size": -1}, {"max_age": -2}, {"pairs": ("image_depth",)}, {"pairs": ()}):
        with pytest.raises(ConfigError, match=r"loss\.memory_bank\."):
            MemoryBankConfig(**kwargs)  # type: ignore[arg-type]


def test_a_skipped_step_puts_the_queue_back() -> None:
    table = memory_table(NAMED)
    cfg = get_preset("tiny")
    cfg.loss.memory_bank.size = 40
    unit = tiny_step(table, cfg)
    assert unit.bank is not None
    optimizer = make_optimizer(unit.model, cfg.train, unit.aux)
    balancer = cfg.loss.balancer.build(unit.names)
    sampler = ChunkSampler(table, cfg.model.action.chunk_len, cfg.model.policy.history)
    for step in range(2):
        unit.apply(unit.compute_losses(unit.prepare_batch(sampler, step), step).weighted, optimizer, balancer, step)
    before = {k: v.clone() for k, v in unit.bank.state_dict().items()}
    saved = unit.save_buffers()
    weighted = unit.compute_losses(unit.prepare_batch(sampler, 2), 2).weighted
    assert any(not torch.equal(before[k], v) for k, v in unit.bank.state_dict().items())  # the step enqueued
    weighted["image_text"] = weighted["image_text"] * float("nan")
    assert unit.apply(weighted, optimizer, balancer, 2).skipped is not None
    unit.restore_buffers(saved)
    after = unit.bank.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_training_with_a_bank_logs_its_fill_and_resumes_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_balancer_training import interrupted_then_resumed

    data = write_synthetic(tmp_path / "ds", n_train=24, n_val=4, n_test=4)
    flags = ["train", "--preset", "tiny", "--data", str(data), "--train.steps", "6", "--train.log-every", "1"]
    flags += [
        "--train.batch-size",
        "8",
        "--loss.memory-bank.size",
        "20",
        "--loss.memory-bank.start-step",
        "2",
        "--loss.memory-bank.wait-warmup",
        "false",
    ]
    assert main([*flags, "--out", str(tmp_path / "full")]) == 0
    records = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    fills = [r["memory_bank/fill"] for r in records if "memory_bank/fill" in r]
    assert fills[:4] == [0.4, 0.8, 1.0, 1.0]
    half = tmp_path / "half"
    interrupted_then_resumed(flags, half, monkeypatch, at=3)
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(half / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_a = checkpoint.load_train_state(tmp_path / "full" / "checkpoint")
    state_b = checkpoint.load_train_state(half / "checkpoint")
    assert state_a is not None and state_b is not None
    bank_a, bank_b = state_a["memory_bank"], state_b["memory_bank"]
    assert set(bank_a) >= {"queues.image.emb", "queues.text.group", "queues.action.ptr", "queues.image.count"}
    assert all(torch.equal(bank_a[k], bank_b[k]) for k in bank_a)
    assert int(bank_a["queues.text.count"]) == 20 and int(bank_a["queues.text.ptr"]) == (6 * 8) % 20


def test_a_bank_larger_than_the_dataset_fails_the_cli_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_synthetic(tmp_path / "ds", n_train=4, n_val=2, n_test=2)
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--train.steps", "2"]
    assert main([*args, "--loss.memory-bank.size", "100000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("loss.memory_bank.size 100000 exceeds the" in line and "use at most" in line for line in err)


def test_the_bank_joins_after_the_warm_up_and_one_turn_by_default() -> None:
    cfg = MemoryBankConfig(size=4096)
    assert cfg.first_step(warmup_steps=100, batch_size=64) == 100
    assert cfg.first_step(warmup_steps=10, batch_size=64) == 64
    assert MemoryBankConfig(size=4096, wait_warmup=False).first_step(100, 64) == 0
    assert MemoryBankConfig(size=4096, start_step=300).first_step(100, 64) == 300
    bank = cfg.build(8, ("image", "text"), start=100)
    assert not bank.uses("image_text", 99) and bank.uses("image_text", 100)
