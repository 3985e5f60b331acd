"""The ICBM152 2009a template shipped inside nilearn's wheel (offline), as SimpleITK images."""

from __future__ import annotations

import functools
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Template:
    """ICBM152 2009a at 1 mm (197 x 233 x 189), physical space in ITK's LPS convention.

    Attributes:
        t1: T1-weighted template, float32.
        gm: grey-matter probability map in [0, 1], float32.
        wm: white-matter probability map in [0, 1], float32.
        brainmask: brain mask, uint8 (0/1).
    """

    t1: sitk.Image
    gm: sitk.Image
    wm: sitk.Image
    brainmask: sitk.Image


def _nib_to_sitk(img: object, pixel: int) -> sitk.Image:
    """nibabel image -> SimpleITK image through a NIfTI file (exact RAS->LPS geometry)."""
    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "img.nii.gz"
        nib.save(img, str(path))
        return sitk.Cast(sitk.ReadImage(str(path)), pixel)


@functools.cache
def load_template() -> Template:
    """Load the template and its tissue maps from nilearn's package data (no network).

    Cached per process; the images must be treated as read-only.
    """
    from nilearn import datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t1 = _nib_to_sitk(datasets.load_mni152_template(resolution=1), sitk.sitkFloat32)
        gm = _nib_to_sitk(datasets.load_mni152_gm_template(resolution=1), sitk.sitkFloat32)
        wm = _nib_to_sitk(datasets.load_mni152_wm_template(resolution=1), sitk.sitkFloat32)
        mask = _nib_to_sitk(datasets.load_mni152_brain_mask(resolution=1), sitk.sitkUInt8)
    for img in (gm, wm, mask):
        img.CopyInformation(t1)
    log.debug("template loaded: size %s spacing %s", t1.GetSize(), t1.GetSpacing())
    return Template(t1=t1, gm=gm, wm=wm, brainmask=mask)


def reference_grid(spacing: tuple[float, float, float]) -> sitk.Image:
    """An empty image covering the template's physical extent at ``spacing`` (mm).

    Used as the resampling target of every preprocessed scan, so all scans share one grid.
    """
    t1 = load_template().t1
    size = [
        max(1, int(round(n * s / sp)))
        for n, s, sp in zip(t1.GetSize(), t1.GetSpacing(), spacing, strict=True)
    ]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetDirection(t1.GetDirection())
    ref.SetSpacing(tuple(float(s) for s in spacing))
    # keep the centre of the first voxel's corner aligned with the template's field of view
    origin_index = [(sp / s - 1) / 2 for s, sp in zip(t1.GetSpacing(), spacing, strict=True)]
    ref.SetOrigin(t1.TransformContinuousIndexToPhysicalPoint(origin_index))
    return ref
