"""The phantom in Medical Segmentation Decathlon layout, with two foreground classes.

``mripipe phantom --layout msd`` writes ``imagesTr/phantom_XXX.nii.gz`` (4-D: T1w, FLAIR),
``labelsTr/phantom_XXX.nii.gz`` and ``dataset.json``, one case per subject (its first session;
MSD has no sessions, and two cases of one subject would leak across a split).

The cohort is generated as BIDS first (:func:`mripipe.data.phantom.generate_cohort`), then each
scan is converted: the FLAIR is resampled onto the T1w grid through the true poses (MSD channels
share one grid, co-registered), and each lesion is split into two nested classes, like a tumour's
core inside its oedema:

- label 1, ``rim``: the lesion's outer layer, the voxels with a face neighbour outside the lesion
  (partial-volume edge: intermediate intensities);
- label 2, ``core``: the lesion's interior, the rest (full lesion contrast). A lesion at most two
  voxels thick has no core.

Region-wise evaluation then has the BraTS shape: ``lesion`` = {1, 2}, ``core`` = {2}.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from mripipe.core.imageio import from_array, read_image, to_array, write_image
from mripipe.core.utils import read_json, write_json
from mripipe.data.phantom.bids_writer import ScanPaths
from mripipe.data.phantom.geometry import to_sitk_affine

log = logging.getLogger(__name__)

MODALITIES = ("T1w", "FLAIR")
LABELS = {"0": "background", "1": "rim", "2": "core"}


def core_and_rim(instances: np.ndarray) -> np.ndarray:
    """Two-class label of a lesion instance mask: 1 = rim (outer voxel layer), 2 = core.

    Args:
        instances: (X, Y, Z) integer lesion ids (0 = background).

    Returns:
        uint8 array (X, Y, Z) with values 0, 1, 2.
    """
    out = np.zeros(instances.shape, np.uint8)
    for k, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        inside = instances[grown] == k
        core = ndimage.binary_erosion(inside, border_value=0)  # 6-connected structuring element
        out[grown][inside] = 1
        out[grown][core] = 2
    return out


def _matrix(truth: dict[str, Any], channel: str) -> np.ndarray:
    return np.asarray(truth["channels"][channel]["native_to_template_matrix"], dtype=float)


def convert_scan(paths: ScanPaths, image_out: Path, label_out: Path) -> dict[str, int]:
    """Write one BIDS phantom scan as an MSD case (4-D image on the T1w grid, two-class label).

    Returns:
        Voxel counts ``{"rim": n1, "core": n2}``.
    """
    truth = read_json(paths.truth_json())
    t1 = read_image(paths.image("T1w"))
    flair = sitk.Cast(read_image(paths.image("FLAIR")), sitk.sitkFloat32)
    # a T1w point -> template -> the FLAIR point (the true poses, so the channels align exactly)
    t1_to_flair = np.linalg.inv(_matrix(truth, "FLAIR")) @ _matrix(truth, "T1w")
    on_t1 = sitk.Resample(flair, t1, to_sitk_affine(t1_to_flair), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    on_t1 = sitk.Cast(sitk.Round(on_t1), t1.GetPixelID())
    write_image(sitk.JoinSeries([t1, on_t1]), image_out)
    instances = read_image(paths.lesions())
    label = core_and_rim(to_array(instances))
    write_image(from_array(label, instances), label_out)
    return {"rim": int((label == 1).sum()), "core": int((label == 2).sum())}


def write_msd(bids_root: Path, out: Path) -> dict[str, Any]:
    """Convert a phantom BIDS cohort into an MSD task folder ``out`` (created here).

    Args:
        bids_root: the cohort written by :func:`mripipe.data.phantom.generate_cohort`.
        out: the MSD root to create (``imagesTr/``, ``labelsTr/``, ``dataset.json``).

    Returns:
        The ``dataset.json`` written.
    """
    subjects = sorted(p.name for p in bids_root.glob("sub-*") if p.is_dir())
    training = []
    for subject in subjects:
        case = f"phantom_{subject.removeprefix('sub-')}"
        image, label = Path("imagesTr") / f"{case}.nii.gz", Path("labelsTr") / f"{case}.nii.gz"
        counts = convert_scan(ScanPaths(bids_root, subject, "ses-01"), out / image, out / label)
        log.debug("%s: %s", case, counts)
        training.append({"image": f"./{image.as_posix()}", "label": f"./{label.as_posix()}"})
    meta = {
        "name": "mripipe phantom",
        "description": "ICBM152-based phantom; white-matter lesions split into a core and a rim",
        "reference": "mripipe (data/phantom/msd_writer.py)",
        "licence": "CC-BY-SA 4.0",
        "tensorImageSize": "4D",
        "modality": {str(k): m for k, m in enumerate(MODALITIES)},
        "labels": LABELS,
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    write_json(out / "dataset.json", meta)
    return meta


def generate_msd(out: str | Path, seed: int, params: dict[str, Any], workers: int = 1) -> dict[str, Any]:
    """Generate the phantom (one session per subject) and write it in MSD layout at ``out``.

    Like the BIDS cohort, ``out`` is either absent/empty or complete: everything is built in
    temporary sibling folders first.

    Raises:
        OutputExistsError: ``out`` exists and is not an empty folder.
    """
    from mripipe.data.phantom import OutputExistsError, generate_cohort

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out}: already exists and is not empty; refusing to overwrite it (remove it to regenerate the phantom)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        generate_cohort(work / "bids", seed, {**params, "two_session_fraction": 0.0}, workers)
        meta = write_msd(work / "bids", work / "msd")
        os.chmod(work / "msd", 0o755)
        if out.exists():
            out.rmdir()
        os.replace(work / "msd", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("phantom (MSD layout): %d cases written to %s, labels %s", meta["numTraining"], out, LABELS)
    return meta
