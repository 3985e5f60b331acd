"""End to end: the model package of a finished tiny run, applied with ``mripipe infer`` to a raw
phantom subject generated with another seed (never seen by the pipeline). The segmentation has
exactly the input's geometry and overlaps the subject's true lesions; the registered MLflow model
(``models:/lesion_seg@champion``) gives the same segmentation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NEW_SEED = 20261


def _env(workdir: Path) -> dict[str, str]:
    """The run uses its own copy of the package source, as a user's checkout would."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(workdir / "src"), "MLFLOW_DISABLE_TELEMETRY": "true",
            "DVC_NO_ANALYTICS": "1"}


def _run(workdir: Path, *cmd: str, timeout: int = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=workdir, env=_env(workdir), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run up to the lesion model package (select), in a copy of the workflow."""
    work = tmp_path_factory.mktemp("infer") / "repo"
    work.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("Snakefile", "workflow", "config", "src"):
        src = REPO / name
        (shutil.copytree(src, work / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, work / name))
    shutil.copy2(REPO / "tests" / "e2e" / "config.yaml", work / "config" / "e2e.yaml")
    shutil.copy2(REPO / "tests" / "e2e" / "config_infer.yaml", work / "config" / "infer.yaml")
    proc = _run(work, str(BIN / "snakemake"), "--configfile", "config/e2e.yaml", "config/infer.yaml",
                "--cores", "2", "results/lesion_seg/model")
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed\n{proc.stderr[-6000:]}\n{logs}")
    return work


@pytest.fixture(scope="module")
def new_subject(run_dir: Path) -> dict[str, Path]:
    """A phantom cohort from another seed with the run's phantom settings; its most lesioned scan."""
    cfg: dict = {}
    for name in ("e2e.yaml", "infer.yaml"):
        cfg.update((yaml.safe_load((run_dir / "config" / name).read_text()) or {}).get("phantom", {}))
    cfg["n_subjects"], cfg["two_session_fraction"] = 3, 0.0
    out = run_dir.parent / "unseen"
    proc = _run(run_dir, str(BIN / "mripipe"), "phantom", "--out", str(out), "--seed", str(NEW_SEED),
                "--params", json.dumps(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    masks = sorted((out / "derivatives" / "lesions").rglob("*_mask.nii.gz"))
    best = max(masks, key=lambda p: int((sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0).sum()))
    scan = best.name.split("_desc-")[0]
    anat = out / scan.split("_")[0] / scan.split("_")[1] / "anat"
    return {"T1w": anat / f"{scan}_T1w.nii.gz", "FLAIR": anat / f"{scan}_FLAIR.nii.gz", "truth": best}


def _infer(run_dir: Path, model: str, subject: dict[str, Path], out: Path) -> float:
    t0 = time.perf_counter()
    proc = _run(run_dir, str(BIN / "mripipe"), "infer", "--model", model, "--input",
                str(subject["T1w"]), str(subject["FLAIR"]), "--out", str(out), "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.perf_counter() - t0


def test_infer_on_an_unseen_subject(run_dir: Path, new_subject: dict[str, Path], tmp_path: Path) -> None:
    seconds = _infer(run_dir, "results/lesion_seg/model", new_subject, tmp_path / "out")
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
                                                         tmp_path: Path) -> None:
    _infer(run_dir, "results/lesion_seg/model", new_subject, tmp_path / "dir")
    _infer(run_dir, "models:/lesion_seg@champion", new_subject, tmp_path / "uri")
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / "prob.nii.gz"))) for d in ("dir", "uri"))
    np.testing.assert_array_equal(a, b)
    selected = json.loads((run_dir / "results" / "lesion_seg" / "selected.json").read_text())
    assert selected["champion_uri"] == "models:/lesion_seg@champion"


def test_a_wrong_channel_count_is_refused(run_dir: Path, new_subject: dict[str, Path], tmp_path: Path) -> None:
    proc = _run(run_dir, str(BIN / "mripipe"), "infer", "--model", "results/lesion_seg/model",
                "--input", str(new_subject["T1w"]), "--out", str(tmp_path / "x"))
    assert proc.returncode == 1
    assert "the model takes 2 channels in this order: T1w, FLAIR; got 1" in proc.stderr
    assert "Traceback" not in proc.stderr
