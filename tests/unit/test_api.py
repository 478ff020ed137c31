"""The Python API (vla_align.api): preprocessing, embeddings, retrieval, acting, devices.

Runs are trained for a few steps on the synthetic data (28 px frames): the numbers they give are
not the point, the API's contract is (shapes, normalisation, the same outputs as the model's own
methods, deterministic retrieval, clear errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.synthetic import write_synthetic

import vla_align
from vla_align import api
from vla_align.cli import main
from vla_align.data.lerobot import read_dataset
from vla_align.errors import UserError
from vla_align.runs import load_model
from vla_align.train import resolve_device


def _train(data: Path, out: Path, *flags: str) -> Path:
    args = ["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--train.steps", "4"]
    assert main([*args, *flags]) == 0
    return out


@pytest.fixture(scope="module")
def discrete_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("api-d") / "d", n_train=16, n_val=2, n_test=6)


@pytest.fixture(scope="module")
def policy_run(discrete_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    flags = ["--model.policy.enabled", "true", "--model.policy.hidden", "16", "--model.policy.history", "3"]
    flags += ["--model.policy.chunk", "3", "--model.policy.execute", "2"]
    return _train(discrete_data, tmp_path_factory.mktemp("api-p") / "run", *flags)


@pytest.fixture(scope="module")
def plain_run(discrete_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(discrete_data, tmp_path_factory.mktemp("api-n") / "run")


@pytest.fixture(scope="module")
def continuous_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-c")
    data = write_synthetic(root / "d", n_train=12, n_val=2, n_test=4, continuous=True, lengths=(6, 10))
    flags = ["--model.policy.enabled", "true", "--model.policy.hidden", "16", "--model.policy.chunk", "4"]
    flags += ["--model.policy.execute", "2"]
    return _train(data, root / "run", *flags)


@pytest.fixture(scope="module")
def model(policy_run: Path) -> api.AlignedModel:
    return api.load(policy_run, device="cpu")


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


# --- preprocess -----------------------------------------------------------------------------------


def test_preprocess_takes_any_size_batch_pil_tensor_and_list(model: api.AlignedModel) -> None:
    assert model.image_size == (28, 28)
    one = _frames(1, 100, 60)[0]
    x = model.preprocess(one)
    assert x.shape == (1, 28, 28, 3) and x.dtype == torch.uint8 and x.device.type == "cpu"
    expected = np.asarray(Image.fromarray(one).resize((28, 28), Image.Resampling.BOX))
    assert np.array_equal(x[0].numpy(), expected)
    batch = _frames(5, 64, 64)
    assert model.preprocess(batch).shape == (5, 28, 28, 3)
    assert torch.equal(model.preprocess(torch.from_numpy(batch)), model.preprocess(batch))
    mixed = [batch[0], Image.fromarray(one), torch.from_numpy(batch[1]), _frames(1, 28, 28)[0]]
    out = model.preprocess(mixed)
    assert out.shape == (4, 28, 28, 3)
    assert torch.equal(out[1], x[0]) and torch.equal(out[0], model.preprocess(batch[0])[0])
    assert model.preprocess([]).shape == (0, 28, 28, 3)


def test_preprocess_keeps_frames_already_at_the_run_size_and_drops_alpha(model: api.AlignedModel) -> None:
    native = _frames(3, 28, 28)
    assert np.array_equal(model.preprocess(native).numpy(), native)
    rgba = np.concatenate([native, np.full((3, 28, 28, 1), 7, dtype=np.uint8)], axis=-1)
    assert np.array_equal(model.preprocess(rgba).numpy(), native)
    pil = Image.fromarray(rgba[0], mode="RGBA")
    assert np.array_equal(model.preprocess(pil)[0].numpy(), native[0])
    as_int64 = native.astype(np.int64)  # e.g. np.array of Python ints: values 0..255 are accepted
    assert np.array_equal(model.preprocess(as_int64).numpy(), native)


def test_preprocess_resamples_like_the_babyai_generator() -> None:
    from vla_align.sim.babyai.env import render_frame

    raw = _frames(1, 63, 63, seed=4)[0]  # a 7 x 9 px tile view
    for size in (28, 56, 63, 100):
        ours = api.preprocess_frames(raw, (size, size))[0].numpy()
        assert np.array_equal(ours, render_frame({"image": raw}, size)), size


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((32, 32), dtype=np.uint8), "grayscale"),
        (np.zeros((32, 32, 1), dtype=np.uint8), "grayscale"),
        (np.zeros((2, 32, 32, 1), dtype=np.uint8), "grayscale"),
        (np.zeros((32, 32, 3), dtype=np.float32), "uint8"),
        (np.full((32, 32, 3), 300, dtype=np.int64), "uint8"),
        (np.zeros((32, 32, 3), dtype=bool), "uint8"),
        (np.zeros((3, 32, 32), dtype=np.uint8), "channels-first"),
        (np.zeros((1, 2, 32, 32, 3), dtype=np.uint8), r"\(H, W, 3\)"),
        (Image.new("L", (32, 32)), "convert"),
        ("frame.png", "numpy array, torch tensor or PIL image"),
        ([np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((8, 8), dtype=np.uint8)], "frame 1: a grayscale"),
    ],
)
def test_preprocess_refuses_what_it_cannot_read_with_a_clear_error(
    model: api.AlignedModel, bad: object, match: str
) -> None:
    with pytest.raises(UserError, match=match):
        model.preprocess(bad)  # type: ignore[arg-type]


# --- retrieve -------------------------------------------------------------------------------------


def _reference(query: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: every cosine score, sorted by (score descending, gallery index ascending)."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    scores = (q.astype(np.float64) @ g.astype(np.float64).T).astype(np.float32)
    idx = np.zeros((len(q), min(k, len(g))), dtype=np.int64)
    for i, row in enumerate(scores):
        ranked = sorted(range(len(g)), key=lambda j: (-float(row[j]), j))
        idx[i] = ranked[: idx.shape[1]]
    return idx, np.take_along_axis(scores, idx, axis=1)


def test_retrieve_matches_a_brute_force_reference_with_ties() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 16)).astype(np.float32)
    gallery = np.concatenate([base, base[[4, 1, 1]]])  # rows 6, 7, 8 tie exactly with 4, 1, 1
    query = np.concatenate([rng.normal(size=(5, 16)).astype(np.float32), base[[1, 4]]])
    for k in (1, 3, 9, 20):
        want_idx, want_scores = _reference(query, gallery, k)
        got = api.retrieve(torch.from_numpy(query), gallery, k=k)
        assert got.indices.dtype == torch.int64 and got.scores.dtype == torch.float32
        assert got.indices.shape == (7, min(k, 9))
        assert np.array_equal(got.indices.numpy(), want_idx), k
        np.testing.assert_allclose(got.scores.numpy(), want_scores, atol=1e-6)
    top = api.retrieve(query[5], gallery, k=3)  # one query vector: base[1], which rows 1, 7, 8 equal
    assert top.indices.tolist() == [1, 7, 8] and top.scores.shape == (3,)
    np.testing.assert_allclose(top.scores.numpy(), 1.0, atol=1e-6)


def test_retrieve_orders_exact_ties_by_gallery_index() -> None:
    gallery = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])
    top = vla_align.retrieve(np.array([[1.0, 0.0], [0.0, 1.0]]), gallery, k=5)
    assert top.indices.tolist() == [[1, 2, 4, 0, 3], [0, 3, 4, 1, 2]]
    assert top.scores[0, :2].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("query", "gallery", "k", "match"),
    [
        (np.ones((2, 4)), np.ones((3, 5)), 2, "4 dimensions"),
        (np.ones((2, 4)), np.ones((3, 4)), 0, "positive integer"),
        (np.ones((2, 4)), np.ones((3, 4)), 2.5, "positive integer"),
        (np.full((1, 4), np.nan), np.ones((3, 4)), 2, "NaN"),
        (np.ones((1, 2, 4)), np.ones((3, 4)), 2, r"\(N, D\)"),
    ],
)
def test_retrieve_errors(query: np.ndarray, gallery: np.ndarray, k: int, match: str) -> None:
    with pytest.raises(UserError, match=match):
        api.retrieve(query, gallery, k)


# --- embeddings -----------------------------------------------------------------------------------


def test_embeddings_are_normalised_cpu_float32_and_the_model_s_own(model: api.AlignedModel) -> None:
    frames = _frames(5, 28, 28)
    z = model.embed_image(frames)
    assert z.shape == (5, model.embed_dim) and z.dtype == torch.float32 and z.device.type == "cpu"
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        torch.testing.assert_close(z, model.model.encode_image(torch.from_numpy(frames)))
    texts = ["go to the red square", "go to the blue square", "go to the red square"]
    zt = model.embed_text(texts)
    assert zt.shape == (3, model.embed_dim) and not torch.allclose(zt[0], zt[1])
    torch.testing.assert_close(zt[0], zt[2])
    with torch.no_grad():
        torch.testing.assert_close(zt, model.model.encode_text(texts))
    torch.testing.assert_close(model.embed_text("go to the blue square"), zt[1:2])  # one string: one row
    small = api.AlignedModel(model.model, model.config, model.dataset, model.run_dir, batch_size=2)
    torch.testing.assert_close(small.embed_image(frames), z)  # batching does not change the result
    with pytest.raises(UserError, match="strings"):
        model.embed_text([1, 2])  # type: ignore[list-item]


def test_embed_action_pads_short_chunks_like_an_episode_end(model: api.AlignedModel) -> None:
    t = model.model.cfg.action.chunk_len
    z = model.embed_action([[0, 1, 2], [3] * t])  # a short chunk and a full one
    assert z.shape == (2, model.embed_dim)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    action = torch.zeros(2, t, dtype=torch.long)
    action[0, :3] = torch.tensor([0, 1, 2])
    action[1] = 3
    mask = torch.zeros(2, t, dtype=torch.bool)
    mask[0, :3], mask[1] = True, True
    with torch.no_grad():
        torch.testing.assert_close(z, model.model.encode_action(action, mask))
    torch.testing.assert_close(model.embed_action([0, 1, 2]), z[:1])  # one chunk as a flat list
    torch.testing.assert_close(model.embed_action(np.array([[0, 1, 2]])), z[:1])
    with pytest.raises(UserError, match=r"ids in 0\.\.3"):
        model.embed_action([0, 9])
    with pytest.raises(UserError, match=f"1 to {t} steps"):
        model.embed_action([0] * (t + 1))


def test_embed_action_takes_continuous_vectors(continuous_run: Path) -> None:
    cont = api.load(continuous_run, device="cpu")
    z = cont.embed_action(np.zeros((3, 4, 2), dtype=np.float32))
    assert z.shape == (3, cont.embed_dim)
    torch.testing.assert_close(cont.embed_action(np.zeros((4, 2))), z[:1])  # one (T, A) chunk
    with pytest.raises(UserError, match=r"\(T, 2\)"):
        cont.embed_action(np.zeros((4, 3)))


# --- acting ---------------------------------------------------------------------------------------


def test_act_is_the_greedy_policy_action_with_its_history(model: api.AlignedModel, discrete_data: Path) -> None:
    table = read_dataset(discrete_data, split="test")
    frame, text = table.frames[0], table.instructions[0]
    chunk = model.act_chunk(frame, text, history=[2, 1])
    assert chunk.shape == (3,) and chunk.dtype == np.int64
    prev = torch.tensor([[2, 1, -1]])
    logits = model.model.act_logits(torch.from_numpy(frame[None]), [text], prev)
    assert chunk.tolist() == logits.argmax(-1)[0].tolist()
    action = model.act(frame, text, history=[2, 1])
    assert isinstance(action, int) and action == chunk[0] and 0 <= action < 4
    assert model.action_names == ["left", "right", "up", "down"] and model.history_len == 3
    with pytest.raises(UserError, match="history"):
        model.act(frame, text, history=[7])
    with pytest.raises(UserError, match="one frame"):
        model.act(table.frames[:2], text)
    with pytest.raises(UserError, match="no state"):
        model.act(frame, text, state=[0.0])


def test_a_policy_session_plays_chunks_and_remembers_actions(model: api.AlignedModel) -> None:
    frames = _frames(5, 40, 40, seed=1)
    session = model.policy_session("go to the red square")
    played, expected, history = [], [], [-1, -1, -1]
    for t, frame in enumerate(frames):
        if t % 2 == 0:  # execute = 2: a new chunk every second step, read from that step's frame
            queue = model.act_chunk(frame, "go to the red square", history=history)[:2].tolist()
        expected.append(queue.pop(0))
        history = [expected[-1], *history[:-1]]
        played.append(session.step(frame))
    assert played == expected and session.history == history and session.steps == 5
    session.reset("go to the blue square")
    assert session.history == [-1, -1, -1] and session.steps == 0 and session.instruction == "go to the blue square"


def test_continuous_act_needs_its_state(continuous_run: Path) -> None:
    cont = api.load(continuous_run, device="cpu")
    frame = _frames(1, 28, 28)[0]
    state = np.zeros(3, dtype=np.float32)
    chunk = cont.act_chunk(frame, "go to the red square", state=state, generator=torch.Generator().manual_seed(0))
    assert chunk.shape == (4, 2) and chunk.dtype == np.float32 and np.isfinite(chunk).all()
    action = cont.act(frame, "go to the red square", state=state)
    assert isinstance(action, np.ndarray) and action.shape == (2,)
    with pytest.raises(UserError, match="proprioceptive state"):
        cont.act(frame, "go to the red square")
    with pytest.raises(UserError, match="3 finite values"):
        cont.act(frame, "go to the red square", state=[0.0, 1.0])
    session = cont.policy_session("go to the red square")
    steps = [session.step(frame, state) for _ in range(3)]
    assert all(s.shape == (2,) for s in steps if isinstance(s, np.ndarray)) and len(steps) == 3


def test_a_run_without_a_policy_embeds_but_does_not_act(plain_run: Path) -> None:
    plain = api.load(plain_run, device="cpu")
    assert not plain.has_policy and plain.embed_text("go").shape == (1, plain.embed_dim)
    with pytest.raises(UserError, match="no policy head"):
        plain.act(_frames(1, 28, 28)[0], "go to the red square")
    with pytest.raises(UserError, match="no policy head"):
        plain.policy_session("go to the red square")


# --- loading and devices --------------------------------------------------------------------------


def test_auto_device_is_the_cpu_without_a_gpu(policy_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    loaded = vla_align.load(policy_run)  # device="auto"
    assert loaded.device == torch.device("cpu") and "device=cpu" in repr(loaded)
    model, _ = load_model(policy_run, device="auto")
    assert next(model.parameters()).device.type == "cpu"
    assert resolve_device("AUTO") == torch.device("cpu")
    with pytest.raises(UserError, match="no CUDA GPU"):
        load_model(policy_run, device="cuda")
    with pytest.raises(UserError, match="not a device"):
        vla_align.load(policy_run, device="gpu0")


def test_load_errors_and_exports(tmp_path: Path, policy_run: Path, discrete_data: Path) -> None:
    with pytest.raises(UserError, match="not a run directory"):
        vla_align.load(tmp_path / "missing")
    loaded = vla_align.load(policy_run, device="cpu")
    assert loaded.dataset_path == discrete_data and loaded.has_policy
    assert vla_align.AlignedModel is api.AlignedModel and vla_align.retrieve is api.retrieve
    assert {"load", "retrieve", "AlignedModel", "PolicySession", "preprocess_frames"} <= set(vla_align.__all__)
