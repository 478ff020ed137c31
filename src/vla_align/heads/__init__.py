"""Continuous policy heads on a conditioning feature (seed 004): ``regression`` (L1 / MSE behaviour
cloning), ``binned`` (RT-2 / OpenVLA discrete tokens) and ``flow`` (SmolVLA flow matching), one
interface (:class:`ActionHead`: ``loss(cond, target, mask)``, ``sample(cond, generator)``). ``HEADS``
maps each name to its config class (a :class:`HeadConfig`, beside the head), whose ``build(cond_dim)``
makes the head. Importing this package registers all three."""

from .base import HEADS, ActionHead, HeadConfig, HeadName, build_head, masked_mean
from .binned import BinnedHead, BinnedHeadConfig
from .flow import FlowHead, FlowHeadConfig, euler_integrate, sinusoidal_embedding
from .regression import RegressionHead, RegressionHeadConfig

__all__ = [
    "HEADS",
    "ActionHead",
    "BinnedHead",
    "BinnedHeadConfig",
    "FlowHead",
    "FlowHeadConfig",
    "HeadConfig",
    "HeadName",
    "RegressionHead",
    "RegressionHeadConfig",
    "build_head",
    "euler_integrate",
    "masked_mean",
    "sinusoidal_embedding",
]
