"""``mripipe infer``: apply a model package to new raw scans.

One scan: ``--input CH1.nii.gz [CH2 ...]`` in the package's channel order. A whole dataset:
``--dataset ROOT --source bids``, indexed by the manifest code of :mod:`mripipe.data`, one
output folder per scan. Each scan is preprocessed with the package's own parameters (the same
:func:`mripipe.preprocess.pipeline.preprocess_scan` the pipeline runs), segmented with sliding
windows and mapped back onto its reference image's grid: ``seg.nii.gz`` and ``prob.nii.gz``
(segmentation) or ``prediction.json`` (classification), plus ``inference.json`` (provenance and
timings).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mripipe.core.errors import InputError
from mripipe.core.imageio import to_array, write_image
from mripipe.core.utils import write_json
from mripipe.infer.apply import (
    Package,
    class_volumes_ml,
    classify_folder,
    is_multiclass_package,
    load_package,
    native_outputs,
    package_labels,
    segment_folder,
)
from mripipe.preprocess.fingerprint import ras_spacing
from mripipe.preprocess.pipeline import preprocess_scan

log = logging.getLogger(__name__)


def check_inputs(pkg: Package, inputs: Sequence[str | Path]) -> None:
    """Refuse inputs the package was not trained for.

    Raises:
        InputError: a channel count other than the package's, a missing file, or a voxel spacing
            (RAS axes) outside ``[min / tolerance, max * tolerance]`` of the training scans.
    """
    names = pkg.channels
    if len(inputs) != len(names):
        raise InputError(f"{inputs[0] if inputs else '--input'}: the model takes {len(names)} "
                         f"channels in this order: {', '.join(names)}; got {len(inputs)} file(s)")
    fp = pkg.meta["fingerprint"]
    tol = float(fp.get("tolerance", 2.0))
    for name, path in zip(names, inputs, strict=True):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: file not found")
        known = fp.get("spacing", {}).get(name)
        if not known:
            continue
        spacing = np.array(ras_spacing(Path(path)))
        low, high = np.array(known["min"]) / tol, np.array(known["max"]) * tol
        if np.any(spacing < low) or np.any(spacing > high):
            raise InputError(
                f"{path}: {name} spacing {spacing.round(3).tolist()} mm (RAS) is far from the training "
                f"data ({known['min']} to {known['max']} mm, tolerance x{tol:g}); resample it, or pass "
                "--ignore-spacing to apply the model anyway")


def _scan_name(reference: Path) -> str:
    """``sub-001_ses-01_T1w.nii.gz`` -> ``sub-001_ses-01`` (the file stem without its suffix)."""
    stem = reference.name.split(".")[0]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def infer_scan(pkg: Package, inputs: Sequence[str | Path], out_dir: str | Path,
               check_spacing: bool = True, sw_batch_size: int | None = None) -> dict[str, Any]:
    """Preprocess one raw scan, apply the package, write its outputs on the input's grid.

    Args:
        pkg: a loaded package.
        inputs: the scan's channel images, in ``pkg.channels`` order (the first is the reference:
            the outputs take its exact grid).
        out_dir: folder to write ``seg.nii.gz`` + ``prob.nii.gz`` or ``prediction.json`` into.
        check_spacing: refuse a spacing far from the training fingerprint.
        sw_batch_size: sliding windows per forward pass (speed and memory only); default the
            package's.

    Returns:
        The ``inference.json`` content.
    """
    if check_spacing:
        check_inputs(pkg, inputs)
    elif len(inputs) != len(pkg.channels):
        check_inputs(pkg, inputs)  # the channel count is never optional
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    channels = {name: Path(p) for name, p in zip(pkg.channels, inputs, strict=True)}
    doc: dict[str, Any] = {"inputs": {k: str(v) for k, v in channels.items()}, "model": str(pkg.root),
                           "trial": pkg.meta.get("trial"), "mlflow_run_id": pkg.meta["mlflow"].get("run_id"),
                           "task": pkg.task}
    with tempfile.TemporaryDirectory(prefix="mripipe-infer-") as tmp:
        # the registration seed derives from (seed, folder name): name the folder after the scan
        # (the reference file without its BIDS suffix), never after --out, so a scan gives the
        # same result wherever it is written, and the pipeline's result for a pipeline scan
        folder = Path(tmp) / _scan_name(channels[pkg.channels[0]])
        preprocess_scan(channels, None, folder, pkg.meta["preprocess"], pkg.meta["target_spacing"],
                        seed=int(pkg.meta.get("seed", 0)))
        t1 = time.perf_counter()
        if pkg.task == "segmentation":
            prob, seg = native_outputs(pkg, segment_folder(pkg, folder, sw_batch_size), folder, channels[pkg.channels[0]])
            write_image(prob, out / "prob.nii.gz")
            write_image(seg, out / "seg.nii.gz")
            voxels = int((to_array(seg) > 0).sum())
            doc |= {"threshold": pkg.meta["postprocess"].get("threshold"), "lesion_voxels": voxels,
                    "lesion_volume_ml": voxels * float(np.prod(seg.GetSpacing())) / 1000.0,
                    "outputs": ["seg.nii.gz", "prob.nii.gz"]}
            if is_multiclass_package(pkg):  # argmax masks: each class's volume
                doc |= {"method": "argmax", "labels": package_labels(pkg),
                        "volume_ml": class_volumes_ml(seg, package_labels(pkg))}
        else:
            proba = classify_folder(pkg, folder)
            doc |= {"class": max(proba, key=lambda c: proba[c]), "probabilities": proba,
                    "outputs": ["prediction.json"]}
            write_json(out / "prediction.json", {"class": doc["class"], "probabilities": proba})
    t2 = time.perf_counter()
    doc["timings_s"] = {"preprocess": round(t1 - t0, 3), "predict": round(t2 - t1, 3),
                        "total": round(t2 - t0, 3)}
    write_json(out / "inference.json", doc)
    log.info("%s -> %s in %.1f s (preprocess %.1f s)", channels[pkg.channels[0]], out,
             t2 - t0, t1 - t0)
    return doc


def infer_dataset(pkg: Package, root: str | Path, source: str, out_dir: str | Path,
                  check_spacing: bool = True, sw_batch_size: int | None = None) -> list[dict[str, Any]]:
    """Apply the package to every scan of a dataset, one folder ``out_dir/{scan}`` each.

    Args:
        pkg: a loaded package.
        root: the dataset root.
        source: its layout (``bids``, ``msd``, ``nnunet``, ``table``, ``dicom``), indexed by
            :func:`mripipe.data.manifest.build` with the package's channel names (DICOM series
            are converted into ``out_dir/dicom``).
        out_dir: parent folder of the per-scan outputs.
        check_spacing: refuse a scan whose spacing is far from the training fingerprint.
        sw_batch_size: sliding windows per forward pass; default the package's.

    Returns:
        The ``inference.json`` of each scan, with its ``scan`` id. A scan missing a channel is
        skipped with a warning.
    """
    from mripipe.data.manifest import build

    params = {"source": source, "root": str(root), "channels": pkg.channels}
    table = build(params, None, Path(out_dir) / "dicom" if source == "dicom" else None)
    docs = []
    for _, row in table.iterrows():
        files = [row.get(c, "") for c in pkg.channels]
        if not all(files):
            log.warning("%s: missing a channel of %s; skipped", row["scan"], pkg.channels)
            continue
        docs.append(infer_scan(pkg, files, Path(out_dir) / row["scan"], check_spacing, sw_batch_size) | {"scan": row["scan"]})
    log.info("%d scans of %s -> %s", len(docs), root, out_dir)
    return docs


def infer(model: str, out: str | Path, inputs: Sequence[str | Path] | None = None,
          dataset: str | Path | None = None, source: str = "bids", tracking_uri: str | None = None,
          device: str | None = None, threads: int = 2, check_spacing: bool = True,
          sw_batch_size: int | None = None) -> str:
    """``mripipe infer``: one scan (``inputs``, its channel images) or a dataset (``dataset``, of
    layout ``source``) through the model package ``model`` (a folder or an MLflow URI).

    Args:
        device: cpu, cuda:0, ... (None: the first GPU, else cpu).
        check_spacing: refuse a spacing far from the training data's.
        sw_batch_size: sliding windows per forward pass (None: the package's).

    Returns:
        One line for the CLI to print: the outputs and where they are.
    """
    import SimpleITK as sitk

    torch.set_num_threads(max(1, int(threads)))
    # preprocessing as the pipeline runs it (one SimpleITK thread per job): registration with
    # several threads differs from run to run
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    pkg = load_package(model, device=device, tracking_uri=tracking_uri)
    if dataset:
        docs = infer_dataset(pkg, dataset, source, out, check_spacing, sw_batch_size)
        return f"{len(docs)} scans -> {out}"
    if not inputs:
        raise InputError("infer needs the input channel images or a dataset")
    doc = infer_scan(pkg, list(inputs), out, check_spacing, sw_batch_size)
    return f"{', '.join(doc['outputs'])} -> {out} ({doc['timings_s']['total']:.1f} s)"
