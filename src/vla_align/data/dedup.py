"""`vla-align data dedup` (work in progress)."""

from __future__ import annotations

from typing import Any


def add_command(sims: Any, parser_class: Any) -> None:
    sims.add_parser("dedup", help="(in progress)")
