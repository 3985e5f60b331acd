"""End to end: the model package of the shared tiny run (conftest.py), applied with ``mripipe infer`` to a raw
phantom subject generated with another seed (never seen by the pipeline). The segmentation has
exactly the input's geometry and overlaps the subject's true lesions; the registered MLflow model
(``models:/lesion_seg@champion``) gives the same segmentation."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent
NEW_SEED = 20261


@pytest.fixture(scope="module")
def new_subject(run_dir: Path, run_command: Callable[..., Any]) -> dict[str, Path]:
    """A phantom cohort from another seed with the run's phantom settings; its most lesioned scan."""
    cfg = dict(yaml.safe_load((run_dir / "config" / "e2e.yaml").read_text())["phantom"])
    cfg["n_subjects"], cfg["two_session_fraction"] = 3, 0.0
    out = run_dir.parent / "unseen"
    proc = run_command(run_dir, str(BIN / "mripipe"), "phantom", "--out", str(out), "--seed", str(NEW_SEED),
                "--params", json.dumps(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks = sorted((out / "derivatives" / "lesions").rglob("*_mask.nii.gz"))
    best = max(masks, key=lambda p: int((sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0).sum()))
    scan = best.name.split("_desc-")[0]
    anat = out / scan.split("_")[0] / scan.split("_")[1] / "anat"
    return {"T1w": anat / f"{scan}_T1w.nii.gz", "FLAIR": anat / f"{scan}_FLAIR.nii.gz", "truth": best}


def _infer(run: Callable[..., Any], run_dir: Path, model: str, subject: dict[str, Path], out: Path) -> float:
    t0 = time.perf_counter()
    proc = run(run_dir, str(BIN / "mripipe"), "infer", "--model", model, "--input",
                str(subject["T1w"]), str(subject["FLAIR"]), "--out", str(out), "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.perf_counter() - t0


def test_infer_on_an_unseen_subject(run_dir: Path, new_subject: dict[str, Path], tmp_path: Path,
                                    run_command: Callable[..., Any]) -> None:
    seconds = _infer(run_command, run_dir, "results/lesion_seg/model", new_subject, tmp_path / "out")
    ref = sitk.ReadImage(str(new_subject["T1w"]))
    seg = sitk.ReadImage(str(tmp_path / "out" / "seg.nii.gz"))
    prob = sitk.ReadImage(str(tmp_path / "out" / "prob.nii.gz"))
    for img in (seg, prob):  # exactly the input's grid
        assert img.GetSize() == ref.GetSize() and img.GetSpacing() == ref.GetSpacing()
        assert img.GetOrigin() == ref.GetOrigin() and img.GetDirection() == ref.GetDirection()
    pred = sitk.GetArrayFromImage(seg) > 0
    p = sitk.GetArrayFromImage(prob)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(new_subject["truth"]))) > 0
    dice = 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())
    inside, brain = float(p[truth].mean()), float(p[~truth & (p > 0)].mean())
    doc = json.loads((tmp_path / "out" / "inference.json").read_text())
    sys.stderr.write(f"unseen subject: Dice {dice:.3f}, {pred.sum()} predicted / {truth.sum()} true "
                     f"voxels, mean prob in lesions {inside:.3f} vs rest of brain {brain:.3f}, "
                     f"CLI {seconds:.1f} s, timings {doc['timings_s']}\n")  # for the notes
    # The segmentation overlaps the subject's true lesions, and the probability map is higher
    # inside them than in the rest of the brain.
    assert dice > 0.3, f"Dice {dice:.3f} on the unseen subject"
    assert inside > brain


def test_the_registered_model_gives_the_same_segmentation(run_dir: Path, new_subject: dict[str, Path],
                                                         tmp_path: Path, run_command: Callable[..., Any]) -> None:
    _infer(run_command, run_dir, "results/lesion_seg/model", new_subject, tmp_path / "dir")
    _infer(run_command, run_dir, "models:/lesion_seg@champion", new_subject, tmp_path / "uri")
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / "prob.nii.gz"))) for d in ("dir", "uri"))
    np.testing.assert_array_equal(a, b)
    selected = json.loads((run_dir / "results" / "lesion_seg" / "selected.json").read_text())
    assert selected["champion_uri"] == "models:/lesion_seg@champion"


def test_a_wrong_channel_count_is_refused(run_dir: Path, new_subject: dict[str, Path], tmp_path: Path,
                                          run_command: Callable[..., Any]) -> None:
    proc = run_command(run_dir, str(BIN / "mripipe"), "infer", "--model", "results/lesion_seg/model",
                "--input", str(new_subject["T1w"]), "--out", str(tmp_path / "x"))
    assert proc.returncode == 1
    assert "the model takes 2 channels in this order: T1w, FLAIR; got 1" in proc.stderr
    assert "Traceback" not in proc.stderr
