"""Validation during training: sliding-window Dice on whole validation scans (segmentation) and
balanced accuracy on validation volumes (classification).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from mripipe.core.errors import InputError
from mripipe.core.labels import class_index, is_multiclass
from mripipe.data.manifest import read_manifest
from mripipe.learn.networks import autocast, segment_logits
from mripipe.learn.patches import brain_box

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValScan:
    """One whole validation scan, cropped to its brain's bounding box.

    Attributes:
        scan: scan id (``sub-XXX_ses-YY``).
        image: ``(C, X, Y, Z)`` float32.
        label: ``(1, X, Y, Z)`` float32, 1 = lesion (multi-class: the class indices 0..K).
    """

    scan: str
    image: torch.Tensor
    label: torch.Tensor


def load_val_scans(
    manifest: str | Path,
    preprocessed: str | Path,
    subjects: Sequence[str],
    max_scans: int = 0,
    margin: int = 4,
    labels: Mapping[str, int] | None = None,
) -> list[ValScan]:
    """Read the preprocessed scans of the validation subjects (manifest rows).

    Each scan is cropped to the bounding box of its brain mask (``brainmask.nii.gz``) and
    lesions plus ``margin``: the image is 0 outside the brain, lesions lie inside it, and
    sliding windows over the empty margin would cost most of the time.

    Args:
        manifest: ``results/manifest.tsv`` (columns ``subject``, ``scan``).
        preprocessed: ``results/preprocessed`` holding ``{scan}/image.nii.gz``, ``label.nii.gz``
            and ``brainmask.nii.gz`` (read with :func:`mripipe.core.imageio.read_preprocessed`).
        subjects: validation subjects.
        max_scans: keep the first N scans in scan order (0 = all).
        margin: voxels kept around the brain box.
        labels: the label map (:mod:`mripipe.core.labels`); with K >= 2 classes the label holds
            the class indices 0..K, else lesion (any non-zero value).

    Returns:
        The scans, sorted by scan id.
    """
    from mripipe.core.imageio import read_preprocessed  # SimpleITK: not needed by training alone

    table = read_manifest(manifest)
    scans = sorted(table.loc[table["subject"].isin(set(subjects)), "scan"])
    if max_scans > 0:
        scans = scans[:max_scans]
    if not scans:
        raise InputError(f"{manifest}: no scan of the {len(subjects)} validation subjects")
    out = []
    for scan in scans:
        image, ids, brainmask, _ = read_preprocessed(Path(preprocessed) / scan)
        label = (class_index(ids, labels or {}, Path(preprocessed) / scan / "label.nii.gz")
                 if is_multiclass(labels) else ids > 0)
        box = brain_box((brainmask > 0) | (label > 0), margin)
        out.append(ValScan(
            scan,
            torch.from_numpy(np.ascontiguousarray(image[(slice(None), *box)])),
            torch.from_numpy(np.ascontiguousarray(label[box][None].astype(np.float32))),
        ))
    log.info("validation: %d scans of %d subjects", len(out), len(subjects))
    return out


def segmentation_validator(
    scans: Sequence[ValScan],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    amp: bool = True,
    class_names: Sequence[str] | None = None,
) -> Callable[[nn.Module], dict[str, float]]:
    """A validation function: sliding-window inference on whole scans, loss and lesion Dice.

    ``val_dice`` is the lesion Dice pooled over all validation voxels,
    ``2 sum(TP) / (2 sum(TP) + sum(FP) + sum(FN))`` (nnU-Net's pseudo-Dice for model selection):
    a model that predicts nothing scores 0 and false positives in lesion-free scans count.
    ``val_dice_cases`` is MONAI's ``DiceMetric`` per scan, averaged (a scan with no lesion and no
    prediction counts 1.0, as in the evaluation) — reported, but a poor selection criterion
    because an empty prediction earns the share of lesion-free scans.

    Multi-class (``class_names`` of K >= 2 foreground classes, network of K + 1 channels, argmax
    prediction): each class's pooled Dice is ``val_dice_<name>`` and ``val_dice`` is their mean
    (what selection ranks); ``val_dice_cases`` averages MONAI's per-scan Dice over scans and
    classes.

    Returns:
        model -> ``{"val_loss", "val_dice", "val_dice_cases"}`` (+ ``val_dice_<name>``).
    """
    names = list(class_names or ["lesion"])
    n_out = len(names) + 1

    def validate(model: nn.Module) -> dict[str, float]:
        dice = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
        losses = []
        tp, fp_fn = np.zeros(n_out - 1), np.zeros(n_out - 1)
        for s in scans:
            logits = segment_logits(model, s.image, roi_size, sw_batch_size, overlap, amp)[None]
            label = s.label[None].to(logits.device)
            losses.append(float(loss_fn(logits, label)))
            pred = one_hot(logits.argmax(dim=1, keepdim=True), num_classes=n_out)
            truth = one_hot(label, num_classes=n_out)
            dice(y_pred=pred, y=truth)
            for c in range(1, n_out):
                tp[c - 1] += float((pred[:, c] * truth[:, c]).sum())
                fp_fn[c - 1] += float((pred[:, c] != truth[:, c]).sum())
        value = dice.aggregate()
        assert isinstance(value, torch.Tensor)
        pooled = [2 * t / (2 * t + e) if t + e > 0 else 1.0 for t, e in zip(tp, fp_fn, strict=True)]
        out = {"val_loss": float(np.mean(losses)), "val_dice": float(np.mean(pooled)),
               "val_dice_cases": float(value.item())}
        if n_out > 2:
            out |= {f"val_dice_{n}": float(d) for n, d in zip(names, pooled, strict=True)}
        return out

    return validate


def classification_validator(
    batches: Callable[[], Iterable[dict[str, torch.Tensor]]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    amp: bool = True,
) -> Callable[[nn.Module], dict[str, float]]:
    """A validation function on whole validation volumes.

    Args:
        batches: returns the validation batches ``{"image": (B, C, X, Y, Z), "label": (B,)}``.
        loss_fn: the training loss (weighted cross-entropy) on ``(B, K)`` logits.
        amp: float16 autocast on CUDA.

    Returns:
        model -> ``{"val_loss", "val_balanced_accuracy", "val_accuracy"}``.
    """

    def validate(model: nn.Module) -> dict[str, float]:
        truth, pred, loss_sum, n = [], [], 0.0, 0
        device = next(model.parameters()).device
        for batch in batches():
            label = batch["label"].long()
            with torch.no_grad(), autocast(device, amp):
                logits = model(batch["image"].to(device)).float()
            loss_sum += float(loss_fn(logits, label.to(device))) * len(label)
            n += len(label)
            truth.append(label.numpy())
            pred.append(logits.argmax(dim=1).cpu().numpy())
        if n == 0:
            raise InputError("classification validation: the validation loader yielded no batch")
        y, p = np.concatenate(truth), np.concatenate(pred)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bacc = float(balanced_accuracy_score(y, p))
        return {"val_loss": loss_sum / n, "val_balanced_accuracy": bacc,
                "val_accuracy": float(np.mean(y == p))}

    return validate
