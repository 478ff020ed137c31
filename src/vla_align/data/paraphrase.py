"""Instruction paraphrases for the paraphrase-consistency objective (chapter gotcha 6: "phrase-level
paraphrase augmentation; a consistency loss on L–A so synonymous sentences map to the same z_A").

Two sources, tried in order:

1. the dataset's own instruction sets: when the dataset says its instructions come in sets of
   synonyms per env task (Meta-World: three or more per task), every other instruction of the
   same set is a paraphrase;
2. templated rewrites of BabyAI's grammar: verb synonyms ("go to" → "walk to", "pick up" →
   "grab"), connective synonyms and the article swap "the" ↔ "a". The article swap is not a
   strict paraphrase in BabyAI ("the" means the description matches one object, "a" several), but
   the bot's action is the same either way (go to any matching object), which is what z_A encodes.

Rewrites are whole-word and deterministic for a given ``numpy.random.Generator``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# each group lists interchangeable surface forms; matched longest first, whole words only
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("go to", "walk to", "move to", "head to", "navigate to"),
    ("pick up", "grab", "take", "fetch"),
    ("put", "place", "set"),
    ("next to", "beside", "by"),
    ("open", "swing open"),
    ("and", "and then"),
    ("the", "a"),
)


def _pattern() -> tuple[re.Pattern[str], dict[str, int]]:
    group_of: dict[str, int] = {}
    for g, forms in enumerate(SYNONYMS):
        for form in forms:
            group_of[form] = g
    alternatives = sorted(group_of, key=len, reverse=True)
    regex = re.compile(r"\b(" + "|".join(re.escape(a) for a in alternatives) + r")\b")
    return regex, group_of


_REGEX, _GROUP_OF = _pattern()


def rewrite(text: str, rng: np.random.Generator) -> str:
    """One templated paraphrase of ``text``: every known phrase is replaced by a random synonym,
    and at least one phrase changes when ``text`` holds any (the result differs from ``text``)."""
    matches = list(_REGEX.finditer(text))
    if not matches:
        return text
    must_change = int(rng.integers(len(matches)))
    pieces, last = [], 0
    for k, m in enumerate(matches):
        forms = SYNONYMS[_GROUP_OF[m.group(1)]]
        choices = [f for f in forms if f != m.group(1)] if k == must_change else list(forms)
        pieces.append(text[last : m.start()])
        pieces.append(choices[int(rng.integers(len(choices)))])
        last = m.end()
    pieces.append(text[last:])
    return "".join(pieces)


class Paraphraser:
    """Paraphrases for a batch of instructions: another instruction of the same synonym set when
    ``sets`` is given (one set name per instruction, e.g. the env task), else a templated rewrite."""

    def __init__(self, instructions: Sequence[str], sets: Sequence[str] | None = None) -> None:
        by_task: dict[str, set[str]] = {}
        for text, name in zip(instructions, sets if sets is not None else [], strict=False):
            by_task.setdefault(name, set()).add(text)
        self._alternatives: dict[str, list[str]] = {}
        for texts in by_task.values():
            for text in texts:
                others = sorted(texts - {text})
                if others:
                    self._alternatives[text] = others

    def __call__(self, texts: Sequence[str], rng: np.random.Generator) -> list[str]:
        out = []
        for text in texts:
            others = self._alternatives.get(text)
            out.append(others[int(rng.integers(len(others)))] if others else rewrite(text, rng))
        return out
