"""The training losses of a trial (kept free of SimpleITK and MLflow, so a bare GPU machine with
torch and MONAI can train: ``bench/gpu_check.py``)."""

from __future__ import annotations

import torch
from torch import nn

from mripipe.core.errors import InputError
from mripipe.learn.trial_params import SegmentationLoss, TrialParams

__all__ = ["make_loss"]


def make_loss(params: TrialParams, weights: torch.Tensor | None = None) -> nn.Module:
    """The trial's loss: DiceCE / DiceFocal (segmentation, softmax over the 2 or K + 1 output
    channels, label ``(B, 1, X, Y, Z)`` of class indices, one-hot encoded by MONAI) or
    class-weighted cross-entropy (classification, label ``(B,)``)."""
    from monai.losses import DiceCELoss, DiceFocalLoss

    loss = params.loss
    name = loss.name
    if isinstance(loss, SegmentationLoss):
        if name == "dice_ce":
            return DiceCELoss(to_onehot_y=True, softmax=True)
        if name == "dice_focal":
            return DiceFocalLoss(to_onehot_y=True, softmax=True)
        raise InputError(f"unknown segmentation loss {name!r}; expected dice_ce or dice_focal")
    if name != "cross_entropy":
        raise InputError(f"unknown classification loss {name!r}; expected cross_entropy")
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=float(loss.label_smoothing))
