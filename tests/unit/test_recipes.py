"""The published recipes (config/recipes/): each validates against the schema, carries a sourced
reference block in the shape `mripipe reproduce --recipe` reads, and builds its DAG on a tiny
synthetic dataset in its task's MSD layout; the command-line config replaces the default one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import yaml

from mripipe.evaluate.compare import headline_values

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))
RECIPES = sorted((REPO / "config" / "recipes").glob("*.yaml"))

#: Each task's MSD layout (file stem, modalities, labels) and a tiny voxel grid.
TASKS = {
    "msd_prostate": ("prostate", {"0": "T2", "1": "ADC"}, {"0": "background", "1": "PZ", "2": "TZ"},
                     (0.625, 0.625, 3.6)),
    "msd_brain_tumour": ("BRATS", {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
                         {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
                         (1.0, 1.0, 1.0)),
}


def _recipe(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / "recipes" / f"{name}.yaml").read_text(encoding="utf-8"))


def _synthetic_msd(root: Path, name: str, n: int = 4) -> None:
    """``n`` cases of 12 x 12 x 6 voxels: 4-D images, labels with every class, dataset.json."""
    stem, modality, labels, spacing = TASKS[name]
    affine = np.diag([*spacing, 1.0])
    training = []
    for i in range(n):
        rng = np.random.default_rng(i)
        img = np.zeros((12, 12, 6, len(modality)), np.float32)
        img[2:10, 2:10, 1:5] = rng.normal(100, 10, (8, 8, 4, len(modality)))
        lab = np.zeros((12, 12, 6), np.uint8)
        for k in range(1, len(labels)):
            lab[2 + 2 * k : 4 + 2 * k, 3:6, 2:4] = k
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(img, affine), str(root / "imagesTr" / f"{stem}_{i:02d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, affine), str(root / "labelsTr" / f"{stem}_{i:02d}.nii.gz"))
        training.append({"image": f"./imagesTr/{stem}_{i:02d}.nii.gz", "label": f"./labelsTr/{stem}_{i:02d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": stem, "tensorImageSize": "4D", "modality": modality, "labels": labels,
        "numTraining": n, "numTest": 0, "training": training, "test": []}))


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"},
    )


def test_there_are_the_two_recipes() -> None:
    assert [p.stem for p in RECIPES] == ["msd_brain_tumour", "msd_prostate"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_recipe_is_valid_and_complete(name: str) -> None:
    recipe = _recipe(name)
    jsonschema.Draft202012Validator(SCHEMA).validate(recipe)
    assert recipe["data"]["source"] == "msd"
    p = recipe["preprocess"]
    assert p["register"] is False and p["skull_strip"] is False  # the native path
    assert recipe["split"]["n_folds"] == 5
    labels = recipe["data"]["labels"]
    for region in recipe["evaluate"]["regions"].values():
        assert set(region) <= set(labels)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_reference_block_is_sourced_and_readable_by_reproduce(name: str) -> None:
    ref = _recipe(name)["reference"]
    assert ref["produced"]["source"].count("http") >= 1 and ref["produced"]["split"]
    values = headline_values(ref)  # what `mripipe reproduce --recipe` compares
    experiments = set(_recipe(name)["experiments"])
    assert set(values) <= experiments and values
    for metrics in values.values():
        assert all(0 < v <= 1 for k, v in metrics.items() if k.startswith("dice") and v is not None)


def test_prostate_reference_numbers() -> None:
    assert headline_values(_recipe("msd_prostate")["reference"])["prostate_seg"] == {
        "dice_PZ": 0.668, "dice_PZ_ci95_low": None, "dice_PZ_ci95_high": None,
        "dice_TZ": 0.841, "dice_TZ_ci95_low": None, "dice_TZ_ci95_high": None}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_recipe_dry_runs_on_a_synthetic_dataset_in_its_layout(name: str, tmp_path: Path) -> None:
    data = tmp_path / "data" / name
    _synthetic_msd(data, name)
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")  # as in a checkout
    recipe = str(REPO / "config" / "recipes" / f"{name}.yaml")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    proc = _snakemake(work, "--cores", "1", "--configfile", recipe, "--config", f"data={{root: {data}}}", "--until", "manifest")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = (work / "results" / "manifest.tsv").read_text().splitlines()
    assert len(manifest) == 5 and manifest[0].split("\t")[3:3 + len(TASKS[name][1])] == [
        m for m in TASKS[name][1].values()]
    meta = json.loads((work / "results" / "manifest.json").read_text())
    assert meta["labels"] == TASKS[name][2]
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing written into the data
    proc = _snakemake(work, "-n", "--cores", "1", "--configfile", recipe, "--config", f"data={{root: {data}}}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "validate" in out and "phantom" not in out
    experiment = next(iter(_recipe(name)["experiments"]))
    assert "burden_cls" not in out and "lesion_seg" not in out  # the default config's experiments are gone
    assert "Config file config/config.yaml" not in out and experiment  # not merged into the default config
