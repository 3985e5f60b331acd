"""Label-balanced segmentation patches and classification volumes of the train/val scans.

Only the scans of training/validation subjects (every fold's ``train`` and ``val``) are opened;
the locked test subjects are never read here (the split is loaded with the ``train`` role, which
does not even carry the test list).

Segmentation: per scan, ``per_scan`` patches of ``size`` voxels. A share ``pos_fraction`` is
centred on lesion voxels — a lesion *instance* is drawn uniformly, then a voxel inside it, so small
lesions are sampled as often as large ones — and the rest on brain-mask voxels drawn uniformly
(such a negative may still contain lesion; ``has_lesion`` records what each patch really holds).
A scan without lesion voxels gets only negatives. Patches reaching past the border are padded with
0 (the normalised background value). The patch centre is voxel ``size // 2`` of the patch.

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

    index.tsv        scan, subject, role, val_fold, kind, centre_x, centre_y, centre_z,
                     has_lesion, file, label_file, row      (one row per patch)
    seg/{scan}_image.npy   float16 (N, C, px, py, pz)
    seg/{scan}_label.npy   uint8   (N, 1, px, py, pz), binary lesion mask
    volumes.tsv      scan, subject, class, class_id, role, val_fold, file   (one row per scan)
    volumes/{scan}.npy     float16 (C * P, x, y, z), P = len(volume_pooling)
    classes.json     {"classes": [sorted class labels]}  (index = class id)
    patches.json     the parameters used, the seed, n_channels and counts

``role`` is the subject's set in fold 0 (``train``/``val``); ``val_fold`` is the fold in which it
is validation (-1 if never). Loaders live in :mod:`mripipe.learn.loader`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
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
from mripipe.core.imageio import read_preprocessed
from mripipe.core.splits import load_splits
from mripipe.core.utils import atomic_path, interactive, read_json, rng, write_json
from mripipe.data.manifest import read_manifest

log = logging.getLogger(__name__)

INDEX = "index.tsv"
VOLUMES = "volumes.tsv"
CLASSES = "classes.json"
META = "patches.json"
POOLINGS = ("area", "max", "min")



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


def sample_centres(
    label: np.ndarray, brainmask: np.ndarray, n: int, pos_fraction: float, gen: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres: positives on lesion voxels (instance first), negatives on brain voxels.

    Args:
        label: lesion instance ids ``(X, Y, Z)`` (0 = background).
        brainmask: ``(X, Y, Z)``, non-zero inside the brain.
        n: number of centres.
        pos_fraction: share of positive centres (rounded; 0 positives without lesions).
        gen: random generator.

    Returns:
        ``(centres, positive)``: int64 ``(n, 3)`` voxel indices and bool ``(n,)``.
    """
    lesion = np.flatnonzero(label > 0)
    n_pos = int(round(n * pos_fraction)) if lesion.size else 0
    centres = []
    if n_pos:
        ids = label.ravel()[lesion]
        instances = np.unique(ids)
        chosen = gen.choice(instances, size=n_pos, replace=True)
        for inst in chosen:
            voxels = lesion[ids == inst]
            centres.append(voxels[gen.integers(voxels.size)])
    brain = np.flatnonzero(brainmask > 0)
    centres.extend(brain[gen.integers(brain.size, size=n - n_pos)])
    coords = np.stack(np.unravel_index(np.asarray(centres, dtype=np.int64), label.shape), axis=1)
    positive = np.arange(n) < n_pos
    return coords.astype(np.int64), positive


def crop_patches(volume: np.ndarray, centres: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Crop ``size`` patches whose voxel ``size // 2`` is each centre, zero-padded at borders.

    Args:
        volume: ``(C, X, Y, Z)``.
        centres: int ``(N, 3)`` voxel indices.
        size: patch size ``(px, py, pz)``.

    Returns:
        ``(N, C, px, py, pz)`` array of the volume's dtype.
    """
    s = [int(v) for v in size]
    padded = np.pad(volume, [(0, 0)] + [(v // 2, v - v // 2) for v in s])
    out = np.empty((len(centres), volume.shape[0], *s), dtype=volume.dtype)
    for i, (x, y, z) in enumerate(centres):
        # Padded index of original voxel c is c + s//2, so the patch starts at padded index c.
        out[i] = padded[:, x : x + s[0], y : y + s[1], z : z + s[2]]
    return out


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
) -> pd.DataFrame:
    """Write segmentation patches and classification volumes of every train/val scan.

    Args:
        manifest: ``results/manifest.tsv`` as a DataFrame (``subject``, ``scan``, ``class``).
        splits: the split as returned by ``mripipe.learn.split.load_splits(path, "train")``.
        preprocessed_dir: ``results/preprocessed`` (``{scan}/image.nii.gz`` ...).
        out_dir: ``results/patches`` (replaced atomically).
        params: the ``patches`` config section (``size``, ``per_scan``, ``pos_fraction``,
            ``volume_shape``, ``volume_pooling``).
        seed: master seed; scan ``s`` uses ``derive_seed(seed, "patches", s)``.

    Returns:
        The patch index (the rows of ``index.tsv``).
    """
    size = [int(v) for v in param("patches", params, "size")]
    per_scan = int(param("patches", params, "per_scan"))
    pos_fraction = float(param("patches", params, "pos_fraction"))
    roles = _subject_roles(splits)
    scans = manifest[manifest["subject"].isin(list(roles))].sort_values("scan")
    if scans.empty:
        raise InputError("manifest: no scan of a train/val subject")
    subject_class, names = _subject_classes(manifest, roles)
    pre = Path(preprocessed_dir)
    patch_rows: list[dict[str, Any]] = []
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
            n_channels = image.shape[0]
            centres, positive = sample_centres(
                label, mask, per_scan, pos_fraction, rng(seed, "patches", scan)
            )
            common = {"scan": scan, "subject": subject, "role": role, "val_fold": val_fold}
            patch_rows += _save_patches(tmp, common, image, label, centres, positive, size)
            cls = subject_class.get(subject, "")
            volume_file = f"volumes/{scan}.npy"
            np.save(tmp / volume_file, classification_volume(image, mask, params).astype(np.float16))
            volume_rows.append({
                "scan": scan, "subject": subject, "class": cls,
                "class_id": names.index(cls) if cls else -1, "role": role,
                "val_fold": val_fold, "file": volume_file,
            })
        index = pd.DataFrame(patch_rows)
        index.to_csv(tmp / INDEX, sep="\t", index=False)
        pd.DataFrame(volume_rows).to_csv(tmp / VOLUMES, sep="\t", index=False)
        write_json(tmp / CLASSES, {"classes": names})
        write_json(tmp / META, {
            "seed": seed, "size": size, "per_scan": per_scan, "pos_fraction": pos_fraction,
            **_volume_params(params), "n_channels": n_channels, "n_scans": len(volume_rows),
            "n_patches": len(index), "n_with_lesion": int(index["has_lesion"].sum()),
        })
    log.info(
        "%d patches (%d with lesion) and %d volumes from %d train/val scans -> %s",
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


def _save_patches(
    tmp: Path,
    common: dict[str, Any],
    image: np.ndarray,
    label: np.ndarray,
    centres: np.ndarray,
    positive: np.ndarray,
    size: list[int],
) -> list[dict[str, Any]]:
    """Crop and save one scan's image and label patches; their index rows.

    Args:
        tmp: the patches folder being built.
        common: ``scan``, ``subject``, ``role``, ``val_fold`` of every row.
        image: ``(C, X, Y, Z)``; label: ``(X, Y, Z)`` lesion ids.
        centres: int ``(N, 3)``; positive: bool ``(N,)`` (drawn on a lesion).
        size: patch size ``(px, py, pz)``.
    """
    scan = common["scan"]
    images = crop_patches(image, centres, size).astype(np.float16)
    labels = crop_patches((label > 0).astype(np.uint8)[None], centres, size)
    image_file, label_file = f"seg/{scan}_image.npy", f"seg/{scan}_label.npy"
    np.save(tmp / image_file, images)
    np.save(tmp / label_file, labels)
    has_lesion = np.asarray(labels.reshape(len(labels), -1).any(axis=1), dtype=bool)
    return [
        {**common, "kind": "pos" if pos else "neg", "centre_x": int(c[0]),
         "centre_y": int(c[1]), "centre_z": int(c[2]), "has_lesion": bool(les),
         "file": image_file, "label_file": label_file, "row": row}
        for row, (c, pos, les) in enumerate(zip(centres, positive, has_lesion, strict=True))
    ]


def cli_patches(ns: argparse.Namespace) -> None:
    """``mripipe patches``: adapter from the parsed arguments to :func:`extract_patches`."""
    splits = load_splits(ns.splits, "train")
    extract_patches(
        read_manifest(ns.manifest), splits, ns.preprocessed, ns.out_dir, ns.params, ns.seed
    )
