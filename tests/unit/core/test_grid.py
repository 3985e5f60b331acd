"""The one "same grid" rule (core.grid.match_grid) and the one raw-label reader (imageio.read_label).

Every orientation a label can be written in on its image's grid (the 48 permutations and flips of
its axes, made by SimpleITK's own DICOMOrient, an implementation independent of ours) comes back
voxel for voxel as the label written in the image's own axis order, each voxel at its physical
point; a label already in that order comes back bit-identical; one shifted by a voxel, rescaled,
rotated or of another size is refused naming the file and what differs.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.core.grid import AxisOrder, Grid, LabelGrid, match_grid
from mripipe.core.imageio import ImageError, from_array, read_label, to_array, write_image

SHAPE = (5, 4, 3)  # every axis a different length: a wrong permutation cannot fit
#: all 48 orientation codes: one letter of each pair, in every order
CODES = ["".join(c) for p in itertools.permutations(("RL", "AP", "SI"))
         for c in itertools.product(*p)]


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def _reference(oblique: bool) -> sitk.Image:
    """A float image of SHAPE: anisotropic voxels, own origin; LPS-flipped or oblique axes."""
    ref = from_array(np.zeros(SHAPE, np.float32))
    ref.SetSpacing((1.5, 1.0, 3.0))
    ref.SetOrigin((12.0, -30.0, 7.5))
    direction = _rotation(np.radians(10), np.radians(20)) if oblique else np.diag([-1.0, -1.0, 1.0])
    ref.SetDirection(tuple(direction.ravel()))
    return ref


def _label(ref: sitk.Image) -> sitk.Image:
    """Distinct values in every voxel (asymmetric under any permutation or flip), on ``ref``'s grid."""
    return from_array(np.arange(1, np.prod(SHAPE) + 1, dtype=np.uint16).reshape(SHAPE), ref)


def _physical_points(img: sitk.Image) -> dict[int, np.ndarray]:
    """Label value -> the physical point of its voxel."""
    arr = to_array(img)
    return {int(arr[i]): np.array(img.TransformIndexToPhysicalPoint(tuple(int(v) for v in i)))
            for i in np.ndindex(arr.shape)}


def test_every_axis_order_is_covered() -> None:
    ref = _reference(oblique=False)
    orders = {match_grid(Grid.of(sitk.DICOMOrient(_label(ref), c)), Grid.of(ref), 0.01).order for c in CODES}
    assert len(CODES) == 48 and len(orders) == 48 and None not in orders


@pytest.mark.parametrize("oblique", [False, True])
@pytest.mark.parametrize("code", CODES)
def test_a_permuted_or_flipped_label_comes_back_on_the_reference_axes(
        tmp_path: Path, code: str, oblique: bool) -> None:
    ref = _reference(oblique)
    label = _label(ref)
    path = tmp_path / "mask.nii.gz"
    write_image(sitk.DICOMOrient(label, code), path)  # as dcm2niix may write it
    raw = sitk.ReadImage(str(path))
    out = read_label(path, ref)
    assert out.GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(to_array(out), to_array(label))  # voxel for voxel
    assert tuple(out.GetSize()) == SHAPE
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(out.GetDirection(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    before, after = _physical_points(raw), _physical_points(out)
    assert before.keys() == after.keys()
    for value, point in before.items():  # every voxel keeps its physical point
        np.testing.assert_allclose(after[value], point, atol=1e-6)


def test_a_label_in_the_reference_order_comes_back_bit_identical(tmp_path: Path) -> None:
    ref = _reference(oblique=True)
    path = tmp_path / "mask.nii.gz"
    write_image(sitk.Cast(_label(ref), sitk.sitkInt16), path)  # any integer type
    raw = sitk.ReadImage(str(path))
    out = read_label(path, ref)
    assert sitk.GetArrayViewFromImage(out).tobytes() == sitk.GetArrayViewFromImage(
        sitk.Cast(raw, sitk.sitkUInt16)).tobytes()
    assert (out.GetOrigin(), out.GetSpacing(), out.GetDirection()) == (
        raw.GetOrigin(), raw.GetSpacing(), raw.GetDirection())  # the file's own header, untouched
    order = match_grid(Grid.of(raw), Grid.of(ref), 0.01).order
    assert order == AxisOrder((0, 1, 2), (False, False, False)) and order.identity


def _moved(ref: sitk.Image, how: str) -> sitk.Image:
    """A label of SHAPE near ``ref``'s grid but not on it."""
    img = _label(ref)
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    if how == "shifted":  # by one voxel along x
        img.SetOrigin(tuple(np.array(ref.GetOrigin()) + direction[:, 0] * ref.GetSpacing()[0]))
    elif how == "rescaled":
        img.SetSpacing(tuple(1.25 * s for s in ref.GetSpacing()))
    elif how == "rotated":
        img.SetDirection(tuple((_rotation(0.0, np.radians(30)) @ direction).ravel()))
    elif how == "resized":
        img = from_array(np.ones((5, 4, 4), np.uint16), ref)
    return img


@pytest.mark.parametrize(("how", "named"), [("shifted", "origin shifted"), ("rescaled", "spacing"),
                                             ("rotated", "rotated"), ("resized", "shape")])
def test_a_label_on_another_grid_is_refused_naming_the_file(tmp_path: Path, how: str, named: str) -> None:
    ref = _reference(oblique=False)
    path = tmp_path / f"{how}.nii.gz"
    write_image(sitk.DICOMOrient(_moved(ref, how), "SAL"), path)  # permuted too: still refused
    match = match_grid(Grid.of(sitk.ReadImage(str(path))), Grid.of(ref), 0.01)
    assert match.order is None and named in match.detail
    with pytest.raises(ImageError, match=rf"^{path}: not on the grid of t1\.nii\.gz \(.*{named}"):
        read_label(path, ref, reference_name="t1.nii.gz")


def test_tolerance_in_mm(tmp_path: Path) -> None:
    ref = _reference(oblique=False)
    near = _label(ref)
    near.SetOrigin(tuple(np.array(ref.GetOrigin()) + [0.004, 0.0, 0.0]))
    assert match_grid(Grid.of(near), Grid.of(ref), 0.01).order is not None
    match = match_grid(Grid.of(near), Grid.of(ref), 0.001)
    assert match.order is None and "up to 0.004 mm apart, more than 0.001 mm" in match.detail
    path = tmp_path / "near.nii.gz"
    write_image(near, path)
    with pytest.raises(ImageError, match="near.nii.gz: not on the grid"):
        read_label(path, ref, LabelGrid(tolerance_mm=0.001, resample=False))


def test_resampled_onto_the_reference_only_when_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ref = _reference(oblique=False)
    coarse = from_array(np.ones((3, 3, 2), np.uint16), ref)  # 2x the voxel: covers the grid
    coarse.SetSpacing(tuple(2 * s for s in ref.GetSpacing()))
    path = tmp_path / "coarse.nii.gz"
    write_image(coarse, path)
    with pytest.raises(ImageError, match="coarse.nii.gz: .*never resampled silently"):
        read_label(path, ref)
    with caplog.at_level(logging.WARNING):
        out = read_label(path, ref, LabelGrid.from_params({"resample_labels": True}))
    assert "coarse.nii.gz" in caplog.text and "resampled" in caplog.text
    assert Grid.of(out).shape == SHAPE and match_grid(Grid.of(out), Grid.of(ref), 1e-6).order is not None
    assert to_array(out).all()


def test_policy_defaults_come_from_the_schema() -> None:
    assert LabelGrid.from_params() == LabelGrid(0.01, False)
    assert LabelGrid.from_params({"grid_tolerance_mm": 0.5, "root": "x"}) == LabelGrid(0.5, False)


def test_a_4d_reference_is_read_by_its_spatial_grid(tmp_path: Path) -> None:
    ref = _reference(oblique=False)
    prob = from_array(np.zeros((3, *SHAPE), np.float32), ref)  # a vector image, e.g. K + 1 classes
    path = tmp_path / "mask.nii.gz"
    write_image(sitk.DICOMOrient(_label(ref), "IRP"), path)
    np.testing.assert_array_equal(to_array(read_label(path, prob)), to_array(_label(ref)))
