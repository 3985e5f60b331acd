"""The links of ``mripipe ui`` against a real SQLite store: two searches (one per seed) of one
experiment, each with trials, a fold run and the evaluation run beside them. What the browser
renders from these links is tested in tests/e2e/test_ui_browser.py."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

from mripipe.track.search_init import search_init
from mripipe.track.tracking import SEARCH_TAG, client, finish_run, log_epoch, open_trial_run
from mripipe.track.ui import SHARE_KEY, SHARE_TAG, describe, write_links

SPACE = {"optimizer.lr": {"loguniform": [1e-4, 1e-2]}, "network.dropout": {"uniform": [0.0, 0.2]}}
CFG = {"task": "segmentation", "search": {"n_trials": 2, "metric": "val_dice", "space": SPACE}}
#: (seed, trial) -> val_dice
DICE = {(1, "trial-000"): 0.61, (1, "trial-001"): 0.83, (2, "trial-000"): 0.70, (2, "trial-001"): 0.12}


def _store(tmp: Path) -> tuple[str, dict[str, str]]:
    """Two searches, named by their seed; returns the URI and the trial run ids by name."""
    uri = f"sqlite:///{tmp}/mlflow.db"
    c = client(uri)
    ids = {}
    for seed in (1, 2):
        cfg = {**CFG, "search": {**CFG["search"], "seed": seed}}
        search = search_init("lesion_seg", uri, cfg, tmp / f"search-{seed}.json")
        c.set_tag(search["parent_run_id"], SEARCH_TAG, f"search-lesion_seg seed {seed}")
        for trial in ("trial-000", "trial-001"):
            name = f"{trial} r0 lr=0.001 seed={seed}"
            run = open_trial_run(c, search, trial, {"optimizer.lr": 0.001, "network.dropout": 0.1},
                                 {"mlflow.runName": name})
            log_epoch(c, run, {"val_dice": DICE[seed, trial], "train_loss": 0.4}, 1)
            finish_run(c, run)
            ids[name] = run
        if seed == 1:  # the chosen trial trained on another fold: not one of the trials
            fold = open_trial_run(c, search, "trial-001-fold-1", {}, {})
            log_epoch(c, fold, {"val_dice": 0.99}, 1)
            evaluation = c.create_run(search["mlflow_experiment_id"], tags={"mlflow.runName": "evaluate"})
            log_epoch(c, evaluation.info.run_id, {"test_dice": 0.5}, 0)
    return uri, ids


def test_links_compare_every_trial_of_every_seed_best_first(tmp_path: Path) -> None:
    uri, ids = _store(tmp_path)
    (links,) = write_links(uri, "http://127.0.0.1:5000")
    assert links.experiment == "lesion_seg" and links.metric == "val_dice"
    # best first over both searches: 0.83, 0.70, 0.61, 0.12
    assert links.trials == ("trial-001 r0 lr=0.001 seed=1", "trial-000 r0 lr=0.001 seed=2",
                            "trial-000 r0 lr=0.001 seed=1", "trial-001 r0 lr=0.001 seed=2")
    base, _, query = links.compare.partition("#/compare-runs?")
    assert base == "http://127.0.0.1:5000/"
    compared = urllib.parse.parse_qs(query)
    assert json.loads(compared["runs"][0]) == [ids[name] for name in links.trials]
    # the trials carry their own search's tag: MLflow's "Group by" shows one group per seed
    c = client(uri)
    assert {c.get_run(ids[n]).data.tags[SEARCH_TAG] for n in links.trials} == {
        "search-lesion_seg seed 1", "search-lesion_seg seed 2"}


def test_runs_link_opens_the_shared_view_sorted_by_the_metric(tmp_path: Path) -> None:
    uri, _ = _store(tmp_path)
    (links,) = write_links(uri, "http://127.0.0.1:5000")
    c = client(uri)
    exp = c.get_experiment_by_name("lesion_seg")
    path, _, query = links.runs.partition("?")
    assert path == f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
    # nothing but the workflow and the share key: with orderByKey (or any other search facet) in
    # the URL, MLflow 3.17 skips the shared view
    assert urllib.parse.parse_qs(query) == {"workflowType": ["machine_learning"],
                                            "viewStateShareKey": [SHARE_KEY]}
    view = json.loads(exp.tags[SHARE_TAG + SHARE_KEY])
    assert view["orderByKey"] == "metrics.`val_dice`" and view["orderByAsc"] is False
    # the metric, then the searched parameters (the search run's `space`, in its logged order)
    columns = ["metrics.`val_dice`", "params.`network.dropout`", "params.`optimizer.lr`"]
    assert view["selectedColumns"] == view["columnOrder"] == columns
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": SEARCH_TAG}]
    # written again on the next start, not duplicated; a store whose trials predate the search
    # tag is not grouped (MLflow would fold the untagged trials into "Additional runs")
    trial = c.search_runs([exp.experiment_id], filter_string="tags.trial = 'trial-000'")[0]
    c.delete_tag(trial.info.run_id, SEARCH_TAG)
    write_links(uri, "http://127.0.0.1:5001")
    tags = c.get_experiment_by_name("lesion_seg").tags
    assert [k for k in tags if k.startswith(SHARE_TAG)] == [SHARE_TAG + SHARE_KEY]
    assert json.loads(tags[SHARE_TAG + SHARE_KEY])["groupBy"] is None


def test_printed_text_names_each_experiment_and_its_two_links(tmp_path: Path) -> None:
    uri, _ = _store(tmp_path)
    links = write_links(uri, "http://127.0.0.1:5000")
    lines = describe("http://127.0.0.1:5000", links).splitlines()
    assert lines[0] == "MLflow UI: http://127.0.0.1:5000" and lines[-1] == "Ctrl-C stops the UI."
    assert lines[1] == "lesion_seg: 4 trials, selection metric val_dice"
    assert lines[2].split()[-1] == links[0].runs and lines[3].split()[-1] == links[0].compare
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no search" in describe("http://x", write_links(f"sqlite:///{empty}/mlflow.db", "http://x"))
