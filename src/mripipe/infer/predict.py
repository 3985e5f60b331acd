"""Test-set inference of the model package — the only stage that reads the test subjects' images.

``predict`` applies ``results/{experiment}/model/`` (the package ``mripipe package`` wrote and
``mripipe infer`` ships) to the test scans the pipeline preprocessed with the same parameters.
Segmentation: MONAI sliding-window inference with Gaussian blending on the template grid, then
the probabilities are resampled (linearly) through the inverse of ``transform.tfm`` onto the raw
reference image's exact grid and thresholded with the package's threshold:
``{scan}_prob.nii.gz`` and ``{scan}_seg.nii.gz`` (native grid, what ``evaluate`` scores by
default) and ``{scan}_prob_template.nii.gz`` (template grid, for ``evaluate.space: template``).
Classification: ``predictions.tsv`` (one row per test scan, ``prob_<class>`` columns) and
``subjects.tsv`` (subject level: mean probabilities, argmax class). Both write ``predict.json``
(task, trial, package, scans).

``transform.tfm`` maps a template point to the native point (SimpleITK's resampling convention,
docs/contract.md), so resampling the template-space map onto the native grid needs its inverse:
the output voxel at native point p takes the template map's value at ``T^-1(p)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mripipe.core.errors import InputError
from mripipe.core.imageio import to_array, write_image
from mripipe.core.utils import atomic_path, write_json
from mripipe.data.manifest import held_out_scans
from mripipe.infer.apply import (
    Package,
    class_volumes_ml,
    classify_folder,
    load_package,
    native_outputs,
    package_labels,
    segment_folder,
)
from mripipe.infer.apply import to_native as to_native

log = logging.getLogger(__name__)


def predict_segmentation(pkg: Package, cases: pd.DataFrame, preprocessed: Path, out_dir: Path,
                         sw_batch_size: int | None = None) -> list[str]:
    """Lesion probability maps and masks of the test scans, native and template space.

    Args:
        pkg: a segmentation package.
        cases: test scans: ``scan`` and ``native`` (path of the raw reference image).
        preprocessed: ``results/preprocessed`` (``{scan}/image.nii.gz`` (C, X, Y, Z),
            ``brainmask.nii.gz``, ``transform.tfm``).
        out_dir: folder to write ``{scan}_prob.nii.gz``, ``{scan}_seg.nii.gz`` (native grid) and
            ``{scan}_prob_template.nii.gz`` into.
        sw_batch_size: windows per forward pass (speed only); default the package's.

    Returns:
        The scans predicted.
    """
    done = []
    for scan, native in zip(cases["scan"], cases["native"], strict=True):
        folder = Path(preprocessed) / scan
        prob = segment_folder(pkg, folder, sw_batch_size)
        write_image(prob, Path(out_dir) / f"{scan}_prob_template.nii.gz")
        prob_native, seg = native_outputs(pkg, prob, folder, Path(native))
        write_image(prob_native, Path(out_dir) / f"{scan}_prob.nii.gz")
        write_image(seg, Path(out_dir) / f"{scan}_seg.nii.gz")
        if "threshold" in pkg.meta["postprocess"]:
            log.info("%s: max lesion probability %.3f, %d native voxels >= %g", scan,
                     float(to_array(prob).max()), int(to_array(seg).sum()),
                     pkg.meta["postprocess"]["threshold"])
        else:  # multi-class: argmax
            log.info("%s: argmax classes, native volumes (ml) %s", scan,
                     class_volumes_ml(seg, package_labels(pkg)))
        done.append(scan)
    return done


def predict_classification(pkg: Package, cases: pd.DataFrame, preprocessed: Path, out_dir: Path
                           ) -> pd.DataFrame:
    """Class probabilities of the test scans and their subject-level aggregate.

    Args:
        pkg: a classification package (labels, volume parameters).
        cases: test scans: ``scan``, ``subject``, ``class`` (true class, may be empty).
        preprocessed: ``results/preprocessed``.
        out_dir: folder to write ``predictions.tsv`` and ``subjects.tsv`` into.

    Returns:
        The per-scan table written to ``predictions.tsv``.
    """
    from mripipe.core.subjects import subject_predictions

    labels = [str(c) for c in pkg.meta["labels"]]
    rows = []
    for scan, subject, true in zip(cases["scan"], cases["subject"], cases["class"], strict=True):
        proba = classify_folder(pkg, Path(preprocessed) / scan)
        row = {"subject": subject, "scan": scan, "true_class": true,
               "pred_class": labels[int(np.argmax([proba[c] for c in labels]))]}
        row.update({f"prob_{c}": proba[c] for c in labels})
        rows.append(row)
        log.info("%s: %s (p=%.3f), true %s", scan, row["pred_class"], max(proba.values()), true or "?")
    table = pd.DataFrame(rows)
    with atomic_path(Path(out_dir) / "predictions.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(Path(out_dir) / "subjects.tsv") as tmp:
        subject_predictions(table, labels).to_csv(tmp, sep="\t")
    return table


def predict_test(experiment: str, model: Path, splits: Path, manifest: Path, preprocessed: Path,
                 params: dict[str, Any], out_dir: Path, threads: int = 1,
                 lock_dir: Path = Path(".mripipe/gpu-locks")) -> None:
    """``mripipe predict``: apply the model package ``model`` to the test scans of ``splits``
    (:func:`predict_segmentation` or :func:`predict_classification`), on a device allocated under
    ``lock_dir``; ``out_dir`` ends with ``predict.json``. ``params``: the ``predict`` section
    (``sw_batch_size``)."""
    from mripipe.core.devices import allocate
    from mripipe.core.split_guard import load_splits

    test = load_splits(splits, "predict")["test"]
    cases = held_out_scans(manifest, list(test))
    torch.set_num_threads(max(1, int(threads)))
    with allocate(lock_dir) as slot, atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        pkg = load_package(model, slot.device)
        if pkg.task == "segmentation":
            predict_segmentation(pkg, cases, preprocessed, tmp, (params or {}).get("sw_batch_size"))
        elif pkg.task == "classification":
            predict_classification(pkg, cases, preprocessed, tmp)
        else:
            raise InputError(f"{pkg.root}: unknown task {pkg.task!r}")
        write_json(tmp / "predict.json", {
            "experiment": experiment, "task": pkg.task, "trial": pkg.meta.get("trial"),
            "model": str(model), "weights_sha256": pkg.meta["weights"].get("sha256"),
            "device": slot.device, "scans": list(cases["scan"]),
            **({"labels": package_labels(pkg)} if pkg.task == "segmentation" else {}),
        })
    log.info("%s: %s predictions of %d test scans -> %s", experiment, pkg.task, len(cases), out_dir)
