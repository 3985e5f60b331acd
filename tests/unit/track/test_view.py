"""The MLflow view a researcher opens: a model-training experiment, the dataset each search and
trial saw, and a parent run carrying the selection and the test result — against a real SQLite
store in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

from mripipe.core.split_guard import hash_test_list
from mripipe.track.dataset import describe_dataset
from mripipe.track.eval_run import log_evaluation
from mripipe.track.search_init import start_search
from mripipe.track.tracking import EXPERIMENT_KIND, client, get_or_create_experiment, open_trial_run

CFG = {"task": "segmentation", "search": {"n_trials": 1, "seed": 1, "metric": "val_dice", "space": {}}}


def _data(tmp: Path) -> tuple[Path, Path]:
    manifest = tmp / "manifest.ready.tsv"
    manifest.write_text("subject\tsession\tscan\tT1w\tlabel\tclass\n"
                        + "".join(f"sub-{i}\tses-01\tsub-{i}_ses-01\tt1_{i}.nii.gz\tl_{i}.nii.gz\tnone\n"
                                  for i in range(5)))
    test = ["sub-4"]
    splits = tmp / "splits.json"
    splits.write_text(json.dumps({"seed": 7, "test": test, "test_sha256": hash_test_list(test),
                                  "folds": [{"train": ["sub-0", "sub-1", "sub-2"], "val": ["sub-3"]}]}))
    return manifest, splits


def test_experiment_is_tagged_for_the_training_runs_view(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = client(uri)
    exp_id = get_or_create_experiment(c, "lesion_seg", uri)
    assert c.get_experiment(exp_id).tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    # an experiment created before the tag existed gets it on next use
    old = c.create_experiment("old")
    get_or_create_experiment(c, "old", uri)
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_search_and_trials_log_the_dataset_and_parent_gets_test_metrics(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    manifest, splits = _data(tmp_path)
    start_search("lesion_seg", uri, CFG, tmp_path / "search.json", manifest, splits, "phantom")
    search = json.loads((tmp_path / "search.json").read_text())
    c = client(uri)
    parent = c.get_run(search["parent_run_id"])
    (inp,) = parent.inputs.dataset_inputs
    assert inp.dataset.name == "phantom" and inp.dataset.digest == search["dataset"]["digest"]
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}
    profile = json.loads(inp.dataset.profile)
    assert profile["num_rows"] == 5 and profile["split"]["train_subjects"] == 3
    assert profile["split"]["val_subjects"] == 1 and profile["split"]["test_sha256"] == hash_test_list(["sub-4"])
    assert "sub-4" not in inp.dataset.profile  # the test subjects are not named, only hashed
    # another split of the same manifest is another dataset version
    moved = json.loads(splits.read_text())
    moved["folds"][0] = {"train": ["sub-0", "sub-1", "sub-3"], "val": ["sub-2"]}
    splits.write_text(json.dumps(moved))
    assert describe_dataset(manifest, splits, "phantom")["digest"] != inp.dataset.digest

    trial = open_trial_run(c, search, "trial-000", {"optimizer.lr": 0.001}, {})
    (tin,) = c.get_run(trial).inputs.dataset_inputs
    assert tin.dataset.digest == inp.dataset.digest

    selected = {"trial": "trial-000", "mlflow_run_id": trial, "parent_run_id": search["parent_run_id"],
                "tracking_uri": uri, "model_dir": "results/lesion_seg/model",
                "registered_model": "lesion_seg", "model_version": "1",
                "champion_uri": "models:/lesion_seg@champion"}
    metrics = {"task": "segmentation", "dice": 0.61, "froc_score": 0.4, "n_scans": 4, "bootstrap": 1000,
               "min_overlap": 0.1, "ci95": {"dice": [0.5, 0.7], "froc_score": [0.2, 0.6]},
               "sensitivity_at_fp": {"0.125": 0.2}}
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    eval_run = log_evaluation("lesion_seg", selected, tmp_path / "selected.json", eval_dir, metrics, {})
    run = c.get_run(search["parent_run_id"])
    # the headline metrics with their CIs and the counts; not the settings (bootstrap, min_overlap)
    assert run.data.metrics == {"test_dice": 0.61, "test_froc_score": 0.4, "test_dice_ci95_low": 0.5,
                                "test_dice_ci95_high": 0.7, "test_froc_score_ci95_low": 0.2,
                                "test_froc_score_ci95_high": 0.6, "test_n_scans": 4.0}
    assert run.data.tags["mripipe.champion_uri"] == "models:/lesion_seg@champion"
    assert run.data.tags["mripipe.model_package"] == "results/lesion_seg/model"
    assert run.data.tags["mripipe.evaluation_run_id"] == eval_run
