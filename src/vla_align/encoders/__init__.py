"""Image, text and action encoders; each maps raw inputs to a feature vector (projection comes after)."""

from .action import ActionEncoder, ActionEncoderConfig
from .image import ImageEncoder, ImageEncoderConfig
from .text import (
    TEXT_BACKBONES,
    AutoTextConfig,
    MiniLMTextConfig,
    ScratchTextConfig,
    TextEncoder,
    TextEncoderConfig,
)

__all__ = [
    "TEXT_BACKBONES",
    "ActionEncoder",
    "ActionEncoderConfig",
    "AutoTextConfig",
    "ImageEncoder",
    "ImageEncoderConfig",
    "MiniLMTextConfig",
    "ScratchTextConfig",
    "TextEncoder",
    "TextEncoderConfig",
]
