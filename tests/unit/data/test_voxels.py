"""Voxels streamed in slabs reassemble to exactly what nibabel and SimpleITK read whole."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.data.header import read_header
from mripipe.data.voxels import TruncatedError, slabs


def _whole(path: Path, slab_bytes: int) -> np.ndarray:
    """The slabs of ``path`` put back together as (X, Y, Z[, T])."""
    header = read_header(path, expected_volumes=2 if path.name.startswith("4d") else 1)
    assert header.ok, header.issues
    vols: dict[int, list[np.ndarray]] = {}
    for v, z0, slab in slabs(header, slab_bytes):
        assert z0 == sum(s.shape[2] for s in vols.get(v, []))
        vols.setdefault(v, []).append(slab)
    out = [np.concatenate(vols[v], axis=2) for v in sorted(vols)]
    return out[0] if len(out) == 1 else np.stack(out, axis=-1)


@pytest.mark.parametrize("name", ["plain.nii", "packed.nii.gz", "4d.nii.gz", "scaled.nii.gz", "big_endian.nii"])
def test_nifti_slabs_match_nibabel(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(0)
    shape = (9, 7, 11, 2) if name.startswith("4d") else (9, 7, 11)
    data = rng.integers(-300, 3000, shape).astype(">i2" if name.startswith("big") else np.int16)
    img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0]))
    if name.startswith("scaled"):
        img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / name))
    expected = np.asanyarray(nib.load(str(tmp_path / name)).dataobj)
    got = _whole(tmp_path / name, slab_bytes=9 * 7 * 2 * 3)  # three slices a slab, the last one short
    assert got.shape == expected.shape and np.array_equal(got, expected)


def test_itk_slabs_match_simpleitk(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).normal(size=(11, 7, 9)).astype(np.float32)  # (Z, Y, X)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "img.mha"))
    assert np.array_equal(_whole(tmp_path / "img.mha", slab_bytes=9 * 7 * 4 * 4), arr.transpose(2, 1, 0))


def test_a_short_gzip_stream_says_how_many_bytes_it_held(tmp_path: Path) -> None:
    data = np.arange(40 * 30 * 20, dtype=np.float32).reshape(40, 30, 20)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "cut.nii"))
    raw = (tmp_path / "cut.nii").read_bytes()[: 352 + 50_000]
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw)[:-8])  # complete deflate data, no trailer
    with pytest.raises(TruncatedError) as caught:
        _whole(tmp_path / "cut.nii.gz", slab_bytes=1 << 20)
    assert (caught.value.present, caught.value.promised) == (50_000, 40 * 30 * 20 * 4)
