"""The alignment health report (chapter 5.8 / 5.9): ``write_report(run_dir)`` -> report.html."""

from ..diagnostics.three_view import ThreeView, build_three_view, episode_coherence, synthetic_three_view
from .build import gather, render, write_report

__all__ = [
    "ThreeView",
    "build_three_view",
    "episode_coherence",
    "gather",
    "render",
    "synthetic_three_view",
    "write_report",
]
