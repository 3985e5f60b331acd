"""Cached segmentation volumes and classification volumes of the train/val scans.

Only the scans of training/validation subjects (every fold's ``train`` and ``val``) are opened;
the locked test subjects are never read here (the split is loaded with the ``train`` role, which
does not even carry the test list).

Segmentation: each scan's image and lesion ids, cropped to the bounding box of its brain mask
(and lesions) plus ``MARGIN`` voxels, are cached as ``.npy`` arrays. Training draws fresh patches of
``size`` voxels from them every epoch (:mod:`mripipe.learn.sampling`, :mod:`mripipe.learn.loader`):
a ``pos_fraction`` share around a lesion voxel, the rest uniformly; ``per_scan`` patches per
training scan make one epoch when ``training.batches_per_epoch`` is 0.

Classification: the unit is the **whole preprocessed volume**, masked to the brain and downsampled
to a fixed ``volume_shape`` by each reduction of ``volume_pooling`` over the same cells: ``area``
(averaging, anti-aliased), ``max`` and ``min``. Area averaging alone washes a lesion of a few
voxels out (a ~130 mm³ lesion fills a fraction of one ~5 mm cell); the cell maximum keeps a
FLAIR-bright spot and the minimum a T1w-dark one, so the burden stays visible after
downsampling. Lesion burden is a property of the whole brain — a single patch cannot tell a subject with one lesion from one with twenty, so
patch-level labels would be noisy and soft voting would have to relearn the count — while every
scan already lies on the same template grid, so the whole volume is aligned across subjects and,
downsampled, is small enough (tens of kB) to train on a CPU. A fixed shape (not a fixed spacing)
keeps the network input identical whatever target spacing preprocessing used. Each scan is one
item carrying its subject's class; :func:`classification_volume` is the exact transform that
``predict`` applies to the test scans.

Layout of ``out_dir`` (written atomically: built in a temporary sibling, then renamed)::

    index.tsv        scan, subject, role, val_fold, file, label_file, origin_x/y/z (first voxel
                     of the crop in the preprocessed grid), size_x/y/z, n_lesions, lesion_voxels,
                     has_lesion                              (one row per scan)
    seg/{scan}_image.npy   float16 (C, x, y, z), the brain-cropped preprocessed image
    seg/{scan}_label.npy   uint16  (x, y, z), lesion instance ids (0 = background)
    volumes.tsv      scan, subject, class, class_id, role, val_fold, file   (one row per scan)
    volumes/{scan}.npy     float16 (C * P, x, y, z), P = len(volume_pooling)
    classes.json     {"classes": [sorted class labels]}  (index = class id)
    patches.json     the parameters used, the seed, n_channels, counts and ``labels`` (the
                     segmentation label map, :mod:`mripipe.core.labels`)

Multi-class segmentation (K >= 2 foreground classes in ``labels``): ``seg/{scan}_label.npy``
holds the class indices 0..K (:func:`mripipe.core.labels.class_index`) instead of instance ids,
``n_lesions`` counts the classes present, and sampling draws each class's share
(:mod:`mripipe.learn.sampling`).

``role`` is the subject's set in fold 0 (``train``/``val``); ``val_fold`` is the fold in which it
is validation (-1 if never). Loaders live in :mod:`mripipe.learn.loader`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import Resize
from torch.nn import functional
from tqdm import tqdm

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.labels import class_index, foreground, resolve_labels
from mripipe.core.split_guard import load_splits
from mripipe.core.utils import atomic_path, interactive, read_json, write_json
from mripipe.data.manifest import read_manifest

log = logging.getLogger(__name__)

INDEX = "index.tsv"
VOLUMES = "volumes.tsv"
CLASSES = "classes.json"
META = "patches.json"
POOLINGS = ("area", "max", "min")
MARGIN = 4  # voxels kept around the brain (and lesion) bounding box of a cached scan



def classification_volume(
    image: np.ndarray, brainmask: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    """The classification input of one scan: the brain, downsampled to ``volume_shape``.

    Every reduction of ``volume_pooling`` is applied to every image channel over the same
    adaptive cells (those of area averaging); the outputs are stacked reduction-major:
    ``[area c0..c(C-1), max c0.., min c0..]`` for ``["area", "max", "min"]``.

    Args:
        image: preprocessed image ``(C, X, Y, Z)``.
        brainmask: brain mask ``(X, Y, Z)``; voxels outside it are set to 0 before pooling.
        params: the ``patches`` config section (``volume_shape``, default ``[40, 48, 40]``;
            ``volume_pooling``, default ``["area"]``).

    Returns:
        float32 array ``(C * P, x, y, z)`` with ``(x, y, z) = volume_shape`` and P reductions.
    """
    if image.ndim != 4 or image.shape[1:] != brainmask.shape:
        raise InputError(
            f"image {image.shape} and brain mask {brainmask.shape} do not match as (C, X, Y, Z)"
        )
    shape = [int(s) for s in param("patches", params, "volume_shape")]
    poolings = [str(p) for p in param("patches", params, "volume_pooling")]
    unknown = sorted(set(poolings) - set(POOLINGS))
    if unknown or not poolings:
        raise InputError(f"volume_pooling {poolings}: expected a non-empty subset of {POOLINGS}")
    masked = torch.from_numpy(np.where(brainmask[None] > 0, image, 0).astype(np.float32))
    outputs = []
    for pooling in poolings:
        if pooling == "area":
            out = torch.as_tensor(Resize(spatial_size=shape, mode="area")(masked))
        elif pooling == "max":
            out = functional.adaptive_max_pool3d(masked[None], shape)[0]
        else:
            out = -functional.adaptive_max_pool3d(-masked[None], shape)[0]
        outputs.append(out)
    return np.asarray(torch.cat(outputs), dtype=np.float32)


def class_names(patches_dir: str | Path) -> list[str]:
    """Sorted class labels of the training/validation scans; index = class id."""
    path = Path(patches_dir) / CLASSES
    return [str(c) for c in read_json(path)["classes"]]


def patch_labels(patches_dir: str | Path) -> dict[str, int]:
    """The segmentation label map recorded in ``patches.json`` (``{"lesion": 1}`` if absent)."""
    return foreground(read_json(Path(patches_dir) / META).get("labels"))


def brain_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of a ``(X, Y, Z)`` mask grown by ``margin`` voxels (whole volume if empty)."""
    nz = np.nonzero(mask)
    if len(nz[0]) == 0:
        return tuple(slice(0, s) for s in mask.shape)
    return tuple(
        slice(max(0, int(i.min()) - margin), min(s, int(i.max()) + margin + 1))
        for i, s in zip(nz, mask.shape, strict=True)
    )


def _subject_roles(splits: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """``subject -> (role in fold 0, fold where it is validation or -1)`` for train/val subjects."""
    folds = splits["folds"]
    val_fold = {s: k for k, fold in enumerate(folds) for s in fold["val"]}
    first_val = set(folds[0]["val"])
    subjects = {s for fold in folds for s in (*fold["train"], *fold["val"])}
    leaked = sorted(set(splits.get("test", [])) & subjects)
    if leaked:
        raise InputError(f"splits: test subjects {leaked[:5]} also in train/val")
    return {
        s: ("val" if s in first_val else "train", val_fold.get(s, -1)) for s in sorted(subjects)
    }


def extract_patches(
    manifest: pd.DataFrame,
    splits: dict[str, Any],
    preprocessed_dir: str | Path,
    out_dir: str | Path,
    params: dict[str, Any],
    seed: int,
    labels: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Cache the segmentation volumes and write the classification volumes of every train/val scan.

    Args:
        manifest: ``results/manifest.tsv`` as a DataFrame (``subject``, ``scan``, ``class``).
        splits: the split as returned by ``mripipe.learn.split.load_splits(path, "train")``.
        preprocessed_dir: ``results/preprocessed`` (``{scan}/image.nii.gz`` ...).
        out_dir: ``results/patches`` (replaced atomically).
        params: the ``patches`` config section (``size``, ``per_scan``, ``pos_fraction``,
            ``volume_shape``, ``volume_pooling``).
        seed: master seed, recorded in patches.json (the loader draws the patches online).
        labels: the label map (:func:`mripipe.core.labels.resolve_labels`); None = one lesion
            class. With K >= 2 classes the cached labels are class indices 0..K.

    Returns:
        The scan index (the rows of ``index.tsv``).
    """
    size = [int(v) for v in param("patches", params, "size")]
    per_scan = int(param("patches", params, "per_scan"))
    pos_fraction = float(param("patches", params, "pos_fraction"))
    fg = foreground(labels)
    roles = _subject_roles(splits)
    scans = manifest[manifest["subject"].isin(list(roles))].sort_values("scan")
    if scans.empty:
        raise InputError("manifest: no scan of a train/val subject")
    subject_class, names = _subject_classes(manifest, roles)
    pre = Path(preprocessed_dir)
    from mripipe.core.imageio import read_preprocessed  # SimpleITK: the loader needs none

    seg_rows: list[dict[str, Any]] = []
    volume_rows: list[dict[str, Any]] = []
    n_channels = 0
    with atomic_path(out_dir) as tmp:
        (tmp / "seg").mkdir(parents=True)
        (tmp / "volumes").mkdir()
        for rec in tqdm(scans.itertuples(index=False), total=len(scans), desc="patches",
                        disable=not interactive()):
            scan, subject = str(rec.scan), str(rec.subject)
            role, val_fold = roles[subject]
            image, label, mask, _ = read_preprocessed(pre / scan)
            if len(fg) >= 2:
                label = class_index(label, fg, pre / scan / "label.nii.gz")
            n_channels = image.shape[0]
            common = {"scan": scan, "subject": subject, "role": role, "val_fold": val_fold}
            seg_rows.append(_save_scan(tmp, common, image, label, mask))
            cls = subject_class.get(subject, "")
            volume_file = f"volumes/{scan}.npy"
            np.save(tmp / volume_file, classification_volume(image, mask, params).astype(np.float16))
            volume_rows.append({
                "scan": scan, "subject": subject, "class": cls,
                "class_id": names.index(cls) if cls else -1, "role": role,
                "val_fold": val_fold, "file": volume_file,
            })
        index = pd.DataFrame(seg_rows)
        index.to_csv(tmp / INDEX, sep="\t", index=False)
        pd.DataFrame(volume_rows).to_csv(tmp / VOLUMES, sep="\t", index=False)
        write_json(tmp / CLASSES, {"classes": names})
        write_json(tmp / META, {
            "seed": seed, "size": size, "per_scan": per_scan, "pos_fraction": pos_fraction,
            **_volume_params(params), "n_channels": n_channels, "n_scans": len(volume_rows),
            "n_with_lesion": int(index["has_lesion"].sum()),
            "n_lesions": int(index["n_lesions"].sum()), "labels": fg,
        })
    log.info(
        "%d cached scans (%d with lesions) and %d volumes from %d train/val scans -> %s",
        len(index), int(index["has_lesion"].sum()), len(volume_rows), len(scans), out_dir,
    )
    return index


def _volume_params(params: dict[str, Any]) -> dict[str, list[Any]]:
    """``volume_shape`` and ``volume_pooling`` as recorded in patches.json."""
    return {
        "volume_shape": [int(v) for v in param("patches", params, "volume_shape")],
        "volume_pooling": [str(v) for v in param("patches", params, "volume_pooling")],
    }


def _subject_classes(
    manifest: pd.DataFrame, roles: dict[str, tuple[str, int]]
) -> tuple[dict[str, str], list[str]]:
    """``subject -> class`` ("" when unknown) and the sorted class labels of the train/val subjects."""
    classes = manifest["class"].fillna("").astype(str) if "class" in manifest else None
    subject_class = (
        dict(zip(manifest["subject"], classes, strict=True)) if classes is not None else {}
    )
    names = sorted({subject_class.get(s, "") for s in roles} - {""})
    return subject_class, names


def _save_scan(
    tmp: Path, common: dict[str, Any], image: np.ndarray, label: np.ndarray, mask: np.ndarray
) -> dict[str, Any]:
    """Cache one scan's brain-cropped image and lesion ids for online sampling; its index row.

    Args:
        tmp: the patches folder being built.
        common: ``scan``, ``subject``, ``role``, ``val_fold`` of the row.
        image: ``(C, X, Y, Z)``; label: ``(X, Y, Z)`` lesion ids; mask: ``(X, Y, Z)`` brain.
    """
    scan = common["scan"]
    box = brain_box((mask > 0) | (label > 0), MARGIN)
    image_file, label_file = f"seg/{scan}_image.npy", f"seg/{scan}_label.npy"
    np.save(tmp / image_file, np.ascontiguousarray(image[(slice(None), *box)], dtype=np.float16))
    ids = np.ascontiguousarray(label[box])
    np.save(tmp / label_file, ids.astype(np.uint16 if ids.max(initial=0) < 2**16 else np.int32))
    n_lesions = int(np.unique(ids[ids > 0]).size)
    return {**common, "file": image_file, "label_file": label_file,
            "origin_x": box[0].start, "origin_y": box[1].start, "origin_z": box[2].start,
            "size_x": ids.shape[0], "size_y": ids.shape[1], "size_z": ids.shape[2],
            "n_lesions": n_lesions, "lesion_voxels": int((ids > 0).sum()),
            "has_lesion": n_lesions > 0}


def write_patches(manifest: Path, splits: Path, preprocessed: Path, out_dir: Path,
                  params: dict[str, Any], seed: int, labels: dict[str, int] | None = None,
                  manifest_meta: Path | None = None) -> pd.DataFrame:
    """``mripipe patches``: :func:`extract_patches` of the files the rule hands over.

    Args:
        manifest: ``results/manifest.ready.tsv``.
        splits: ``results/splits.json`` (read through the leakage guard, for training).
        preprocessed: ``results/preprocessed``.
        out_dir: ``results/patches``.
        params: the ``patches`` config section.
        seed: master seed.
        labels: ``data.labels`` (name -> value; empty or None = the dataset's declared labels).
        manifest_meta: ``results/manifest.json`` (the labels an MSD/nnU-Net dataset declares).
    """
    split = load_splits(splits, "train")
    label_map = resolve_labels(labels, manifest_meta)
    return extract_patches(read_manifest(manifest), split, preprocessed, out_dir, params, seed, label_map)
