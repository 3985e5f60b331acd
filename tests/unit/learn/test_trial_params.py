"""Tests of mripipe.learn.trial_params: the typed trial parameters, their exact JSON round trip
and the one place their defaults come from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mripipe.core.config import schema, with_defaults
from mripipe.core.errors import InputError
from mripipe.learn.search import resolve_params
from mripipe.learn.trial_params import (
    BY_TASK,
    GROUPS,
    ClassificationLoss,
    ClassificationNetwork,
    SegmentationNetwork,
    SegmentationTraining,
    TrainingParams,
    TrialParams,
    default_groups,
)

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = [ROOT / "config" / "config.yaml", ROOT / "tests" / "e2e" / "config.yaml",
           ROOT / "tests" / "e2e" / "config_msd.yaml", *sorted((ROOT / "config" / "recipes").glob("*.yaml"))]

# params.json of test_train's SEG trial-000, as written before the parameters were typed.
GOLDEN_SEG = (
    '{"task": "segmentation", "trial_index": 0, "network": {"name": "unet", "channels": [4, 8], '
    '"dropout": 0.0}, "loss": {"name": "dice_ce"}, "optimizer": {"name": "adamw", "lr": '
    '0.0033185100693420384, "weight_decay": 0.0001, "momentum": 0.9}, "training": {"epochs": 6, '
    '"patience": 6, "warmup_epochs": 1, "scheduler": "cosine", "poly_power": 0.9, "min_lr_ratio": '
    '0.01, "batch_size": 2, "batches_per_epoch": 3, "val_every": 1, "augment": 1.0, "amp": true, '
    '"sw_batch_size": 4, "sw_overlap": 0.25, "val_max_scans": 0}}'
)
SEG: dict[str, Any] = {
    "task": "segmentation",
    "network": {"channels": [4, 8]},
    "training": {"epochs": 6, "batches_per_epoch": 3, "val_every": 1, "batch_size": 2, "patience": 6},
    "search": {"n_trials": 2, "seed": 1, "metric": "val_dice",
               "space": {"optimizer.lr": {"loguniform": [1e-3, 1e-2]}}},
}


def _experiments() -> list[tuple[str, dict[str, Any]]]:
    """Every experiment of the shipped configs, as written and as the workflow hands it."""
    out = []
    for path in CONFIGS:
        exps = yaml.safe_load(path.read_text())["experiments"]
        filled = with_defaults("experiments", exps)
        out += [(f"{path.name}:{k}", v) for k, v in exps.items()]
        out += [(f"{path.name}:{k}:filled", json.loads(json.dumps(v, sort_keys=True)))
                for k, v in filled.items()]
    return out


@pytest.mark.parametrize(("name", "experiment"), _experiments(), ids=lambda v: v if isinstance(v, str) else "")
def test_resolve_to_json_and_back_is_exact(name: str, experiment: dict[str, Any]) -> None:
    for i in range(8):
        p = resolve_params(experiment, i)
        text = json.dumps(p.to_dict(), indent=2)
        back = TrialParams.from_dict(json.loads(text))
        assert back == p, name
        assert json.dumps(back.to_dict(), indent=2) == text
        assert list(p.to_dict()) == ["task", "trial_index", *GROUPS]


def test_params_json_is_what_it_was() -> None:
    p = resolve_params(SEG, 0)
    assert json.dumps(p.to_dict()) == GOLDEN_SEG
    assert isinstance(p.network, SegmentationNetwork) and p.network.channels == (4, 8)
    assert isinstance(p.training, SegmentationTraining) and p.training.sw_overlap == 0.25
    flat = p.flat()
    assert list(flat)[:5] == ["task", "trial_index", "network.name", "network.channels", "network.dropout"]
    assert flat["network.channels"] == [4, 8] and flat["optimizer.lr"] == 0.0033185100693420384
    assert len(flat) == 2 + 3 + 1 + 4 + 14


def test_the_task_picks_the_groups() -> None:
    p = resolve_params({"task": "classification", "loss": {"label_smoothing": 0.1}}, 0)
    assert isinstance(p.network, ClassificationNetwork) and (p.network.width, p.network.depth) == (8, 2)
    assert isinstance(p.loss, ClassificationLoss) and p.loss.label_smoothing == 0.1
    assert type(p.training) is TrainingParams  # no sliding-window keys
    with pytest.raises(InputError, match="unknown parameter 'sw_overlap'"):
        resolve_params({"task": "classification", "training": {"sw_overlap": 0.5}}, 0)


def test_values_keep_their_json_form() -> None:
    """An integer given for a float stays an integer (params.json unchanged); an integral float
    for an integer becomes one; anything else of the wrong type is refused, naming the key."""
    p = resolve_params({"task": "segmentation", "optimizer": {"lr": 1}, "training": {"epochs": 3.0}}, 0)
    assert p.to_dict()["optimizer"]["lr"] == 1 and isinstance(p.optimizer.lr, int)
    assert p.training.epochs == 3 and isinstance(p.training.epochs, int)
    for group, key, value in [("optimizer", "lr", "fast"), ("training", "epochs", 2.5),
                              ("training", "amp", 1), ("training", "batch_size", True),
                              ("network", "channels", [8, "16"])]:
        with pytest.raises(InputError, match=rf"{group}\.{key}"):
            resolve_params({"task": "segmentation", group: {key: value}}, 0)


def test_from_dict_refuses_missing_and_unknown_keys() -> None:
    good = resolve_params(SEG, 0).to_dict()
    with pytest.raises(InputError, match="expected the keys"):
        TrialParams.from_dict({k: v for k, v in good.items() if k != "loss"})
    with pytest.raises(InputError, match=r"missing \['val_max_scans'\]"):
        TrialParams.from_dict(good | {"training": {k: v for k, v in good["training"].items()
                                                   if k != "val_max_scans"}})
    with pytest.raises(InputError, match=r"unknown parameter\(s\) \['width'\]"):
        TrialParams.from_dict(good | {"network": good["network"] | {"width": 4}})
    with pytest.raises(InputError, match="unknown task"):
        TrialParams.from_dict(good | {"task": "regression"})


def test_each_default_has_one_source() -> None:
    """The schema defaults the task-independent keys; BY_TASK the others, which the schema
    documents (in its description) without a default. Together they cover every key."""
    props = schema()["properties"]["experiments"]["additionalProperties"]["properties"]
    for group in GROUPS:
        keys = props[group]["properties"]
        covered: set[str] = set()
        for task, table in BY_TASK.items():
            for key, value in table[group].items():
                assert key in keys, (group, key)
                assert "default" not in keys[key], f"{group}.{key}: defaulted twice"
                assert str(value) in keys[key]["description"], (task, group, key, value)
            resolved = default_groups(task)[group]
            assert resolved == {**{k: s["default"] for k, s in keys.items() if "default" in s},
                                **table[group]}
            covered |= set(resolved)
        assert covered == set(keys), group


def test_defaults_are_fresh_copies() -> None:
    first = default_groups("segmentation")
    first["network"]["channels"].append(64)
    assert default_groups("segmentation")["network"]["channels"] == [8, 16, 32]
