"""The phantom cohort checked against its own ground truth (real generation, tiny and coarse)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from mripipe.core.imageio import to_array
from mripipe.core.template import load_template, reference_grid
from mripipe.core.utils import sha256_file
from mripipe.data.phantom import PhantomParams, generate_cohort, plan_cohort
from mripipe.data.phantom.anatomy import FLAIR_TISSUE

SEED = 7
# 3 subjects (one per class, one of them with two sessions) at 3 mm: ~10 s to generate.
PARAMS: dict[str, Any] = {
    "n_subjects": 3,
    "two_session_fraction": 0.34,
    "snr": 20.0,
    "t1w_spacing": [3.0, 3.0, 3.0],
    "flair_spacing": [3.0, 3.0, 6.0],
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "bids"
    out.mkdir()  # Snakemake creates the (empty) output folder before the job: must be accepted
    generate_cohort(out, SEED, PARAMS, workers=2)
    return out


def _truths(root: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    out = []
    for path in sorted(root.glob("derivatives/truth/sub-*/ses-*/*_truth.json")):
        out.append((path.name.removesuffix("_truth.json"), path.parent, json.loads(path.read_text())))
    return out


def _raw(root: Path, scan: str, channel: str) -> Path:
    sub, ses = scan.split("_")
    return root / sub / ses / "anat" / f"{scan}_{channel}.nii.gz"


def _lesion_mask(root: Path, scan: str) -> Path:
    sub, ses = scan.split("_")
    return root / "derivatives" / "lesions" / sub / ses / "anat" / f"{scan}_desc-lesions_mask.nii.gz"


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_participants_and_truth_format(cohort: Path) -> None:
    table = pd.read_csv(cohort / "participants.tsv", sep="\t", dtype=str)
    assert list(table.columns) == ["participant_id", "age", "sex", "class", "n_sessions"]
    assert sorted(table["class"]) == ["high", "low", "none"]  # balanced by construction
    assert (cohort / "dataset_description.json").is_file()
    assert not list(cohort.parent.glob(".bids.tmp-*"))  # the build folder was moved into place
    for _, row in table.iterrows():
        sessions = sorted(p.name for p in (cohort / row["participant_id"]).glob("ses-*"))
        assert sessions == [f"ses-{i + 1:02d}" for i in range(int(row["n_sessions"]))]
    assert sorted(table["n_sessions"]) == ["1", "1", "2"]
    for scan, folder, truth in _truths(cohort):
        for ch in ("T1w", "FLAIR"):
            entry = truth["channels"][ch]
            for key in ("clean", "bias", "to_template"):
                assert (folder / entry[key]).is_file(), (scan, ch, key)
            assert entry["noise_sigma"] > 0
            raw = sitk.ReadImage(str(_raw(cohort, scan, ch)))
            assert raw.GetPixelID() == sitk.sitkInt16
            clean = sitk.ReadImage(str(folder / entry["clean"]))
            assert clean.GetSize() == raw.GetSize() and np.allclose(clean.GetOrigin(), raw.GetOrigin())
        assert (folder / truth["deformation"]).is_file()
        mask = sitk.ReadImage(str(_lesion_mask(cohort, scan)))
        t1 = sitk.ReadImage(str(_raw(cohort, scan, "T1w")))
        assert mask.GetPixelID() == sitk.sitkUInt16
        assert mask.GetSize() == t1.GetSize() and np.allclose(mask.GetDirection(), t1.GetDirection())
        flair = sitk.ReadImage(str(_raw(cohort, scan, "FLAIR")))
        assert sorted(flair.GetSpacing()) == [3.0, 3.0, 6.0]  # anisotropic, own grid


def test_lesion_counts_agree_with_classes(cohort: Path) -> None:
    params = PhantomParams.from_dict(PARAMS)
    classes = pd.read_csv(cohort / "participants.tsv", sep="\t", dtype=str).set_index("participant_id")["class"]
    for scan, _, truth in _truths(cohort):
        klass = classes[scan.split("_")[0]]
        assert truth["class"] == klass
        lo, hi = params.lesion_counts[klass]
        mask = to_array(sitk.ReadImage(str(_lesion_mask(cohort, scan))))
        ids = sorted(set(np.unique(mask).tolist()) - {0})
        assert ids == list(range(1, truth["n_lesions"] + 1))  # instance ids 1..n
        assert lo <= truth["n_lesions"] <= hi
        voxel = 3.0**3
        assert truth["lesion_volumes_mm3"] == [float((mask == i).sum() * voxel) for i in ids]


def test_two_sessions_same_anatomy_changed_lesions(cohort: Path) -> None:
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for scan, _, truth in _truths(cohort):
        by_subject.setdefault(scan.split("_")[0], []).append(truth)
    twice = [v for v in by_subject.values() if len(v) == 2]
    assert len(twice) == 1
    first, second = twice[0]
    assert first["deformation"] == second["deformation"]  # one anatomy per subject
    assert first["global_scale"] == second["global_scale"]
    if first["class"] != "none":
        changes = {les["change"] for les in second["lesions"]}
        assert changes & {"grown", "shrunk", "new"}
        assert first["lesion_volumes_mm3"] != second["lesion_volumes_mm3"]
    assert first["channels"]["T1w"]["pose"] != second["channels"]["T1w"]["pose"]


def _native_to_template(folder: Path, truth: dict[str, Any], channel: str) -> sitk.Transform:
    """Full map native point -> template point: inverse pose/scaling, then the anatomy warp."""
    to_template = sitk.ReadTransform(str(folder / truth["channels"][channel]["to_template"]))
    field = sitk.Cast(sitk.ReadImage(str(folder / truth["deformation"])), sitk.sitkVectorFloat64)
    # CompositeTransform applies its last transform first
    return sitk.CompositeTransform([sitk.DisplacementFieldTransform(field), to_template.GetInverse()])


def test_lesions_lie_inside_white_matter(cohort: Path) -> None:
    wm = load_template().wm
    n_checked = 0
    for scan, folder, truth in _truths(cohort):
        mask = sitk.ReadImage(str(_lesion_mask(cohort, scan)))
        labels = to_array(mask)
        if not labels.any():
            continue
        wm_native = to_array(sitk.Resample(wm, mask, _native_to_template(folder, truth, "T1w"), sitk.sitkLinear, 0.0))
        # every lesion voxel maps to template WM probability >= 0.5 (placement keeps 1.5 mm margin)
        assert wm_native[labels > 0].min() >= 0.5, scan
        n_checked += int((labels > 0).sum())
    assert n_checked > 0


@pytest.fixture(scope="module")
def template_targets() -> dict[str, np.ndarray]:
    tpl = load_template()
    ref = reference_grid((2.0, 2.0, 2.0))

    def on_ref(img: sitk.Image) -> np.ndarray:
        return to_array(sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, 0.0))

    gm, wm, brain = on_ref(tpl.gm), on_ref(tpl.wm), on_ref(tpl.brainmask)
    flair = FLAIR_TISSUE["csf"] * np.clip(brain - gm - wm, 0, 1) + FLAIR_TISSUE["gm"] * gm + FLAIR_TISSUE["wm"] * wm
    return {"T1w": on_ref(tpl.t1), "FLAIR": flair, "mask": brain > 0.5}


def _corr_on_template(img: sitk.Image, transform: sitk.Transform, targets: dict[str, np.ndarray], channel: str) -> float:
    ref = reference_grid((2.0, 2.0, 2.0))
    moved = to_array(sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), ref, transform, sitk.sitkLinear, 0.0))
    mask = targets["mask"]
    return float(np.corrcoef(moved[mask], targets[channel][mask])[0, 1])


def test_stored_pose_brings_images_onto_template(cohort: Path, template_targets: dict[str, np.ndarray]) -> None:
    # Measured on this cohort (3 mm voxels, SNR 20, bias 0.15, 2.5 mm RMS warp), Pearson r inside
    # the template brain on a 2 mm grid: T1w through its to_template 0.73-0.78, the same image
    # with the identity 0.43-0.59. The clean T1w reaches ~0.82 (the warp, lesions and 3 mm
    # voxels keep it below 1) and drops to <= 0.78 when shifted by 2 mm along any axis; FLAIR
    # clean ~0.64 vs <= 0.59. So: r >= 0.65 for T1w, a clear gain over the identity, and the
    # stored pose must beat every 2 mm shift (a wrong convention or inverted transform fails all).
    for scan, folder, truth in _truths(cohort):
        for ch in ("T1w", "FLAIR"):
            to_template = sitk.ReadTransform(str(folder / truth["channels"][ch]["to_template"]))
            raw = sitk.ReadImage(str(_raw(cohort, scan, ch)))
            clean = sitk.ReadImage(str(folder / truth["channels"][ch]["clean"]))
            r = _corr_on_template(raw, to_template, template_targets, ch)
            r_identity = _corr_on_template(raw, sitk.Transform(), template_targets, ch)
            r_inverse = _corr_on_template(raw, to_template.GetInverse(), template_targets, ch)
            assert r > max(r_identity, r_inverse) + 0.1, (scan, ch, r, r_identity, r_inverse)
            if ch == "T1w":
                assert r >= 0.65, (scan, r)
            r_clean = _corr_on_template(clean, to_template, template_targets, ch)
            for axis in range(3):
                for sign in (-1.0, 1.0):
                    shift = [0.0, 0.0, 0.0]
                    shift[axis] = 2.0 * sign
                    moved = sitk.CompositeTransform([to_template, sitk.TranslationTransform(3, shift)])
                    assert r_clean > _corr_on_template(clean, moved, template_targets, ch), (scan, ch, shift)


def test_background_noise_matches_snr(cohort: Path) -> None:
    brain_tpl = load_template().brainmask
    for scan, folder, truth in _truths(cohort):
        for ch in ("T1w", "FLAIR"):
            entry = truth["channels"][ch]
            raw = sitk.ReadImage(str(_raw(cohort, scan, ch)))
            image = to_array(raw).astype(np.float64)
            clean = to_array(sitk.ReadImage(str(folder / entry["clean"])))
            bias = to_array(sitk.ReadImage(str(folder / entry["bias"])))
            # where there is no signal the magnitude is Rayleigh: E[x^2] = 2 sigma^2
            air = clean == 0
            assert air.mean() > 0.3
            sigma_bg = np.sqrt((image[air] ** 2).mean() / 2.0)
            # the configured SNR: sigma = mean brain intensity (clean x bias) / snr
            brain = to_array(sitk.Resample(brain_tpl, raw, _native_to_template(folder, truth, ch), sitk.sitkNearestNeighbor, 0)) > 0
            sigma_snr = float((clean * bias)[brain].mean()) / PARAMS["snr"]
            assert sigma_bg == pytest.approx(sigma_snr, rel=0.10), (scan, ch)
            assert entry["noise_sigma"] == pytest.approx(sigma_bg, rel=0.05), (scan, ch)


def test_clean_times_bias_plus_noise_reproduces_image(cohort: Path) -> None:
    for scan, folder, truth in _truths(cohort):
        for ch in ("T1w", "FLAIR"):
            entry = truth["channels"][ch]
            sigma = entry["noise_sigma"]
            image = to_array(sitk.ReadImage(str(_raw(cohort, scan, ch)))).astype(np.float64)
            signal = to_array(sitk.ReadImage(str(folder / entry["clean"]))).astype(np.float64)
            signal *= to_array(sitk.ReadImage(str(folder / entry["bias"])))
            # Rician second moment: E[x^2] = s^2 + 2 sigma^2, voxel by voxel, so also on average
            assert (image**2).mean() == pytest.approx((signal**2).mean() + 2 * sigma**2, rel=0.01)
            # at high SNR the residual is ~Gaussian with the stored sigma (bias ~ sigma^2 / 2s)
            bright = signal > 10 * sigma
            residual = image[bright] - signal[bright]
            assert residual.std() == pytest.approx(sigma, rel=0.05)
            assert abs(residual.mean()) < 0.1 * sigma
            # bias is smooth, positive, around 1
            bias = to_array(sitk.ReadImage(str(folder / entry["bias"])))
            assert 0.3 < bias.min() and bias.max() < 3.0 and abs(np.median(bias) - 1) < 0.3


def test_orientations_vary_and_geometry_is_physical(cohort: Path) -> None:
    directions = set()
    for scan, _, _truth in _truths(cohort):
        for ch in ("T1w", "FLAIR"):
            img = sitk.ReadImage(str(_raw(cohort, scan, ch)))
            directions.add(tuple(np.round(img.GetDirection(), 3)))
    assert len(directions) >= 2


def test_same_seed_identical_bytes_any_workers(cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"  # missing folder: also accepted
    generate_cohort(again, SEED, PARAMS, workers=1)
    assert _files(again) == _files(cohort)


def test_different_seed_different_subjects(cohort: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate_cohort(other, SEED + 1, PARAMS, workers=1)
    a, b = _files(cohort), _files(other)
    images = [k for k in a if k.endswith("_T1w.nii.gz") and k in b and not k.startswith("derivatives")]
    assert images and all(a[k] != b[k] for k in images)


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="^" + re.escape(f"{out}")):
        generate_cohort(out, SEED, PARAMS, workers=1)
    assert (out / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_plan_is_balanced_and_params_are_checked() -> None:
    plans = plan_cohort(42, PhantomParams.from_dict({"n_subjects": 40, "two_session_fraction": 0.25}))
    counts = pd.Series([p.klass for p in plans]).value_counts()
    assert counts.max() - counts.min() <= 1 and set(counts.index) == {"none", "low", "high"}
    assert sum(p.n_sessions == 2 for p in plans) == 10
    with pytest.raises(ValueError, match="unknown key"):
        PhantomParams.from_dict({"n_subjcts": 3})
    with pytest.raises(ValueError, match="lesion_counts.none"):
        PhantomParams.from_dict({"lesion_counts": {"none": [0, 1]}})
