"""The Python API for a trained run: load it, embed frames / instructions / action chunks into the
shared space, retrieve across modalities, and act with the policy.

    import vla_align

    model = vla_align.load("runs/babyai-quick")          # device="auto": CUDA when available
    z_image = model.embed_image(frames)                   # any size RGB frames -> (N, D)
    z_text = model.embed_text(["go to the red ball", "go to a blue key"])
    top = vla_align.retrieve(z_image, z_text, k=1)       # .indices, .scores
    action = model.act(frame, "go to the red ball")       # the policy's next action

Everything goes through the objects the command line uses: :func:`load` rebuilds the model with
:func:`vla_align.runs.load_model` (what ``vla-align eval`` loads), discrete actions come from the
closed-loop rollout's own policy function (:func:`vla_align.sim.babyai.rollout.model_policy`) and
continuous chunks from :meth:`TriModalModel.act_chunk` (what the Meta-World rollout calls).

Conventions:

* frames are RGB ``uint8``, channels last: one ``(H, W, 3)`` array, a batch ``(N, H, W, 3)``, a PIL
  image, a torch tensor, or a list of any of these (sizes may differ). :meth:`AlignedModel.preprocess`
  resizes each to the run's frame size with PIL's box filter (area averaging), the resampling the
  BabyAI generator applies to the simulator's views; frames already at that size are untouched.
  RGBA frames lose their alpha channel; grayscale, float and channels-first frames are refused
  with the conversion to use.
* embeddings are L2-normalised ``torch.float32`` tensors on the CPU, ``(N, D)`` (one row per input
  even for a single one), computed without gradients. Like ``vla-align eval``, everything runs under
  bf16 autocast on CUDA and in plain float32 on the CPU (``sim.base.inference_autocast``).
* retrieval scores are cosine similarities; equal scores rank the lower gallery index first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .errors import UserError
from .runs import load_model, load_run_config
from .sim.base import inference_autocast

if TYPE_CHECKING:
    from .model import TriModalModel
    from .presets import RunConfig

Frame: TypeAlias = "np.ndarray | Tensor | Image.Image"
Frames: TypeAlias = "np.ndarray | Tensor | Image.Image | Sequence[np.ndarray | Tensor | Image.Image]"
Vectors: TypeAlias = "np.ndarray | Tensor | Sequence[Sequence[float]] | Sequence[float]"
Action: TypeAlias = "int | np.ndarray"

__all__ = ["AlignedModel", "PolicySession", "Retrieval", "load", "preprocess_frames", "resize_frame", "retrieve"]


# --- frames ---------------------------------------------------------------------------------------


def _rgb(frame: np.ndarray, where: str) -> np.ndarray:
    """One (H, W, 3|4) array -> (H, W, 3) uint8, with a clear error for anything else."""
    shape = tuple(frame.shape)
    if frame.ndim == 2 or (frame.ndim == 3 and shape[-1] == 1):
        raise UserError(
            f"{where}: a grayscale frame of shape {shape}; the model reads RGB, convert it with "
            "np.repeat(frame[..., None], 3, axis=-1) or PIL's .convert('RGB')"
        )
    if frame.ndim != 3:
        raise UserError(f"{where}: expected an (H, W, 3) RGB frame, got shape {shape}")
    if shape[-1] not in (3, 4):
        hint = "; it looks channels-first: move the channels last" if shape[0] in (1, 3, 4) else ""
        raise UserError(f"{where}: expected RGB channels last, (H, W, 3), got shape {shape}{hint}")
    if frame.dtype != np.uint8:
        if frame.dtype.kind not in "iu" or (frame.size and (frame.min() < 0 or frame.max() > 255)):
            raise UserError(
                f"{where}: frames must be uint8 RGB (0-255), got {frame.dtype}; for floats in [0, 1] use "
                "(frame * 255).round().astype(np.uint8)"
            )
        frame = frame.astype(np.uint8)
    return frame[..., :3]  # RGBA: the alpha channel is dropped


def _as_array(frame: Any, where: str) -> np.ndarray:
    if isinstance(frame, Image.Image):
        if frame.mode not in ("RGB", "RGBA"):
            raise UserError(f"{where}: a PIL image in mode {frame.mode!r}; convert it with .convert('RGB')")
        return np.asarray(frame)
    if isinstance(frame, Tensor):
        return frame.detach().cpu().numpy()
    if isinstance(frame, np.ndarray):
        return frame
    raise UserError(f"{where}: expected a numpy array, torch tensor or PIL image, got {type(frame).__name__}")


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with PIL's box filter (what ``vla-align data babyai`` applies to
    the simulator's views, ``sim.babyai.env.render_frame``); a frame already at ``size`` is returned as is."""
    h, w = size
    if frame.shape[:2] == (h, w):
        return np.ascontiguousarray(frame)
    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((w, h), Image.Resampling.BOX))


def preprocess_frames(frames: Frames, size: tuple[int, int]) -> Tensor:
    """Raw RGB frames -> the model's image input: a ``(N, h, w, 3)`` uint8 CPU tensor at ``size`` (h, w).

    ``frames`` is one frame (an ``(H, W, 3)`` array or tensor, or a PIL image), a batch ``(N, H, W, 3)``,
    or a list of frames whose sizes may differ. See the module docstring for the resampling."""
    if isinstance(frames, Sequence) and not isinstance(frames, np.ndarray | Tensor):
        items = [_rgb(_as_array(f, f"frame {i}"), f"frame {i}") for i, f in enumerate(frames)]
    else:
        array = _as_array(frames, "frames")
        batch = array if array.ndim == 4 else [array]
        items = [_rgb(f, f"frame {i}" if array.ndim == 4 else "frames") for i, f in enumerate(batch)]
    out = np.empty((len(items), *size, 3), dtype=np.uint8)
    for i, item in enumerate(items):
        out[i] = resize_frame(item, size)
    return torch.from_numpy(out)


# --- retrieval ------------------------------------------------------------------------------------


class Retrieval(NamedTuple):
    """Top-k gallery items per query: ``indices`` (int64) and cosine ``scores`` (float32), best first;
    ``(Q, k)`` for a batch of queries, ``(k,)`` for one query vector."""

    indices: Tensor
    scores: Tensor


def _matrix(x: Vectors, name: str) -> Tensor:
    t = x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim not in (1, 2) or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise UserError(
            f"retrieve: {name} must be a (N, D) or (D,) array of embeddings, got {t.dtype} {tuple(t.shape)}"
        )
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise UserError(f"retrieve: {name} holds NaN or infinite values; check how the embeddings were made")
    return t


def retrieve(query: Vectors, gallery: Vectors, k: int = 5) -> Retrieval:
    """The ``k`` gallery items most similar to each query by cosine similarity, across any modalities
    (e.g. image embeddings against instruction embeddings).

    ``query`` is ``(Q, D)`` or one ``(D,)`` vector, ``gallery`` is ``(G, D)`` (tensors, arrays or nested
    lists; they need not be normalised). With ``k`` > G every item is returned. Scores are computed in
    float64 and rounded to float32; items with equal float32 scores rank by gallery index (lower first),
    so the result is deterministic."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise UserError(f"retrieve: k must be a positive integer, got {k!r}")
    q, g = _matrix(query, "query"), _matrix(gallery, "gallery")
    single = q.ndim == 1
    q, g = q.reshape(1, -1) if single else q, g.reshape(1, -1) if g.ndim == 1 else g
    if q.shape[1] != g.shape[1]:
        raise UserError(
            f"retrieve: query vectors have {q.shape[1]} dimensions, gallery vectors {g.shape[1]}; "
            "embed both with the same run"
        )
    scores = (F.normalize(q, dim=-1) @ F.normalize(g, dim=-1).T).to(torch.float32).numpy()  # (Q, G)
    order = np.argsort(-scores, axis=1, kind="stable")[:, : min(int(k), g.shape[0])]  # (Q, k)
    top = np.take_along_axis(scores, order, axis=1)
    indices, values = torch.from_numpy(order.astype(np.int64)), torch.from_numpy(np.ascontiguousarray(top))
    return Retrieval(indices[0], values[0]) if single else Retrieval(indices, values)


# --- action chunks --------------------------------------------------------------------------------


def _chunk_list(chunks: Any, discrete: bool) -> list[np.ndarray]:
    """One chunk or a batch of chunks -> a list of (T,) / (T, A) arrays (lengths may differ)."""
    single_ndim = 1 if discrete else 2
    if isinstance(chunks, Tensor):
        chunks = chunks.detach().cpu().numpy()
    if isinstance(chunks, np.ndarray):
        if chunks.ndim == single_ndim:
            return [chunks]
        if chunks.ndim == single_ndim + 1:
            return list(chunks)
        shape = "(T,) ids or (N, T) ids" if discrete else "(T, A) vectors or (N, T, A) vectors"
        raise UserError(f"action chunks must be {shape}, got shape {chunks.shape}")
    if not isinstance(chunks, Sequence) or isinstance(chunks, str):
        raise UserError(f"action chunks must be an array, tensor or list, got {type(chunks).__name__}")
    first = np.asarray(chunks[0]) if len(chunks) else np.zeros(0)
    if len(chunks) and first.ndim == single_ndim - 1:  # one chunk written as a list of steps
        return [np.asarray(chunks)]
    return [x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x) for x in chunks]


def _pad_chunks(items: list[np.ndarray], model: TriModalModel) -> tuple[Tensor, Tensor]:
    """Chunks of up to T steps -> (N, T[, A]) actions and (N, T) mask, padded like an episode's end
    (id 0 / zero vector, masked), as the training sampler does."""
    spec, t_max = model.action_spec, model.cfg.action.chunk_len
    discrete = spec.kind == "discrete"
    shape: tuple[int, ...] = (len(items), t_max) if discrete else (len(items), t_max, spec.dim)
    action = np.zeros(shape, dtype=np.int64 if discrete else np.float32)
    mask = np.zeros((len(items), t_max), dtype=bool)
    for i, c in enumerate(items):
        n = len(c)
        if not 1 <= n <= t_max:
            raise UserError(
                f"action chunk {i} has {n} steps; this run reads chunks of 1 to {t_max} steps "
                "(model.action.chunk_len; shorter ones are padded and masked)"
            )
        if discrete:
            if c.ndim != 1 or c.dtype.kind not in "iu" or c.min() < 0 or c.max() >= spec.num_actions:
                raise UserError(f"action chunk {i}: expected action ids in 0..{spec.num_actions - 1}, got {c!r}")
        elif c.ndim != 2 or c.shape[1] != spec.dim or not np.isfinite(c.astype(np.float64)).all():
            raise UserError(f"action chunk {i}: expected finite (T, {spec.dim}) action vectors, got shape {c.shape}")
        action[i, :n], mask[i, :n] = c, True
    return torch.from_numpy(action), torch.from_numpy(mask)


# --- the model ------------------------------------------------------------------------------------


class AlignedModel:
    """A trained run ready for inference: ``model`` (the :class:`~vla_align.model.TriModalModel`, in
    eval mode on ``device``), ``config`` (its :class:`~vla_align.presets.RunConfig`), ``dataset`` (the
    ``dataset`` section of the run's config.json: where the data is, its description, frame shape) and
    ``run_dir``. Made by :func:`load`."""

    def __init__(
        self, model: TriModalModel, config: RunConfig, dataset: dict[str, Any], run_dir: Path, batch_size: int = 256
    ) -> None:
        self.model = model
        self.config = config
        self.dataset = dataset
        self.run_dir = run_dir
        self.batch_size = batch_size  # inputs per forward pass of the embed_* methods
        self.device: torch.device = next(model.parameters()).device
        shape = list(dataset.get("image_shape") or [])
        side = int((dataset.get("info") or {}).get("image_size") or 0)
        size = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else (side, side)
        if min(size) <= 0:
            raise UserError(f"{run_dir / 'config.json'}: the dataset section has no image_shape; retrain the run")
        self.image_size: tuple[int, int] = size  # (H, W) of the frames the model was trained on

    def __repr__(self) -> str:
        policy = "none" if self.model.policy is None else self.model.action_spec.kind
        h, w = self.image_size
        return (
            f"AlignedModel(run={str(self.run_dir)!r}, device={self.device}, frames={h}x{w}, "
            f"embed_dim={self.embed_dim}, policy={policy})"
        )

    @property
    def embed_dim(self) -> int:
        """D, the size of the shared embedding space."""
        return int(self.model.cfg.embed_dim)

    @property
    def dataset_path(self) -> Path:
        """The dataset the run was trained on, as recorded at training (relative to where training ran)."""
        return Path(self.dataset["path"])

    @property
    def action_names(self) -> list[str]:
        """One name per discrete action id (e.g. BabyAI's ``left`` ... ``done``) or per continuous dimension."""
        return list(self.model.action_spec.names)

    @property
    def has_policy(self) -> bool:
        """Whether the run was trained with a policy head (``--model.policy.enabled true``): :meth:`act` works."""
        return self.model.policy is not None

    def preprocess(self, frames: Frames) -> Tensor:
        """Raw RGB frames of any size -> the model's image input, ``(N, H, W, 3)`` uint8 on the CPU at the
        run's frame size (:func:`preprocess_frames`: PIL box-filter resizing, RGBA loses alpha)."""
        return preprocess_frames(frames, self.image_size)

    @torch.no_grad()
    def _embed(self, n: int, encode: Callable[[int, int], Tensor]) -> Tensor:
        parts = [torch.zeros(0, self.embed_dim)]
        for start in range(0, n, self.batch_size):
            with inference_autocast(self.device):
                z = encode(start, min(n, start + self.batch_size))
            parts.append(F.normalize(z.float(), dim=-1).cpu())  # re-normalised in float32 after bf16
        return torch.cat(parts)

    def embed_image(self, frames: Frames) -> Tensor:
        """Frames (anything :meth:`preprocess` takes) -> ``(N, D)`` L2-normalised float32 CPU embeddings."""
        image = self.preprocess(frames)
        return self._embed(len(image), lambda a, b: self.model.encode_image(image[a:b].to(self.device)))

    def embed_text(self, instructions: str | Sequence[str]) -> Tensor:
        """Instructions (one string or a list) -> ``(N, D)`` L2-normalised float32 CPU embeddings."""
        texts = [instructions] if isinstance(instructions, str) else list(instructions)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise UserError(f"embed_text takes strings, got {bad[0]}; pass the instructions as a list of str")
        return self._embed(len(texts), lambda a, b: self.model.encode_text(texts[a:b]))

    def embed_action(self, chunks: Any) -> Tensor:
        """Action chunks -> ``(N, D)`` L2-normalised float32 CPU embeddings.

        Discrete runs take id chunks: one ``(T,)`` list / array or a batch ``(N, T)`` / list of lists;
        continuous runs take ``(T, A)`` vectors in the dataset's units, or a batch ``(N, T, A)`` / list.
        T may be 1 .. ``model.action.chunk_len``; shorter chunks are padded and masked as at an episode's
        end (continuous chunks are normalised with the run's training statistics by the model)."""
        items = _chunk_list(chunks, self.model.action_spec.kind == "discrete")
        action, mask = _pad_chunks(items, self.model)

        def encode(a: int, b: int) -> Tensor:
            return self.model.encode_action(action[a:b].to(self.device), mask[a:b].to(self.device))

        return self._embed(len(items), encode)

    def retrieve(self, query: Vectors, gallery: Vectors, k: int = 5) -> Retrieval:
        """:func:`retrieve`: the top ``k`` gallery items per query by cosine similarity."""
        return retrieve(query, gallery, k)

    # --- the policy -------------------------------------------------------------------------------

    def _check_policy(self) -> None:
        if self.model.policy is None:
            raise UserError(
                f"{self.run_dir}: this run has no policy head; embed and retrieve work, to act train with "
                "--model.policy.enabled true"
            )

    @property
    def history_len(self) -> int:
        """How many previous actions the discrete policy reads (``model.policy.history``; 1 when it reads none)."""
        policy = self.model.cfg.policy
        return policy.history if policy.prev_action else 1

    def act_chunk(
        self,
        frame: Frame,
        instruction: str,
        state: Sequence[float] | np.ndarray | None = None,
        history: Sequence[int] = (),
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """The policy's whole predicted chunk for one observation: ``(k,)`` int64 action ids (greedy) for a
        discrete policy, ``(k, A)`` float32 actions in the dataset's units for a continuous one. The CLI's
        rollout plays the first ``model.policy.execute`` of them before asking again.

        ``frame``: one RGB frame of any size (see :meth:`preprocess`). ``history``: the episode's previous
        action ids, most recent first (discrete policies; empty at the start). ``state``: the
        proprioceptive state, for continuous runs trained with one. ``generator`` seeds sampling heads."""
        self._check_policy()
        image = self.preprocess(frame)
        if len(image) != 1:
            raise UserError(f"act takes one frame, got {len(image)}; use policy_session or loop over the frames")
        if not isinstance(instruction, str):
            raise UserError(f"act takes one instruction string, got {type(instruction).__name__}")
        if self.model.continuous:
            return self._continuous_chunk(image, instruction, state, history, generator)
        if state is not None:
            raise UserError("this run's policy takes discrete actions and no state; drop state=")
        from .sim.babyai.rollout import model_policy  # the closed-loop rollout's own policy function

        with inference_autocast(self.device):
            chunk: np.ndarray = model_policy(self.model)(image.numpy(), [instruction], self._prev(history))[0]
        return chunk.astype(np.int64)  # (k,)

    def _prev(self, history: Sequence[int]) -> np.ndarray:
        """Previous action ids, most recent first -> (1, h) padded with -1 ("none"), as the rollout keeps them."""
        ids = [int(a) for a in history][: self.history_len]
        n = self.model.action_spec.num_actions
        if any(not 0 <= a < n for a in ids if a != -1):
            raise UserError(f"history holds action ids in 0..{n - 1} (most recent first), got {list(history)}")
        return np.asarray([ids + [-1] * (self.history_len - len(ids))], dtype=np.int64)

    def _continuous_chunk(
        self,
        image: Tensor,
        instruction: str,
        state: Sequence[float] | np.ndarray | None,
        history: Sequence[int],
        generator: torch.Generator | None,
    ) -> np.ndarray:
        if len(history):
            raise UserError("history is for discrete-action policies; this run's policy is continuous")
        s = None
        if self.model.state_dim:
            if state is None:
                raise UserError(f"this run's policy reads the proprioceptive state ({self.model.state_dim} values)")
            s = torch.as_tensor(np.asarray(state, dtype=np.float32)).reshape(1, -1)
            if s.shape[1] != self.model.state_dim or not torch.isfinite(s).all():
                raise UserError(f"state must be {self.model.state_dim} finite values, got {tuple(np.shape(state))}")
            s = s.to(self.device)
        elif state is not None:
            raise UserError("this run's policy was trained without the proprioceptive state; drop state=")
        with inference_autocast(self.device):
            chunk = self.model.act_chunk(image.to(self.device), [instruction], s, generator)  # (1, k, A)
        out: np.ndarray = chunk[0].float().cpu().numpy()
        return out

    def act(
        self,
        frame: Frame,
        instruction: str,
        state: Sequence[float] | np.ndarray | None = None,
        history: Sequence[int] = (),
    ) -> Action:
        """The policy's next action for one observation: an ``int`` action id (discrete policies, e.g.
        BabyAI: ``model.action_names[id]``) or an ``(A,)`` float32 action vector (continuous, e.g.
        Meta-World). The first action of :meth:`act_chunk`; over an episode use :meth:`policy_session`,
        which keeps the action history and plays chunks as the CLI's rollout does."""
        chunk = self.act_chunk(frame, instruction, state, history)
        return int(chunk[0]) if chunk.ndim == 1 else chunk[0]

    def policy_session(self, instruction: str, seed: int = 0) -> PolicySession:
        """A :class:`PolicySession` that acts over one episode with ``instruction``."""
        self._check_policy()
        return PolicySession(self, instruction, seed)


class PolicySession:
    """The policy over one episode, as the CLI's closed-loop rollout runs it: it asks the policy for a
    chunk, plays its first ``model.policy.execute`` actions, then asks again, and remembers the last
    ``history_len`` actions it played (most recent first) for discrete policies.

        session = model.policy_session("go to the red ball")
        while not done:
            obs, reward, terminated, truncated, _ = env.step(session.step(frame))

    :meth:`step` assumes the action it returns is the one taken. Sampling heads draw from a generator
    seeded with ``seed`` (the rollout seeds 0). The Meta-World rollout clips actions to [-1, 1] before
    the env steps; clip to your environment's action space."""

    def __init__(self, model: AlignedModel, instruction: str, seed: int = 0) -> None:
        self.model = model
        self.instruction = instruction
        self.seed = seed
        self.reset()

    def reset(self, instruction: str | None = None) -> None:
        """Start a new episode (with a new ``instruction`` when given): empty history and chunk."""
        if instruction is not None:
            self.instruction = instruction
        self.history: list[int] = [-1] * self.model.history_len  # most recent first, -1 = none
        self.queue: list[Action] = []
        self.steps = 0
        self._generator = torch.Generator(device=self.model.device).manual_seed(self.seed)

    def step(self, frame: Frame, state: Sequence[float] | np.ndarray | None = None) -> Action:
        """The next action for the current observation (a new chunk is predicted only when the last one
        is used up, so ``frame`` is read only then)."""
        if not self.queue:
            history = [] if self.model.model.continuous else self.history
            chunk = self.model.act_chunk(frame, self.instruction, state, history, self._generator)
            execute = self.model.model.cfg.policy.execute
            self.queue = [int(a) for a in chunk[:execute]] if chunk.ndim == 1 else list(chunk[:execute])
        action = self.queue.pop(0)
        if isinstance(action, int):
            self.history = [action, *self.history[:-1]]
        self.steps += 1
        return action


def load(run: str | Path, device: str | torch.device = "auto") -> AlignedModel:
    """Load a trained run directory (the ``--out`` of ``vla-align train`` / ``pipeline``) for inference.

    ``device``: ``"auto"`` (CUDA when a GPU is visible, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``
    or a :class:`torch.device`. The dataset is not needed: everything comes from the run's config.json
    and ``checkpoint/model.safetensors``."""
    run_dir = Path(run)
    model, cfg = load_model(run_dir, device)
    _, extra = load_run_config(run_dir)
    return AlignedModel(model, cfg, dict(extra["dataset"]), run_dir)
