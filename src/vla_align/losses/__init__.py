"""Alignment objectives; each returns named loss terms keyed by pair or objective."""

from .contrastive import group_positives, info_nce, mutual_information_bound
from .objective import AlignmentLoss, LossConfig

__all__ = ["AlignmentLoss", "LossConfig", "group_positives", "info_nce", "mutual_information_bound"]
