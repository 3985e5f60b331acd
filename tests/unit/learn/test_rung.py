"""Successive halving as DAG rungs: the ladder arithmetic, deterministic ranking with ties, and a
promoted trial continuing its own last.pt into exactly the uninterrupted run (history, weights,
early stopping, MLflow run)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from test_train import SEED, SEG, TOY_META, cohort, run_trial  # noqa: F401  (cohort: a fixture)
from torch import nn

from mripipe.core.errors import InputError
from mripipe.core.utils import write_json
from mripipe.learn.checkpoint import Checkpoint, load_checkpoint, load_resume, save
from mripipe.learn.halving import Rung, RungJob, ladder, promoted
from mripipe.learn.loop import fit
from mripipe.learn.package import package_selected
from mripipe.learn.rung import rank_rung, rank_trials
from mripipe.learn.search import resolve_params
from mripipe.learn.train import train_trial
from mripipe.track.search_init import search_init
from mripipe.track.tracking import client

torch.set_num_threads(1)


def experiment(n_trials: int, rungs: int, eta: int = 2, epochs: int = 24, val_every: int = 4,
               space: dict | None = None) -> dict[str, Any]:
    return {"task": "segmentation", "training": {"epochs": epochs, "val_every": val_every},
            "search": {"n_trials": n_trials, "rungs": rungs, "eta": eta, "metric": "val_dice",
                       "space": space or {}}}


def test_ladder_arithmetic() -> None:
    # rungs 1: today's search, every trial trains training.epochs
    assert ladder(experiment(4, 1)) == [Rung(0, 4, 24)]
    assert ladder({"task": "segmentation", "search": {"n_trials": 3}}) == [Rung(0, 3, 10)]  # schema defaults
    # 8 trials, eta 2: 8 x 12 epochs, then the best 4 go on to 24
    assert ladder(experiment(8, 2)) == [Rung(0, 8, 12), Rung(1, 4, 24)]
    # 3 rungs: 24/4 = 6 is cut to the validation epoch 4 (val_every 4), 24/2 = 12; counts 8, 4, 2
    assert ladder(experiment(8, 3)) == [Rung(0, 8, 4), Rung(1, 4, 12), Rung(2, 2, 24)]
    # eta 3, 10 trials, 60 epochs validated every epoch: 10 x 20, then ceil(10/3) = 4 x 60
    assert ladder(experiment(10, 2, eta=3, epochs=60, val_every=1)) == [Rung(0, 10, 20), Rung(1, 4, 60)]
    # 5 trials: ceil(5/2) = 3, ceil(5/4) = 2
    assert [r.n_trials for r in ladder(experiment(5, 3, epochs=40, val_every=1))] == [5, 3, 2]


def test_a_ladder_that_cannot_grow_is_a_clear_error() -> None:
    # 24 / 8 = 3 epochs, below val_every 4: rung 0 would stop at epoch 0
    with pytest.raises(InputError, match=r"rung budgets \[0, 4, 12, 24\]"):
        ladder(experiment(8, 4))
    with pytest.raises(InputError, match="training.epochs"):
        ladder(experiment(8, 2, space={"training.epochs": {"int": [10, 20]}}))
    ladder(experiment(8, 1, space={"training.epochs": {"int": [10, 20]}}))  # fine without rungs


def metrics_dirs(root: Path, values: list[float], prefix: str = "trial") -> list[Path]:
    dirs = []
    for i, v in enumerate(values):
        d = root / f"{prefix}-{i:03d}"
        d.mkdir(parents=True)
        write_json(d / "val_metrics.json", {"val_dice": v, "epoch": 4})
        dirs.append(d)
    return dirs


def test_rung_ranking_is_deterministic_with_ties_by_trial_index(tmp_path: Path) -> None:
    cfg = experiment(6, 3)  # rungs of 6, 3, 2 trials; budgets 4, 12, 24
    # trial-001, -003 and -004 tie at 0.5; trial-002 is best; NaN ranks last
    dirs = metrics_dirs(tmp_path / "trials", [math.nan, 0.5, 0.7, 0.5, 0.5, 0.1])
    doc = rank_rung("x", 0, dirs, cfg, tmp_path / "rung-0.json")
    assert [r["trial"] for r in doc["ranking"]] == ["trial-002", "trial-001", "trial-003", "trial-004",
                                                     "trial-005", "trial-000"]
    assert [(s["slot"], s["trial"]) for s in doc["survivors"]] == [(0, "trial-002"), (1, "trial-001"),
                                                                  (2, "trial-003")]
    assert (doc["budget"], doc["next_budget"], doc["eta"]) == (4, 12, 2)
    first = (tmp_path / "rung-0.json").read_bytes()
    rank_rung("x", 0, list(reversed(dirs)), cfg, tmp_path / "again.json")  # order of the folders
    assert json.loads((tmp_path / "again.json").read_text())["survivors"] == doc["survivors"]
    rank_rung("x", 0, dirs, cfg, tmp_path / "rung-0.json")
    assert (tmp_path / "rung-0.json").read_bytes() == first
    # rung 1: slots hold the survivors in rank order; slots 0 and 2 tie -> trial-002 before trial-003
    slots = metrics_dirs(tmp_path / "rungs" / "1", [0.6, 0.4, 0.6], prefix="slot")
    doc1 = rank_rung("x", 1, slots, cfg, tmp_path / "rung-1.json", previous=tmp_path / "rung-0.json")
    assert [s["trial"] for s in doc1["survivors"]] == ["trial-002", "trial-003"]
    assert doc1["survivors"][1]["trial_dir"] == str(slots[2])
    trial, job = promoted(tmp_path / "rung-1.json", 1, 24)
    assert (trial, job) == ("trial-003", RungJob(2, 24, slots[2]))
    with pytest.raises(InputError, match="slot 2 requested, 2 trials survive"):
        promoted(tmp_path / "rung-1.json", 2, 24)
    with pytest.raises(InputError, match="rung 2 has no successor"):
        rank_rung("x", 2, slots[:2], cfg, tmp_path / "rung-2.json", previous=tmp_path / "rung-1.json")
    with pytest.raises(InputError, match="trains 3 trials, 2 folders"):
        rank_rung("x", 1, slots[:2], cfg, tmp_path / "bad.json", previous=tmp_path / "rung-0.json")


def test_ties_by_index_beyond_three_digits(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
        write_json(d / "val_metrics.json", {"val_dice": 0.5})
    ranked = rank_trials(dirs, "val_dice", names=["trial-1000", "trial-999"])
    assert [r["trial"] for r in ranked] == ["trial-999", "trial-1000"]


def test_select_names_the_trial_each_slot_held(tmp_path: Path) -> None:
    cfg = experiment(4, 2)  # 4 x 12 epochs, the best 2 to 24
    dirs = metrics_dirs(tmp_path / "trials", [0.1, 0.3, 0.2, 0.4])
    rank_rung("x", 0, dirs, cfg, tmp_path / "rung-0.json")  # survivors trial-003, trial-001
    slots = metrics_dirs(tmp_path / "rungs" / "1", [0.5, 0.6], prefix="slot")
    for s in slots:
        save(Checkpoint(nn.Linear(8, 2).state_dict(), PARAMS, 1, "val_dice", 0.5, TOY_META),
             s / "checkpoint.pt")  # no MLflow run
    write_json(tmp_path / "search.json", {"tracking_uri": "sqlite:///none.db", "mlflow_experiment_id": "1",
                                          "parent_run_id": "p"})
    doc = package_selected("x", slots, tmp_path / "search.json", cfg, tmp_path / "selected.json",
                       log_model=False, rung_files=[tmp_path / "rung-0.json"])
    assert (doc["trial"], doc["trial_dir"], doc["value"]) == ("trial-001", str(slots[1]), 0.6)
    assert [r["trial"] for r in doc["ranking"]] == ["trial-001", "trial-003"]
    assert doc["rungs"][0]["budget"] == 12 and doc["rungs"][0]["survivors"] == ["trial-003", "trial-001"]
    assert [r["trial"] for r in doc["rungs"][0]["ranking"]] == ["trial-003", "trial-001", "trial-002",
                                                                 "trial-000"]


PARAMS = resolve_params({
    "task": "classification",
    "optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.9},
    "training": {"epochs": 6, "patience": 2, "val_every": 1, "warmup_epochs": 1, "scheduler": "cosine",
                 "poly_power": 1.0, "min_lr_ratio": 0.0},
}, 0)


def fit_toy(out: Path, scores: list[float], **kw: Any) -> tuple[Any, list[float]]:
    """fit on synthetic tensors; validation returns ``scores`` in turn (and records the calls)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    data = [{"image": torch.randn(4, 8), "label": torch.randint(0, 2, (4,))} for _ in range(3)]
    it, seen = iter(scores), []

    def validate(m: nn.Module) -> dict[str, float]:
        seen.append(v := next(it))
        return {"val_loss": 0.0, "acc": v}

    result = fit(model, nn.CrossEntropyLoss(), lambda epoch: data, 3, validate, PARAMS, "acc", out,
                 torch.device("cpu"), replace(TOY_META, trial="trial-000"), **kw)
    return result, seen


def test_early_stopping_continues_across_rungs(tmp_path: Path) -> None:
    """Peak at epoch 2, patience 2: the uninterrupted run stops at epoch 4. Cut at epoch 3 and
    promoted, it stops at 4 too, with the same history; promoted again, it trains nothing."""
    scores = [0.2, 0.9, 0.5, 0.4, 0.8, 0.8]
    whole, _ = fit_toy(tmp_path / "whole", scores)
    assert whole.stopped_early and len(whole.history) == 4
    rung0, seen0 = fit_toy(tmp_path / "r0", scores, stop_at=3)
    assert seen0 == scores[:3] and not rung0.stopped_early  # validated at the rung's last epoch
    assert not load_resume(tmp_path / "r0" / "last.pt").done
    rung1, seen1 = fit_toy(tmp_path / "r1", scores[3:], stop_at=6, resume_from=tmp_path / "r0")
    assert seen1 == [0.4] and rung1.stopped_early and rung1.resumed_from == 3
    assert (tmp_path / "r1" / "history.tsv").read_bytes() == (tmp_path / "whole" / "history.tsv").read_bytes()
    assert len(pd.read_csv(tmp_path / "r0" / "history.tsv", sep="\t")) == 3  # the source is left alone
    rung2, seen2 = fit_toy(tmp_path / "r2", [], stop_at=6, resume_from=tmp_path / "r1")
    assert seen2 == [] and rung2.best_epoch == 2
    assert (tmp_path / "r2" / "history.tsv").read_bytes() == (tmp_path / "whole" / "history.tsv").read_bytes()
    assert json.loads((tmp_path / "r2" / "val_metrics.json").read_text())["epoch"] == 2
    assert load_resume(tmp_path / "r2" / "last.pt").done


def test_a_promotion_needs_a_matching_source(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no resume state"):
        fit_toy(tmp_path / "r1", [0.1] * 6, stop_at=6, resume_from=tmp_path / "nothing")
    fit_toy(tmp_path / "r0", [0.1, 0.2, 0.3, 0.4], stop_at=4)
    with pytest.raises(InputError, match="past this rung's budget of 2"):
        fit_toy(tmp_path / "r1", [0.1] * 6, stop_at=2, resume_from=tmp_path / "r0")


@pytest.mark.slow
def test_promoted_trial_equals_the_uninterrupted_run(cohort: Path) -> None:  # noqa: F811
    """Rung 0 trains 3 of 6 epochs; promoted, the trial continues its own last.pt to 6: history,
    weights and metrics equal the uninterrupted 6-epoch run's, in the trial's one MLflow run."""
    reference = run_trial(cohort, "whole", SEG)
    search = cohort / "sh-search.json"
    search_init("lesion", f"sqlite:///{cohort}/mlflow.db", SEG, search)
    args = ("lesion", "trial-000", cohort / "patches", cohort / "splits.json", cohort / "preprocessed",
            cohort / "manifest.tsv", search, SEED, SEG)
    rung0 = cohort / "sh" / "trials" / "trial-000"
    train_trial(*args, rung0, lock_dir=cohort / "locks", job=RungJob(0, 3))
    assert pd.read_csv(rung0 / "history.tsv", sep="\t")["epoch"].tolist() == [1, 2, 3]
    write_json(cohort / "sh" / "rung-0.json", {"rung": 0, "survivors": [
        {"slot": 0, "trial": "trial-000", "trial_dir": str(rung0), "value": 0.0}]})
    trial, job = promoted(cohort / "sh" / "rung-0.json", 0, 6)
    slot = cohort / "sh" / "rungs" / "1" / "slot-000"
    train_trial(*args[:1], trial, *args[2:], slot, lock_dir=cohort / "locks", job=job)
    assert (slot / "history.tsv").read_bytes() == (reference / "history.tsv").read_bytes()
    assert (slot / "val_metrics.json").read_bytes() == (reference / "val_metrics.json").read_bytes()
    ours, ref = (load_checkpoint(d / "checkpoint.pt") for d in (slot, reference))
    assert ours.epoch == ref.epoch and all(torch.equal(ours.model[k], ref.model[k]) for k in ref.model)
    assert ours.params == ref.params and ours.meta.mlflow_run_id != ref.meta.mlflow_run_id
    assert len(pd.read_csv(rung0 / "history.tsv", sep="\t")) == 3
    # one MLflow run for the trial, continued by the rung: epochs 1..6, tagged with its rung
    c = client(f"sqlite:///{cohort}/mlflow.db")
    meta = json.loads(search.read_text())
    runs = c.search_runs([meta["mlflow_experiment_id"]], filter_string=f"tags.mlflow.parentRunId = '{meta['parent_run_id']}'")
    assert [r.info.run_id for r in runs] == [ours.meta.mlflow_run_id]
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["rung"] == "1"
    assert runs[0].info.run_name.startswith("trial-000 r1")  # renamed by the rung it reached
    assert sorted(m.step for m in c.get_metric_history(ours.meta.mlflow_run_id, "val_dice")) == [1, 2, 3, 4, 5, 6]
