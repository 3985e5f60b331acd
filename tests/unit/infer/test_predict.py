"""predict: native-space resampling direction, sliding-window segmentation, classification,
and the CLI end to end, each with a small real MONAI network written as a model package by
:func:`mripipe.learn.package.write_package` (the writer ``select`` runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from mripipe.cli import main
from mripipe.core.imageio import from_array, read_image, to_array, write_image
from mripipe.core.split_guard import hash_test_list
from mripipe.core.utils import read_json, write_json
from mripipe.data.manifest import held_out_scans
from mripipe.infer.apply import load_package
from mripipe.infer.predict import predict_classification, predict_segmentation, to_native
from mripipe.learn.checkpoint import Checkpoint, CheckpointMeta, save
from mripipe.learn.networks import build_model
from mripipe.learn.package import write_package
from mripipe.learn.search import resolve_params

torch.set_num_threads(1)
SHIFT = (6.0, -3.0, 0.0)  # transform.tfm: template point x -> native point x + SHIFT (mm)
SCANS = {"sub-001_ses-01": "sub-001", "sub-001_ses-02": "sub-001", "sub-002_ses-01": "sub-002"}
SEG_PARAMS = {"task": "segmentation", "network": {"name": "unet", "channels": [4, 8], "dropout": 0.0}}
CLS_PARAMS = {"task": "classification", "network": {"name": "densenet", "width": 4, "depth": 1}}


def make_package(root: Path, experiment: dict, n_classes: int, labels: list[str], seed: int = 0,
                 label_map: dict[str, int] | None = None, predict: dict | None = None) -> Path:
    """A package of an untrained network, written by the real writer from a real checkpoint
    (``label_map``: a segmentation checkpoint's ``labels``, as train records them)."""
    torch.manual_seed(seed)
    params = resolve_params(experiment, 0)
    model = build_model(params, 2, n_classes)
    trial = root / "trials" / "trial-000"
    trial.mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta(in_channels=2, n_classes=n_classes, class_names=tuple(labels),
                          labels=label_map or None, roi_size=(16, 16, 16), trial="trial-000",
                          task=params.task)
    save(Checkpoint(model.state_dict(), params, 1, "val_dice", 0.5, meta), trial / "checkpoint.pt")
    fingerprint = {"axes": "RAS", "n_scans": 1, "tolerance": 2.0, "spacing": {}}
    settings = {"preprocess": {}, "target_spacing": [2.0, 2.0, 2.0], "threshold": 0.5,
                "predict": {"sw_overlap": 0.25, "sw_batch_size": 4, **(predict or {})}}
    volume = {"volume_shape": [32, 32, 32], "volume_pooling": ["area"]}
    write_package(trial, root / "model", ["T1w", "FLAIR"], settings, fingerprint,
                  volume if params.task == "classification" else None)
    return root / "model"


def _template_grid() -> sitk.Image:
    ref = sitk.Image([24, 24, 24], sitk.sitkFloat32)
    ref.SetSpacing((2.0, 2.0, 2.0))
    return ref


def same_grid(img: sitk.Image, ref: sitk.Image) -> bool:
    """Same size, spacing, origin and direction: the same voxel grid."""
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()) == (
        ref.GetSize(), ref.GetSpacing(), ref.GetOrigin(), ref.GetDirection())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Preprocessed folders of three scans (two test scans of sub-001), native T1w, a manifest."""
    root = tmp_path_factory.mktemp("predict")
    ref = _template_grid()
    gen = np.random.default_rng(0)
    rows = []
    for scan, subject in SCANS.items():
        folder = root / "preprocessed" / scan
        image = gen.normal(size=(2, 24, 24, 24)).astype(np.float32)
        mask = np.zeros((24, 24, 24), np.uint8)
        mask[2:22, 2:22, 2:22] = 1
        write_image(from_array(image, ref), folder / "image.nii.gz")
        write_image(from_array(mask, ref), folder / "brainmask.nii.gz")
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteTransform(sitk.TranslationTransform(3, SHIFT), str(folder / "transform.tfm"))
        native = sitk.Image([30, 30, 30], sitk.sitkFloat32)
        native.SetSpacing((1.5, 1.5, 1.5))
        native.SetOrigin((5.0, -3.0, 1.0))
        write_image(native, root / "raw" / f"{scan}_T1w.nii.gz")
        rows.append({"subject": subject, "session": scan[-6:], "scan": scan,
                     "T1w": str(root / "raw" / f"{scan}_T1w.nii.gz"), "FLAIR": "x", "label": "",
                     "class": "low" if subject == "sub-001" else "none", "truth": ""})
    pd.DataFrame(rows).to_csv(root / "manifest.tsv", sep="\t", index=False)
    return root


def test_to_native_uses_the_inverse_transform(data: Path) -> None:
    # A blob at template point p lies at native point p + SHIFT (the transform's direction).
    blob = np.zeros((24, 24, 24), np.float32)
    blob[10, 8, 12] = 1.0
    blob = ndimage.gaussian_filter(blob, 1.5)
    prob = from_array(blob, _template_grid())
    folder = data / "preprocessed" / "sub-001_ses-01"
    out = to_native(prob, folder / "transform.tfm", data / "raw" / "sub-001_ses-01_T1w.nii.gz")
    assert out.GetSize() == (30, 30, 30) and out.GetOrigin() == (5.0, -3.0, 1.0)
    com = ndimage.center_of_mass(to_array(out))
    point = np.array(out.TransformContinuousIndexToPhysicalPoint([float(c) for c in com]))
    np.testing.assert_allclose(point, np.array([20.0, 16.0, 24.0]) + SHIFT, atol=0.5)


def test_held_out_scans_reads_only_test_subjects(data: Path) -> None:
    cases = held_out_scans(data / "manifest.tsv", ["sub-001"])
    assert list(cases["scan"]) == ["sub-001_ses-01", "sub-001_ses-02"]
    assert cases["native"].str.endswith("_T1w.nii.gz").all()
    with pytest.raises(ValueError, match=r"manifest\.tsv: no scan"):
        held_out_scans(data / "manifest.tsv", ["sub-999"])


def test_predict_segmentation(data: Path, tmp_path: Path) -> None:
    pkg = load_package(make_package(tmp_path, SEG_PARAMS, 2, ["background", "lesion"]))
    cases = held_out_scans(data / "manifest.tsv", ["sub-001"])
    done = predict_segmentation(pkg, cases, data / "preprocessed", tmp_path)
    assert done == ["sub-001_ses-01", "sub-001_ses-02"]
    prob_img = read_image(tmp_path / "sub-001_ses-01_prob_template.nii.gz")
    prob = to_array(prob_img)
    assert prob.shape == (24, 24, 24) and prob_img.GetSpacing() == (2.0, 2.0, 2.0)
    assert 0.0 <= prob.min() and prob.max() <= 1.0 and prob[2:22, 2:22, 2:22].min() > 0
    assert prob[:2].max() == 0.0  # outside the brain mask
    native = read_image(tmp_path / "sub-001_ses-01_prob.nii.gz")
    seg = read_image(tmp_path / "sub-001_ses-01_seg.nii.gz")
    raw = read_image(data / "raw" / "sub-001_ses-01_T1w.nii.gz")
    assert all(same_grid(img, raw) for img in (native, seg))  # exactly the raw reference's grid
    # the mask is the native probability thresholded at the package's 0.5
    np.testing.assert_array_equal(to_array(seg), (to_array(native) >= 0.5).astype(np.uint8))
    assert not (tmp_path / "sub-002_ses-01_prob.nii.gz").exists()


@pytest.mark.parametrize("mask_outside", [True, False])
def test_predict_multiclass_writes_k_plus_1_channels_and_argmax(
        data: Path, tmp_path: Path, mask_outside: bool) -> None:
    labels = {"PZ": 1, "TZ": 2}
    model_dir = make_package(tmp_path, SEG_PARAMS, 3, ["background", "PZ", "TZ"], label_map=labels,
                             predict={"mask_outside_brain": mask_outside})
    pkg = load_package(model_dir)
    assert pkg.meta["labels"] == labels and pkg.meta["postprocess"]["method"] == "argmax"
    assert "threshold" not in pkg.meta["postprocess"]
    cases = held_out_scans(data / "manifest.tsv", ["sub-001"])
    predict_segmentation(pkg, cases, data / "preprocessed", tmp_path)
    template = read_image(tmp_path / "sub-001_ses-01_prob_template.nii.gz")
    prob_t = to_array(template)
    assert template.GetNumberOfComponentsPerPixel() == 3 and prob_t.shape == (3, 24, 24, 24)
    np.testing.assert_allclose(prob_t.sum(0), 1.0, atol=1e-5)  # softmax, background first
    if mask_outside:  # outside the brain mask: background
        assert prob_t[0, :2].min() == 1.0 and prob_t[1:, :2].max() == 0.0
    else:
        assert prob_t[1:, :2].max() > 0.0
    native = read_image(tmp_path / "sub-001_ses-01_prob.nii.gz")
    seg = read_image(tmp_path / "sub-001_ses-01_seg.nii.gz")
    raw = read_image(data / "raw" / "sub-001_ses-01_T1w.nii.gz")
    assert all(same_grid(img, raw) for img in (native, seg))  # exactly the raw reference's grid
    prob_n = to_array(native)
    assert native.GetNumberOfComponentsPerPixel() == 3 and prob_n.shape == (3, 30, 30, 30)
    assert seg.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(to_array(seg), prob_n.argmax(0).astype(np.uint8))
    assert set(np.unique(to_array(seg))) <= {0, 1, 2} and len(np.unique(to_array(seg))) >= 2
    # each channel is the template channel resampled through the inverse transform
    for k in range(3):
        channel = to_native(from_array(prob_t[k], template), data / "preprocessed" / "sub-001_ses-01"
                            / "transform.tfm", data / "raw" / "sub-001_ses-01_T1w.nii.gz")
        np.testing.assert_allclose(prob_n[k], to_array(channel), atol=1e-6)


def test_predict_classification(data: Path, tmp_path: Path) -> None:
    pkg = load_package(make_package(tmp_path, CLS_PARAMS, 3, ["high", "low", "none"]))
    cases = held_out_scans(data / "manifest.tsv", ["sub-001", "sub-002"])
    table = predict_classification(pkg, cases, data / "preprocessed", tmp_path)
    assert list(table.columns) == ["subject", "scan", "true_class", "pred_class", "prob_high",
                                   "prob_low", "prob_none"]
    np.testing.assert_allclose(table.filter(like="prob_").sum(axis=1), 1.0, rtol=1e-5)
    subjects = pd.read_csv(tmp_path / "subjects.tsv", sep="\t", index_col=0)
    np.testing.assert_allclose(subjects.loc["sub-001", "prob_low"],
                               table.loc[table["subject"] == "sub-001", "prob_low"].mean(), rtol=1e-6)


def test_cli_predict_end_to_end(data: Path, tmp_path: Path) -> None:
    model_dir = make_package(tmp_path, SEG_PARAMS, 2, ["background", "lesion"])
    write_json(tmp_path / "splits.json", {
        "seed": 0, "test": ["sub-002"], "test_sha256": hash_test_list(["sub-002"]),
        "folds": [{"train": ["sub-001"], "val": []}]})
    out = tmp_path / "predictions"
    rc = main(["predict", "--experiment", "seg", "--model", str(model_dir),
               "--splits", str(tmp_path / "splits.json"), "--manifest", str(data / "manifest.tsv"),
               "--preprocessed", str(data / "preprocessed"), "--out-dir", str(out),
               "--params", '{"sw_batch_size": 4}'])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "predict.json", "sub-002_ses-01_prob.nii.gz", "sub-002_ses-01_prob_template.nii.gz",
        "sub-002_ses-01_seg.nii.gz"]
    assert read_json(out / "predict.json")["labels"] == {"lesion": 1}
