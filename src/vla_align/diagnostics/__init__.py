"""Diagnostics for an aligned space and its policy (chapter 5.8 / 5.9): subspace similarity (CKA,
CCA), the alignment confusion matrix and MI bound, attention rollout and Grad-CAM."""

from .amat import alignment_confusion, mi_lower_bound, per_class_hit_rate
from .attention import attention_rollout, grad_cam, overlay, policy_grad_cam, text_to_patch_map
from .similarity import cca, linear_cka, mean_cca, modality_similarity

__all__ = [
    "alignment_confusion",
    "attention_rollout",
    "cca",
    "grad_cam",
    "linear_cka",
    "mean_cca",
    "mi_lower_bound",
    "modality_similarity",
    "overlay",
    "per_class_hit_rate",
    "policy_grad_cam",
    "text_to_patch_map",
]
