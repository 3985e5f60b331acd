"""Tests of mripipe.preprocess.intensity on small synthetic volumes built from the template (4 mm)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.core.imageio import from_array, to_array
from mripipe.core.template import load_template, reference_grid
from mripipe.preprocess import intensity
from mripipe.preprocess.qc import bias_correlation, psnr


def _template(spacing: float = 3.0) -> sitk.Image:
    """Template T1 resampled to ``spacing`` mm, scaled to [0, 1000] plus a dim head shell."""
    tpl = load_template()
    grid = reference_grid((spacing,) * 3)
    t1 = sitk.Resample(tpl.t1, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return t1 * 1000.0


def _bias(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field exp(0.3 x - 0.2 y + 0.15 z) on [-1, 1]^3, (X, Y, Z)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return np.exp(0.3 * x - 0.2 * y + 0.15 * z).astype(np.float32)


def test_n4_recovers_known_bias() -> None:
    clean = _template()
    arr = to_array(clean)
    bias = _bias(arr.shape)
    biased = from_array(arr * bias, clean)
    res = intensity.n4_correct(biased, {"n4_shrink": 2, "n4_iterations": [30, 30]})
    mask = to_array(res.mask) > 0
    brain = arr > 100
    assert mask[brain].mean() > 0.95  # the head mask covers the brain
    assert bias_correlation(to_array(res.bias), bias, brain) > 0.9
    # the corrected image is closer to the clean one than the biased one (after a global scale)
    corr = to_array(res.corrected)
    scale = arr[brain].mean() / corr[brain].mean()
    err_after = np.abs(corr[brain] * scale - arr[brain]).mean()
    err_before = np.abs(arr[brain] * bias[brain] - arr[brain]).mean()
    assert err_after < 0.6 * err_before


def test_tissue_mask_drops_the_dark_part_of_the_head() -> None:
    # 10 x 10 x 10 head; x < 4: dark shell (value 10, 400 voxels), x >= 4: tissue (1000, 600
    # voxels); air outside. Otsu inside the head splits 10 | 1000 -> the 600 bright voxels.
    arr = np.zeros((12, 12, 12), np.float32)
    arr[1:11, 1:11, 1:11] = 10.0
    arr[5:11, 1:11, 1:11] = 1000.0
    head = np.zeros(arr.shape, np.uint8)
    head[1:11, 1:11, 1:11] = 1
    img = from_array(arr)
    out = to_array(intensity.tissue_mask(img, from_array(head, img)))
    assert out.sum() == 600 and np.all(out[5:11, 1:11, 1:11] == 1)
    # bright part 600/1000 of the head < min_fraction 0.7 -> the head mask itself
    fallback = to_array(intensity.tissue_mask(img, from_array(head, img), min_fraction=0.7))
    np.testing.assert_array_equal(fallback, head)


def test_n4_fit_mask_options() -> None:
    clean = _template(4.0)
    arr = to_array(clean)
    biased = from_array(arr * _bias(arr.shape), clean)
    res = intensity.n4_correct(biased, {"n4_shrink": 2, "n4_fit_mask": "head"})
    brain = arr > 100
    assert bias_correlation(to_array(res.bias), _bias(arr.shape), brain) > 0.9
    with pytest.raises(ValueError, match="unknown n4_fit_mask"):
        intensity.n4_correct(biased, {"n4_fit_mask": "brain"})


@pytest.mark.parametrize("method", ["curvature", "gradient", "median", "gaussian"])
def test_denoise_raises_psnr(method: str) -> None:
    clean = _template()
    arr = to_array(clean)
    noisy = arr + np.random.default_rng(0).normal(0, 150.0, arr.shape).astype(np.float32)
    mask = arr > 100
    out = to_array(intensity.denoise(from_array(noisy, clean), method, {"gaussian_sigma_mm": 2.0}))
    assert out.shape == arr.shape
    assert psnr(out, arr, mask) > psnr(noisy, arr, mask) + 1.0


def test_denoise_nlm_runs_on_a_small_volume() -> None:
    arr = np.zeros((12, 12, 12), np.float32)
    arr[3:9, 3:9, 3:9] = 100.0
    noisy = arr + np.random.default_rng(1).normal(0, 10.0, arr.shape).astype(np.float32)
    out = to_array(intensity.denoise(from_array(noisy), "nlm", {"nlm_sample_patches": 20}))
    mask = np.ones(arr.shape, bool)
    assert psnr(out, arr, mask) > psnr(noisy, arr, mask)


def test_denoise_none_is_identity_and_unknown_fails() -> None:
    img = from_array(np.arange(27, dtype=np.float32).reshape(3, 3, 3))
    np.testing.assert_array_equal(to_array(intensity.denoise(img, "none", {})), to_array(img))
    with pytest.raises(ValueError, match="unknown denoise method"):
        intensity.denoise(img, "wavelet", {})


def test_head_mask_of_a_bright_ball() -> None:
    x, y, z = np.meshgrid(*[np.arange(32)] * 3, indexing="ij")
    ball = ((x - 16) ** 2 + (y - 16) ** 2 + (z - 16) ** 2) <= 100
    arr = np.where(ball, 500.0, 5.0).astype(np.float32)
    mask = to_array(intensity.head_mask(from_array(arr), shrink=2)) > 0
    assert (mask == ball).mean() > 0.97


def test_zscore_in_mask_hand_computed() -> None:
    # values 1, 2, 3 in the mask: mean 2, std sqrt(2/3) = 0.8165 -> -1.2247, 0, 1.2247
    # the voxel outside (value 10): 0 when skull-stripped, (10 - 2) / 0.8165 = 9.798 otherwise
    arr = np.array([1.0, 2.0, 3.0, 10.0]).reshape(4, 1, 1)
    mask = np.array([1, 1, 1, 0]).reshape(4, 1, 1)
    out = intensity.zscore_in_mask(arr, mask)
    np.testing.assert_allclose(out.ravel(), [-1.2247449, 0.0, 1.2247449, 0.0], atol=1e-6)
    out = intensity.zscore_in_mask(arr, mask, zero_outside=False)
    np.testing.assert_allclose(out.ravel()[3], 9.797959, atol=1e-5)
    assert not intensity.zscore_in_mask(arr, np.zeros_like(mask)).any()


def test_diffusion_is_stable_at_half_a_millimetre() -> None:
    """At 0.5 mm the fixed step 0.0625 made the image worse than the noisy input; the step from the
    spacing (0.03125) denoises as well as 1 mm does, without creating negative-going overshoot."""
    from mripipe.preprocess.intensity import denoise, diffusion_time_step

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:48, :48, :48]
    clean = (100 + 100 * (((x - 24) ** 2 + (y - 24) ** 2 + (z - 24) ** 2) < 15**2)).astype(np.float32)
    noisy = clean + rng.normal(0, 15, clean.shape).astype(np.float32)

    def gain(a: np.ndarray) -> float:
        return float(10 * np.log10(200**2 / np.mean((a - clean) ** 2)))

    out = {}
    for sp in (0.5, 1.0):
        img = sitk.GetImageFromArray(noisy)
        img.SetSpacing((sp, sp, sp))
        out[sp] = sitk.GetArrayFromImage(denoise(img, "curvature", {}))
        assert diffusion_time_step(img) == 0.0625 * sp
    assert gain(out[0.5]) > gain(noisy) + 5
    assert abs(gain(out[0.5]) - gain(out[1.0])) < 0.1
    assert out[0.5].min() > noisy.min()
