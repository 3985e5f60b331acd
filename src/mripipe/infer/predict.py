"""Test-set inference of the selected model — the only stage that reads the test subjects' images.

Segmentation: MONAI sliding-window inference with Gaussian blending
(:func:`mripipe.learn.networks.segment_probability`) -> ``{scan}_prob.nii.gz`` (lesion probability on the
template grid) and ``{scan}_prob_native.nii.gz`` (the same map resampled, linearly, onto the
scan's native reference-channel grid). Classification: ``predictions.tsv`` (one row per test scan,
``prob_<class>`` columns) and ``subjects.tsv`` (subject level: mean probabilities, argmax class).
Both write ``predict.json`` (task, trial, settings, scans).

``transform.tfm`` maps a template point to the native point (SimpleITK's resampling convention,
docs/contract.md), so resampling the template-space map onto the native grid needs its inverse:
the output voxel at native point p takes the template map's value at ``T^-1(p)``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from torch import nn

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.imageio import from_array, read_image, to_array, write_image
from mripipe.core.utils import atomic_path, read_json, write_json
from mripipe.data.manifest import held_out_scans

log = logging.getLogger(__name__)



def to_native(prob: sitk.Image, transform_path: Path, native_path: Path) -> sitk.Image:
    """Resample a template-space map onto a scan's native grid.

    Args:
        prob: map on the template grid, (X, Y, Z).
        transform_path: ``transform.tfm`` (template point -> native point).
        native_path: the native reference image; only its header (grid) is read.

    Returns:
        float32 image on the native grid (linear interpolation, 0 outside the template grid).
    """
    try:
        forward = sitk.ReadTransform(str(transform_path))
    except RuntimeError as exc:
        raise InputError(f"{transform_path}: cannot be read as an ITK transform ({exc})") from None
    try:
        inverse = forward.GetInverse()
    except RuntimeError:
        raise InputError(f"{transform_path}: transform is not invertible") from None
    if not Path(native_path).exists():
        raise FileNotFoundError(f"{native_path}: file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(native_path))
    reader.ReadImageInformation()
    size = list(reader.GetSize())[:3]
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(size)
    resampler.SetOutputOrigin(reader.GetOrigin()[:3])
    resampler.SetOutputSpacing(reader.GetSpacing()[:3])
    direction = np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3]
    resampler.SetOutputDirection(tuple(float(v) for v in direction.ravel()))
    resampler.SetTransform(inverse)  # output (native) point -> input (template) point
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return resampler.Execute(prob)


def _roi_size(ckpt: Mapping[str, Any], params: Mapping[str, Any]) -> list[int]:
    """Window size: config ``roi_size`` if set, else the checkpoint's training patch size."""
    roi = param("predict", params, "roi_size") or ckpt.get("roi_size") or ckpt["params"].get("roi_size")
    if not roi:
        raise InputError("checkpoint has no roi_size; set evaluate.roi_size in the config")
    return [int(v) for v in roi]


def predict_segmentation(model: nn.Module, ckpt: Mapping[str, Any], cases: pd.DataFrame,
                         preprocessed: Path, out_dir: Path, params: Mapping[str, Any]) -> list[str]:
    """Lesion probability maps of the test scans, template and native space.

    Args:
        model: segmentation network in eval mode (2 output channels, softmax channel 1 = lesion).
        ckpt: its checkpoint dict (``roi_size``).
        cases: test scans: ``scan`` and ``native`` (path of the native reference image).
        preprocessed: ``results/preprocessed`` (``{scan}/image.nii.gz`` (C, X, Y, Z),
            ``brainmask.nii.gz``, ``transform.tfm``).
        out_dir: folder to write ``{scan}_prob.nii.gz`` and ``{scan}_prob_native.nii.gz`` into.
        params: the ``evaluate`` section (``sw_overlap``, ``sw_batch_size``, ``roi_size``,
            ``mask_outside_brain``).

    Returns:
        The scans predicted.
    """
    from mripipe.learn.networks import segment_probability

    roi = _roi_size(ckpt, params)
    done = []
    for scan, native in zip(cases["scan"], cases["native"], strict=True):
        folder = Path(preprocessed) / scan
        img = read_image(folder / "image.nii.gz")
        image = to_array(img)
        image = image[None] if image.ndim == 3 else image
        prob = segment_probability(model, torch.from_numpy(image), roi,
                                   sw_batch_size=int(param("predict", params, "sw_batch_size")),
                                   overlap=float(param("predict", params, "sw_overlap"))).numpy()
        if param("predict", params, "mask_outside_brain"):
            prob = prob * (to_array(read_image(folder / "brainmask.nii.gz")) > 0)
        prob_img = from_array(prob.astype(np.float32), img)
        write_image(prob_img, Path(out_dir) / f"{scan}_prob.nii.gz")
        write_image(to_native(prob_img, folder / "transform.tfm", Path(native)),
                    Path(out_dir) / f"{scan}_prob_native.nii.gz")
        log.info("%s: max lesion probability %.3f, %d voxels >= 0.5", scan, float(prob.max()),
                 int((prob >= 0.5).sum()))
        done.append(scan)
    return done


def predict_classification(model: nn.Module, class_names: list[str], volume_params: Mapping[str, Any],
                           cases: pd.DataFrame, preprocessed: Path, out_dir: Path) -> pd.DataFrame:
    """Class probabilities of the test scans and their subject-level aggregate.

    Args:
        model: classification network in eval mode, K outputs in the order of ``class_names``.
        class_names: class labels, length K.
        volume_params: parameters of :func:`mripipe.learn.patches.classification_volume`
            (``volume_shape``).
        cases: test scans: ``scan``, ``subject``, ``class`` (true class, may be empty).
        preprocessed: ``results/preprocessed``.
        out_dir: folder to write ``predictions.tsv`` and ``subjects.tsv`` into.

    Returns:
        The per-scan table written to ``predictions.tsv``.
    """
    from mripipe.core.subjects import subject_predictions
    from mripipe.learn.networks import classify
    from mripipe.learn.patches import classification_volume

    rows = []
    for scan, subject, true in zip(cases["scan"], cases["subject"], cases["class"], strict=True):
        folder = Path(preprocessed) / scan
        image = to_array(read_image(folder / "image.nii.gz"))
        image = image[None] if image.ndim == 3 else image
        mask = to_array(read_image(folder / "brainmask.nii.gz"))
        volume = classification_volume(image, mask, dict(volume_params))
        proba = classify(model, torch.from_numpy(volume)[None])[0].numpy()
        if len(proba) != len(class_names):
            raise InputError(f"{folder}: model gives {len(proba)} classes, names {class_names}")
        row = {"subject": subject, "scan": scan, "true_class": true,
               "pred_class": class_names[int(np.argmax(proba))]}
        row.update({f"prob_{c}": float(p) for c, p in zip(class_names, proba, strict=True)})
        rows.append(row)
        log.info("%s: %s (p=%.3f), true %s", scan, row["pred_class"], float(proba.max()), true or "?")
    table = pd.DataFrame(rows)
    with atomic_path(Path(out_dir) / "predictions.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(Path(out_dir) / "subjects.tsv") as tmp:
        subject_predictions(table, class_names).to_csv(tmp, sep="\t")
    return table


def cli_predict(ns: argparse.Namespace) -> None:
    """Adapter for ``mripipe predict``: load the selected trial, predict the test scans."""
    from mripipe.core.devices import allocate
    from mripipe.core.splits import load_splits
    from mripipe.learn.networks import load_trained
    from mripipe.learn.patches import META, class_names

    splits = load_splits(ns.splits, "predict")
    cases = held_out_scans(Path(ns.manifest), list(splits["test"]))
    selected = read_json(ns.selected)
    torch.set_num_threads(max(1, int(ns.threads)))
    with allocate(Path.cwd() / ".mripipe" / "gpu-locks") as slot, atomic_path(ns.out_dir) as tmp:
        tmp.mkdir(parents=True)
        model, ckpt = load_trained(selected["trial_dir"], slot.device)
        task = str(ckpt.get("task", ""))
        if task == "segmentation":
            predict_segmentation(model, ckpt, cases, Path(ns.preprocessed), tmp, ns.params)
        elif task == "classification":
            patches = Path(ns.patches)
            names = list(ckpt.get("class_names") or class_names(patches))
            volume = {"volume_shape": ckpt["volume_shape"]} if "volume_shape" in ckpt else (
                read_json(patches / META))
            predict_classification(model, names, volume, cases, Path(ns.preprocessed), tmp)
        else:
            raise InputError(f"{selected['trial_dir']}/checkpoint.pt: unknown task {task!r}")
        write_json(tmp / "predict.json", {
            "experiment": ns.experiment, "task": task, "trial": selected.get("trial"),
            "trial_dir": selected["trial_dir"], "device": slot.device, "params": dict(ns.params),
            "scans": list(cases["scan"]),
        })
    log.info("%s: %s predictions of %d test scans -> %s", ns.experiment, task, len(cases), ns.out_dir)
