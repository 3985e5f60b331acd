"""``mripipe infer`` and the MLflow pyfunc: a raw two-channel scan stored in another orientation
and spacing than the template goes through the real preprocessing (cheap settings: no N4, no
denoising, no registration) and a real network; the outputs land on exactly the input's grid.
Refusals: a wrong channel count and a spacing far from the training fingerprint, named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch

from mripipe.cli import main
from mripipe.core.errors import InputError
from mripipe.core.imageio import read_image, to_array, write_image
from mripipe.core.template import load_template
from mripipe.infer.apply import load_package
from mripipe.infer.run import check_inputs, infer_scan
from mripipe.learn.checkpoint import Checkpoint, CheckpointMeta, save
from mripipe.learn.networks import build_model
from mripipe.learn.package import log_package, write_package
from mripipe.learn.search import resolve_params

torch.set_num_threads(1)
SEG = {"task": "segmentation", "network": {"name": "unet", "channels": [4, 8], "dropout": 0.0}}
CHEAP = {"n4": False, "denoise": "none", "coregister": False, "register": False}
#: training scans had 3-4 mm voxels; tolerance x2 -> 1.5 to 8 mm accepted
FINGERPRINT = {"axes": "RAS", "n_scans": 4, "tolerance": 2.0,
               "spacing": {c: {"min": [3.0, 3.0, 3.0], "median": [3.0, 3.0, 3.5], "max": [3.0, 3.0, 4.0]}
                           for c in ("T1w", "FLAIR")}}


def same_grid(img: sitk.Image, ref: sitk.Image) -> bool:
    """Same size, spacing, origin and direction: the same voxel grid."""
    return (img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()) == (
        ref.GetSize(), ref.GetSpacing(), ref.GetOrigin(), ref.GetDirection())


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The template T1 at 3 x 3 x 4 mm stored PIR (another axis order and origin), twice."""
    root = tmp_path_factory.mktemp("raw")
    t1 = load_template().t1
    grid = sitk.Image([60, 50, 60], sitk.sitkFloat32)
    grid.SetSpacing((3.0, 3.0, 4.0))
    grid.SetOrigin((-85.0, -115.0, -70.0))
    img = sitk.DICOMOrient(sitk.Resample(t1, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32), "PIR")
    paths = {}
    for name, scale in (("T1w", 1.0), ("FLAIR", 0.5)):
        paths[name] = root / f"sub-101_{name}.nii.gz"
        write_image(img * scale, paths[name])
    return paths


def _package(root: Path, threshold: float = 0.5, labels: dict[str, int] | None = None) -> Path:
    """A package of an untrained network (``labels``: K >= 2 classes, K + 1 outputs)."""
    torch.manual_seed(0)
    trial = root / "trial-000"
    trial.mkdir(parents=True, exist_ok=True)
    n_out = len(labels) + 1 if labels else 2
    params = resolve_params(SEG, 0)
    names = ("background", *(labels or {"lesion": 1}))
    meta = CheckpointMeta(in_channels=2, n_classes=n_out, class_names=names, labels=labels,
                          roi_size=(16, 16, 16), task="segmentation")
    save(Checkpoint(build_model(params, 2, n_out).state_dict(), params, 1, "val_dice", 0.5, meta),
         trial / "checkpoint.pt")
    settings = {"preprocess": CHEAP, "target_spacing": [4.0, 4.0, 4.0], "threshold": threshold,
                "predict": {"sw_overlap": 0.25, "sw_batch_size": 4}}
    write_package(trial, root / "model", ["T1w", "FLAIR"], settings, FINGERPRINT)
    return root / "model"


def test_infer_writes_seg_and_prob_on_the_input_grid(raw: dict[str, Path], tmp_path: Path) -> None:
    pkg = load_package(_package(tmp_path, threshold=0.45))
    doc = infer_scan(pkg, [raw["T1w"], raw["FLAIR"]], tmp_path / "out")
    ref = read_image(raw["T1w"])
    seg, prob = read_image(tmp_path / "out" / "seg.nii.gz"), read_image(tmp_path / "out" / "prob.nii.gz")
    assert all(same_grid(img, ref) for img in (seg, prob))
    p = to_array(prob)
    assert p.max() > 0 and p.min() >= 0 and p.max() <= 1  # the brain got probabilities
    np.testing.assert_array_equal(to_array(seg), (p >= 0.45).astype(np.uint8))
    assert doc["lesion_voxels"] == int((p >= 0.45).sum()) and doc["timings_s"]["total"] > 0
    assert json.loads((tmp_path / "out" / "inference.json").read_text())["task"] == "segmentation"


def test_infer_multiclass_writes_k_plus_1_channels_and_their_argmax(raw: dict[str, Path], tmp_path: Path) -> None:
    labels = {"edema": 1, "enhancing": 4}
    pkg = load_package(_package(tmp_path, labels=labels))
    assert pkg.meta["labels"] == labels  # the package's label map round trip
    doc = infer_scan(pkg, [raw["T1w"], raw["FLAIR"]], tmp_path / "out")
    ref = read_image(raw["T1w"])
    seg, prob = read_image(tmp_path / "out" / "seg.nii.gz"), read_image(tmp_path / "out" / "prob.nii.gz")
    assert all(same_grid(img, ref) for img in (seg, prob))
    p, s = to_array(prob), to_array(seg)
    assert prob.GetNumberOfComponentsPerPixel() == 3 and p.shape[0] == 3
    np.testing.assert_array_equal(s, p.argmax(0).astype(np.uint8))
    voxel_ml = float(np.prod(ref.GetSpacing())) / 1000.0
    assert doc["method"] == "argmax" and doc["labels"] == labels
    assert doc["volume_ml"] == pytest.approx({"edema": float((s == 1).sum()) * voxel_ml,
                                              "enhancing": float((s == 2).sum()) * voxel_ml})
    assert doc["lesion_voxels"] == int((s > 0).sum())


def test_wrong_channel_count_and_far_spacing_are_refused(raw: dict[str, Path], tmp_path: Path) -> None:
    pkg = load_package(_package(tmp_path))
    with pytest.raises(InputError, match=r"takes 2 channels in this order: T1w, FLAIR; got 1"):
        check_inputs(pkg, [raw["T1w"]])
    fine = tmp_path / "fine_T1w.nii.gz"
    img = read_image(raw["T1w"])
    img.SetSpacing((1.0, 1.0, 1.0))  # 1 mm < 3 mm / 2
    write_image(img, fine)
    with pytest.raises(InputError, match=r"fine_T1w\.nii\.gz: T1w spacing .* far from the training"):
        check_inputs(pkg, [fine, raw["FLAIR"]])
    log = tmp_path / "infer.log"
    rc = main(["infer", "--model", str(pkg.root), "--input", str(raw["T1w"]), "--out",
               str(tmp_path / "o"), "--log", str(log)])
    assert rc == 1 and "takes 2 channels" in log.read_text() and "Traceback" not in log.read_text()
    check_inputs(pkg, [raw["T1w"], raw["FLAIR"]])  # 3 x 3 x 4 mm is within range


def test_registered_pyfunc_applies_the_same_package(raw: dict[str, Path], tmp_path: Path) -> None:
    import mlflow

    from mripipe.track.tracking import client, get_or_create_experiment

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = client(uri)
    run = c.create_run(get_or_create_experiment(c, "seg", uri)).info.run_id
    model_dir = _package(tmp_path)
    reg = log_package(model_dir, uri, run, "seg")
    # load_package through the registry alias gives the same network
    pkg = load_package(reg["champion_uri"], tracking_uri=uri)
    local = load_package(model_dir)
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(pkg.model(x), local.model(x))
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(reg["champion_uri"])
    frame = pd.DataFrame([{"T1w": str(raw["T1w"]), "FLAIR": str(raw["FLAIR"]), "out_dir": str(tmp_path / "py")}])
    out = model.predict(frame)
    direct = infer_scan(local, [raw["T1w"], raw["FLAIR"]], tmp_path / "direct")
    assert out.loc[0, "lesion_volume_ml"] == pytest.approx(direct["lesion_volume_ml"])
    np.testing.assert_array_equal(to_array(read_image(tmp_path / "py" / "prob.nii.gz")),
                                  to_array(read_image(tmp_path / "direct" / "prob.nii.gz")))
