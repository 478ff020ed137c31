"""Continuous policy heads on a conditioning feature (seed 004): ``regression`` (L1 / MSE behaviour
cloning), ``binned`` (RT-2 / OpenVLA discrete tokens) and ``flow`` (SmolVLA flow matching), one
interface (:class:`ActionHead`: ``loss(cond, target, mask)``, ``sample(cond, generator)``) chosen by
``HeadConfig.name`` through the ``HEADS`` registry. Importing this package registers all three."""

from .base import HEADS, ActionHead, HeadConfig, HeadName, build_head, masked_mean
from .binned import BinnedHead
from .flow import FlowHead, euler_integrate, sinusoidal_embedding
from .regression import RegressionHead

__all__ = [
    "HEADS",
    "ActionHead",
    "BinnedHead",
    "FlowHead",
    "HeadConfig",
    "HeadName",
    "RegressionHead",
    "build_head",
    "euler_integrate",
    "masked_mean",
    "sinusoidal_embedding",
]
