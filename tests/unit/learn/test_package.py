"""Tests of mripipe.learn.choose and mripipe.learn.package: ranking on the validation metric only, selected.json, MLflow model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mripipe.core.split_guard import hash_test_list
from mripipe.core.utils import write_json
from mripipe.learn.checkpoint import (
    Checkpoint,
    CheckpointMeta,
    load_checkpoint,
    load_state_dict,
    save,
)
from mripipe.learn.choose import rank_trials
from mripipe.learn.networks import build_model
from mripipe.learn.package import package_experiment, package_selected
from mripipe.learn.search import resolve_params
from mripipe.track.search_init import search_init
from mripipe.track.tracking import client, open_trial_run

torch.set_num_threads(1)
CFG = {"task": "segmentation", "network": {"channels": [4, 8]},
       "search": {"n_trials": 3, "seed": 0, "metric": "val_dice"}}


def make_trials(root: Path, metrics: list[dict], search: dict | None = None) -> list[Path]:
    """Trial folders with val_metrics.json and a real (untrained) checkpoint each."""
    dirs = []
    for i, m in enumerate(metrics):
        d = root / "trials" / f"trial-{i:03d}"
        d.mkdir(parents=True)
        write_json(d / "val_metrics.json", m)
        params = resolve_params(CFG, i)
        run_id = ""
        if search is not None:
            run_id = open_trial_run(client(search["tracking_uri"]), search, d.name, {"i": i}, {})
        torch.manual_seed(i)
        model = build_model(params, 2, 2)
        meta = CheckpointMeta(in_channels=2, n_classes=2, class_names=("background", "lesion"),
                              roi_size=(16, 16, 16), mlflow_run_id=run_id, task="segmentation", fold=0)
        save(Checkpoint(model.state_dict(), params, 1, "val_dice", float(m.get("val_dice", math.nan)),
                        meta), d / "checkpoint.pt")
        dirs.append(d)
    return dirs


def test_ranking_uses_the_validation_metric_only(tmp_path: Path) -> None:
    # trial-000 has the best val_loss and trial-002 the best "test_dice" (which must be
    # ignored); trial-001 has the highest val_dice, the selection metric.
    dirs = make_trials(tmp_path, [
        {"val_dice": 0.40, "val_loss": 0.1, "test_dice": 0.1, "epoch": 3},
        {"val_dice": 0.70, "val_loss": 0.9, "test_dice": 0.2, "epoch": 5},
        {"val_dice": 0.55, "val_loss": 0.5, "test_dice": 0.9, "epoch": 2},
    ])
    ranking = rank_trials(dirs, "val_dice")
    assert [r["trial"] for r in ranking] == ["trial-001", "trial-002", "trial-000"]
    assert ranking[0]["epoch"] == 5


def test_ties_break_by_name_and_nan_ranks_last(tmp_path: Path) -> None:
    dirs = make_trials(tmp_path, [{"val_dice": math.nan}, {"val_dice": 0.5}, {"val_dice": 0.5}])
    assert [r["trial"] for r in rank_trials(dirs, "val_dice")] == ["trial-001", "trial-002", "trial-000"]


def test_missing_metric_names_the_file(tmp_path: Path) -> None:
    dirs = make_trials(tmp_path, [{"val_accuracy": 0.5}])
    with pytest.raises(ValueError, match=r"trial-000/val_metrics.json: no 'val_dice'"):
        rank_trials(dirs, "val_dice")


def package_inputs(root: Path, dirs: list[Path]) -> dict:
    """manifest, splits and fingerprint of two training subjects and one test subject."""
    scans = {"sub-001_ses-01": ("sub-001", [1.0, 1.0, 1.0]), "sub-002_ses-01": ("sub-002", [1.2, 1.0, 3.0]),
             "sub-003_ses-01": ("sub-003", [9.0, 9.0, 9.0])}  # sub-003 is in the test set
    rows = "".join(f"{sub}\tses-01\t{scan}\tt1.nii.gz\tfl.nii.gz\t\tnone\t\n"
                   for scan, (sub, _) in scans.items())
    (root / "manifest.tsv").write_text("subject\tsession\tscan\tT1w\tFLAIR\tlabel\tclass\ttruth\n" + rows)
    write_json(root / "splits.json", {"seed": 0, "test": ["sub-003"], "test_sha256": hash_test_list(["sub-003"]),
                                      "folds": [{"train": ["sub-001"], "val": ["sub-002"]}]})
    write_json(root / "fingerprint.json", {"target_spacing": [2.0, 2.0, 2.0], "spacings": {
        scan: {"T1w": sp, "FLAIR": sp} for scan, (_, sp) in scans.items()}})
    return {"manifest": root / "manifest.tsv", "splits": root / "splits.json",
            "fingerprint": root / "fingerprint.json", "patches": None,
            "settings": {"preprocess": {"n4": False}, "predict": {"sw_overlap": 0.25}, "threshold": 0.4,
                         "seed": 7}}


def test_select_writes_the_package_logs_and_registers_it(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search = search_init("lesion_seg", uri, CFG, tmp_path / "search.json")
    dirs = make_trials(tmp_path, [{"val_dice": 0.2}, {"val_dice": 0.6}], search)
    out = tmp_path / "selected.json"
    inputs = package_inputs(tmp_path, dirs)
    package_experiment(
        "lesion_seg", tmp_path / "search.json", CFG, out, trials=dirs, model_dir=tmp_path / "model",
        manifest=Path(inputs["manifest"]), splits=Path(inputs["splits"]),
        fingerprint=Path(inputs["fingerprint"]), settings=inputs["settings"])
    doc = json.loads(out.read_text())
    assert doc["trial"] == "trial-001" and doc["value"] == 0.6 and doc["metric"] == "val_dice"
    assert doc["tracking_uri"] == uri and doc["parent_run_id"] == search["parent_run_id"]
    ckpt = load_checkpoint(dirs[1] / "checkpoint.pt")
    assert doc["mlflow_run_id"] == ckpt.meta.mlflow_run_id
    c = client(uri)
    assert c.get_run(doc["mlflow_run_id"]).data.tags["selected"] == "true"
    parent = c.get_run(search["parent_run_id"])
    assert parent.data.tags["selected_trial"] == "trial-001"
    assert parent.info.status == "FINISHED"
    # The package: the selected trial's exact weights as a bare state dict, and its description.
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    state = load_state_dict(tmp_path / "model" / "weights.pt")
    assert state.keys() == ckpt.model.keys()
    assert all(torch.equal(state[k], ckpt.model[k]) for k in state)
    assert meta["trial"] == "trial-001" and meta["network"] == ckpt.params.network.to_dict()
    assert meta["params"] == ckpt.params.to_dict() and meta["epoch"] == 1
    assert meta["validation"] == {"metric": "val_dice", "value": 0.6}
    assert meta["channels"] == ["T1w", "FLAIR"] and meta["labels"] == {"lesion": 1}
    assert meta["preprocess"]["n4"] is False and meta["preprocess"]["denoise"] == "curvature"  # defaults filled
    assert meta["target_spacing"] == [2.0, 2.0, 2.0] and meta["seed"] == 7
    assert meta["window"] == {"roi_size": [16, 16, 16], "overlap": 0.25, "batch_size": 2, "blend": "gaussian"}
    assert meta["postprocess"]["threshold"] == 0.4
    # fingerprint of the training/validation scans only: the test scan's 9 mm never shows
    assert meta["fingerprint"]["spacing"]["T1w"] == {"min": [1.0, 1.0, 1.0], "median": [1.1, 1.0, 2.0],
                                                     "max": [1.2, 1.0, 3.0]}
    assert meta["fingerprint"]["n_scans"] == 2
    assert meta["mlflow"]["run_id"] == doc["mlflow_run_id"] and meta["mlflow"]["tracking_uri"] == uri
    # Registered in MLflow as a pyfunc with the alias champion, wrapping the same package files.
    version = c.get_model_version_by_alias("lesion_seg", "champion")
    assert str(version.version) == doc["model_version"] and version.run_id == doc["mlflow_run_id"]
    assert doc["champion_uri"] == "models:/lesion_seg@champion"
    import mlflow

    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=doc["champion_uri"]))
    assert "python_function" in (local / "MLmodel").read_text()
    logged = next(local.rglob("weights.pt"))
    assert logged.read_bytes() == (tmp_path / "model" / "weights.pt").read_bytes()
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pth"))


def test_select_without_mlflow_model(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search_init("e", uri, CFG, tmp_path / "search.json")
    dirs = make_trials(tmp_path, [{"val_dice": 0.3}])
    doc = package_selected("e", dirs, tmp_path / "search.json", CFG, tmp_path / "sel.json", log_model=False)
    assert doc["trial"] == "trial-000" and doc["model_uri"] is None


def test_choice_comes_first_and_select_reads_it(tmp_path: Path) -> None:
    """`mripipe choose` writes the choice before any fold job; select --choice gives the same
    selected.json as select on the trials."""
    from mripipe.learn.choose import choose_trial

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    search_init("e", uri, CFG, tmp_path / "search.json")
    dirs = make_trials(tmp_path, [{"val_dice": 0.3, "epoch": 2}, {"val_dice": 0.5, "epoch": 4}])
    choose_trial("e", dirs, CFG, tmp_path / "choice.json")
    choice = json.loads((tmp_path / "choice.json").read_text())
    assert (choice["trial"], choice["value"], choice["epoch"]) == ("trial-001", 0.5, 4)
    direct = package_selected("e", dirs, tmp_path / "search.json", CFG, tmp_path / "a.json", log_model=False)
    chosen = package_selected("e", [], tmp_path / "search.json", CFG, tmp_path / "b.json", log_model=False,
                          choice=tmp_path / "choice.json")
    assert chosen == direct and "folds" not in chosen
