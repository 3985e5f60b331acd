"""Tests of mripipe.learn.search: seeded, prefix-stable random search and parameter resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mripipe.core.errors import InputError
from mripipe.learn.search import (
    resolve_params,
    sample_trial,
    search_metric,
    trial_index,
    validate_space,
)
from mripipe.learn.trial_params import default_groups

ROOT = Path(__file__).resolve().parents[3]

SPACE: dict[str, Any] = {
    "network.name": {"choice": ["unet", "segresnet", "basicunet"]},
    "optimizer.lr": {"loguniform": [1e-4, 1e-2]},
    "network.dropout": {"uniform": [0.0, 0.5]},
    "training.batch_size": {"int": [2, 4]},
    "network.channels": {"choice": [[8, 16, 32], [16, 32, 64]]},
}
EXPERIMENT: dict[str, Any] = {"task": "segmentation", "search": {"n_trials": 4, "seed": 3, "space": SPACE}}


def test_same_seed_same_trials_and_other_seed_differs() -> None:
    a = [sample_trial(SPACE, 3, i) for i in range(6)]
    b = [sample_trial(SPACE, 3, i) for i in range(6)]
    c = [sample_trial(SPACE, 4, i) for i in range(6)]
    assert a == b
    assert a != c


def test_adding_trials_or_parameters_never_changes_earlier_draws() -> None:
    short = [resolve_params(EXPERIMENT, i) for i in range(3)]
    longer = dict(EXPERIMENT, search=dict(EXPERIMENT["search"], n_trials=10))
    assert [resolve_params(longer, i) for i in range(3)] == short
    # A new parameter in the space leaves the draws of the existing ones untouched.
    more = dict(EXPERIMENT, search=dict(EXPERIMENT["search"], space=SPACE | {"loss.name": {"choice": ["dice_ce", "dice_focal"]}}))
    for i in range(3):
        before, after = short[i].flat(), resolve_params(more, i).flat()
        assert {k: v for k, v in after.items() if k != "loss.name"} == {k: v for k, v in before.items() if k != "loss.name"}


def test_values_lie_in_their_ranges_and_cover_choices() -> None:
    draws = [sample_trial(SPACE, 0, i) for i in range(200)]
    assert all(1e-4 <= d["optimizer.lr"] <= 1e-2 for d in draws)
    assert all(0.0 <= d["network.dropout"] <= 0.5 for d in draws)
    assert {d["training.batch_size"] for d in draws} == {2, 3, 4}  # int bounds are inclusive
    assert {d["network.name"] for d in draws} == {"unet", "segresnet", "basicunet"}
    # loguniform: about half the draws below the geometric mean 1e-3.
    below = sum(d["optimizer.lr"] < 1e-3 for d in draws)
    assert 70 < below < 130


def test_resolved_params_have_the_same_names_across_trials() -> None:
    names = {tuple(resolve_params(EXPERIMENT, i).flat()) for i in range(8)}
    assert len(names) == 1
    p = resolve_params(EXPERIMENT, 5)
    assert p.task == "segmentation" and p.trial_index == 5
    assert p.training.epochs == default_groups("segmentation")["training"]["epochs"]


def test_experiment_settings_override_defaults_and_search_overrides_settings() -> None:
    exp = {"task": "classification", "training": {"epochs": 3},
           "optimizer": {"lr": 0.5}, "search": {"seed": 1, "space": {"optimizer.lr": {"choice": [0.25]}}}}
    p = resolve_params(exp, 0)
    assert p.training.epochs == 3
    assert p.optimizer.lr == 0.25
    assert p.network.name == "densenet"


@pytest.mark.parametrize(
    "space",
    [
        {"lr": {"uniform": [0, 1]}},  # no group
        {"optimizer.lr": {"normal": [0, 1]}},  # unknown kind
        {"optimizer.lr": {"uniform": [1, 0]}},  # low > high
        {"optimizer.lr": {"loguniform": [0, 1]}},  # log of 0
        {"optimizer.lr": {"choice": []}},
    ],
)
def test_bad_spaces_are_rejected(space: dict) -> None:
    with pytest.raises(ValueError, match="search space"):
        validate_space(space)


def test_unknown_parameter_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown parameter 'widht'"):
        resolve_params({"task": "classification", "network": {"widht": 4}}, 0)


def test_trial_index() -> None:
    assert trial_index("trial-007") == 7
    with pytest.raises(ValueError):
        trial_index("trial7")


def test_an_experiment_needs_a_known_task() -> None:
    with pytest.raises(InputError, match="without a task"):
        resolve_params({"search": {"seed": 1}}, 0)
    with pytest.raises(InputError, match="without a task"):
        search_metric({})
    with pytest.raises(InputError, match="unknown task 'regression'"):
        resolve_params({"task": "regression"}, 0)


def test_default_config_resolves_for_every_trial() -> None:
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for exp in cfg["experiments"].values():
        for i in range(exp["search"]["n_trials"]):
            p = resolve_params(exp, i)
            assert p.task == exp["task"]


def test_trial_label_names_rung_and_key_searched_values_first() -> None:
    from mripipe.learn.search import trial_label

    space = {"network.channels": {}, "network.dropout": {}, "loss.name": {}, "optimizer.name": {},
             "optimizer.lr": {}, "training.augment": {}}
    values = {"network.channels": [16, 32, 64], "network.dropout": 0.04906, "loss.name": "dice_focal",
              "optimizer.name": "adam", "optimizer.lr": 0.0021347, "training.augment": 0.6}
    # lr, then the network's and the loss's choices (LABEL_KEYS), then the space's order; 4 values
    assert trial_label("trial-003", 1, values, space) == (
        "trial-003 r1 lr=0.0021 channels=16-32-64 loss=dice_focal dropout=0.049")
    assert trial_label("trial-000", 0, {"optimizer.lr": 3e-05}, {"optimizer.lr": {}}) == "trial-000 r0 lr=3e-05"
    assert trial_label("trial-000", 0, {}, {}) == "trial-000 r0"
