"""The ICBM152 2009a template shipped inside nilearn's wheel (offline), as SimpleITK images."""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

log = logging.getLogger(__name__)

# nilearn's load_mni152_brain_mask default threshold on the [0, 1]-scaled T1 template
BRAIN_MASK_THRESHOLD = 0.2


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


def _nilearn_data_dir() -> Path:
    """nilearn's packaged data folder, found without importing nilearn (which takes seconds)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed: the ICBM152 template ships inside it")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _read_scaled(path: Path) -> sitk.Image:
    """A template map as float32 rescaled to a maximum of 1 (as nilearn's loaders do)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ICBM152 file missing from the nilearn package")
    img = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    peak = float(sitk.GetArrayViewFromImage(img).max())
    return img / peak if peak > 0 else img


@functools.cache
def load_template() -> Template:
    """Load the template and its tissue maps from nilearn's package data (no network).

    Equivalent to ``nilearn.datasets.load_mni152_template``, ``load_mni152_gm_template``,
    ``load_mni152_wm_template`` and ``load_mni152_brain_mask`` (T1 > 0.2) at 1 mm, read straight
    from the files so a job does not pay nilearn's import. Cached per process; treat the images
    as read-only.
    """
    data = _nilearn_data_dir()
    t1 = _read_scaled(data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = _read_scaled(data / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    wm = _read_scaled(data / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
    mask = sitk.Cast(t1 > BRAIN_MASK_THRESHOLD, sitk.sitkUInt8)
    for img in (gm, wm, mask):
        img.CopyInformation(t1)
    log.debug("template loaded: size %s spacing %s", t1.GetSize(), t1.GetSpacing())
    return Template(t1=t1, gm=gm, wm=wm, brainmask=mask)


@functools.cache
def template_extent_mm() -> tuple[float, float, float]:
    """The template's field of view in mm per axis, from its header alone (nothing decompressed):
    what a job's memory estimate needs of the output grid without loading the template."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(_nilearn_data_dir() / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    reader.ReadImageInformation()
    n, s = reader.GetSize(), reader.GetSpacing()
    return float(n[0] * s[0]), float(n[1] * s[1]), float(n[2] * s[2])


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


def template_brainmask(spacing: tuple[float, float, float]) -> sitk.Image:
    """The template brain mask on ``reference_grid(spacing)``: uint8 0/1, nearest neighbour.

    The one copy of the mask on a grid: preprocessing skull-strips with it, registration
    restricts its metric to it, QC measures mapping errors inside it.
    """
    return sitk.Resample(
        load_template().brainmask,
        reference_grid(spacing),
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        0,
        sitk.sitkUInt8,
    )
