"""Tests of k-fold ensembles: the fold jobs, post-processing on pooled out-of-fold predictions,
the package's members and the mean of their probabilities (mripipe.learn.folds, infer.ensemble)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mripipe.core.errors import InputError
from mripipe.core.utils import write_json
from mripipe.infer.apply import load_package
from mripipe.infer.ensemble import MeanProbability
from mripipe.learn.checkpoint import (
    Checkpoint,
    CheckpointMeta,
    load_checkpoint,
    load_state_dict,
    save,
)
from mripipe.learn.folds import fold_job, fold_members, other_folds
from mripipe.learn.monitor import ValScan
from mripipe.learn.networks import build_model, classify, segment_probability
from mripipe.learn.package import write_package
from mripipe.learn.postprocess import choose_postprocess
from mripipe.learn.search import resolve_params

torch.set_num_threads(1)
SEG = {"task": "segmentation", "network": {"name": "unet", "channels": [4, 8], "dropout": 0.0}}
CLS = {"task": "classification", "network": {"name": "densenet", "width": 4, "depth": 1}}


def test_fold_jobs_train_the_choice_on_every_other_fold(tmp_path: Path) -> None:
    assert other_folds({}, 1) == [] and other_folds({"fold": 1}, 3) == [0, 2]
    with pytest.raises(InputError, match="experiment fold 3"):
        other_folds({"fold": 3}, 3)
    write_json(tmp_path / "choice.json", {"trial": "trial-002"})
    trial, params, name = fold_job(tmp_path / "choice.json", {"task": "segmentation"}, 2)
    assert (trial, params, name) == ("trial-002", {"task": "segmentation", "fold": 2}, "trial-002-fold-2")
    with pytest.raises(InputError, match="search fold"):
        fold_job(tmp_path / "choice.json", {"fold": 1}, 1)


class Fixed(torch.nn.Module):
    """A 'network' whose lesion probability is a fixed map, whatever the input."""

    def __init__(self, prob: np.ndarray) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        p = torch.from_numpy(np.clip(prob, 1e-4, 1 - 1e-4))
        self.logit = torch.log(p / (1 - p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lesion = self.logit.expand(x.shape[0], 1, *self.logit.shape)
        return torch.cat([torch.zeros_like(lesion), lesion], 1) + self.weight


def test_postprocess_pools_each_members_own_validation_scans() -> None:
    """Fold A's model finds A's lesion at 0.7; fold B's model finds B's lesion at only 0.45 and a
    lone false-positive voxel at 0.6. Pooled over both folds' scans, each predicted by its own
    fold's model, the optimum is threshold 0.45 (B's lesion kept) with a minimum volume that drops
    the lone voxel: Dice 1. Fold A alone would choose 0.5 and no minimum."""
    shape = (10, 10, 10)
    truth_a, truth_b = np.zeros(shape, bool), np.zeros(shape, bool)
    truth_a[2:4, 2:4, 2:4] = truth_b[5:7, 5:7, 5:7] = True
    prob_a, prob_b = np.where(truth_a, 0.7, 0.0), np.where(truth_b, 0.45, 0.0)
    prob_b[8, 8, 8] = 0.6
    member_a, member_b = Fixed(prob_a).eval(), Fixed(prob_b).eval()
    scans = [ValScan(n, torch.zeros(1, *shape), torch.from_numpy(t[None].astype(np.float32)))
             for n, t in (("a", truth_a), ("b", truth_b))]
    pooled = choose_postprocess([member_a, member_b], scans, shape, 2.0, overlap=0.0)
    assert (pooled["threshold"], pooled["min_lesion_mm3"], pooled["val_dice_pooled"]) == (0.45, 10.0, 1.0)
    assert pooled["n_val_scans"] == 2
    alone = choose_postprocess(member_a, scans[:1], shape, 2.0, overlap=0.0)
    assert (alone["threshold"], alone["min_lesion_mm3"]) == (0.5, 0.0)
    # one model for every scan (no pooling of out-of-fold models) misses B's lesion entirely
    wrong = choose_postprocess(member_a, scans, shape, 2.0, overlap=0.0)
    assert wrong["val_dice_pooled"] < 0.7


def _checkpoint(folder: Path, experiment: dict, n_classes: int, fold: int, seed: int) -> Path:
    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    params = resolve_params(experiment, 1)
    model = build_model(params, 2, n_classes)
    names = ("background", "lesion") if params.task == "segmentation" else ("high", "low", "none")
    meta = CheckpointMeta(in_channels=2, n_classes=n_classes, class_names=names, roi_size=(16, 16, 16),
                          trial="trial-001", task=params.task, fold=fold)
    save(Checkpoint(model.state_dict(), params, 3 + fold, "val_dice", 0.5 + fold / 10, meta),
         folder / "checkpoint.pt")
    write_json(folder / "val_metrics.json", {"val_dice": 0.5 + fold / 10, "epoch": 3 + fold})
    return folder


def _write(root: Path, params: dict, n_classes: int, k: int) -> tuple[Path, list[Path]]:
    """A fold ensemble of k untrained networks, written by the real writer: the search fold 1."""
    trial = _checkpoint(root / "trials" / "trial-001", params, n_classes, 1, 1)
    folds = [_checkpoint(root / "folds" / f"fold-{f}", params, n_classes, f, 10 + f) for f in range(k) if f != 1]
    settings = {"preprocess": {}, "target_spacing": [2.0, 2.0, 2.0], "threshold": 0.5,
                "predict": {"sw_overlap": 0.25, "sw_batch_size": 4}}
    volume = {"volume_shape": [16, 16, 16], "volume_pooling": ["area"]}
    fingerprint = {"axes": "RAS", "n_scans": 1, "tolerance": 2.0, "spacing": {}}
    write_package(trial, root / "model", ["T1w", "FLAIR"], settings, fingerprint,
                  volume if params["task"] == "classification" else None,
                  members=fold_members(trial, folds))
    return root / "model", [folds[0], trial, *folds[1:]]  # in fold order


def test_package_holds_every_fold_and_averages_their_probabilities(tmp_path: Path) -> None:
    model_dir, members = _write(tmp_path, SEG, 2, 3)
    meta = json.loads((model_dir / "model.json").read_text())
    rows = meta["ensemble"]["members"]
    assert [(r["fold"], r["file"]) for r in rows] == [(0, "weights-fold-0.pt"), (1, "weights.pt"),
                                                      (2, "weights-fold-2.pt")]
    assert meta["weights"]["file"] == "weights.pt" and rows[1]["sha256"] == meta["weights"]["sha256"]
    ckpt0 = load_checkpoint(members[0] / "checkpoint.pt")
    state0 = load_state_dict(model_dir / "weights-fold-0.pt")
    assert all(torch.equal(state0[k], ckpt0.model[k]) for k in state0)
    assert meta["params"] == ckpt0.params.to_dict() and meta["network"] == meta["params"]["network"]

    pkg = load_package(model_dir)
    assert isinstance(pkg.model, MeanProbability) and len(pkg.model.members) == 3
    image = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    singles = []
    for d in members:
        net = build_model(resolve_params(SEG, 1), 2, 2)
        net.load_state_dict(load_checkpoint(d / "checkpoint.pt").model)
        singles.append(segment_probability(net.eval(), image, (16, 16, 16)))
    ensemble = segment_probability(pkg.model, image, (16, 16, 16))  # one window: exactly the mean
    assert torch.allclose(ensemble, torch.stack(singles).mean(0), atol=1e-6)
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)  # the members do differ

    # an old (single-model) package: model.json without ensemble loads weights.pt alone
    del meta["ensemble"]
    (model_dir / "model.json").write_text(json.dumps(meta))
    single = load_package(model_dir)
    assert not isinstance(single.model, MeanProbability)
    assert torch.allclose(segment_probability(single.model, image, (16, 16, 16)), singles[1], atol=1e-6)


def test_classifier_ensemble_averages_class_probabilities(tmp_path: Path) -> None:
    model_dir, members = _write(tmp_path, CLS, 3, 2)
    pkg = load_package(model_dir)
    x = torch.randn(2, 2, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    singles = []
    for d in members:
        net = build_model(resolve_params(CLS, 1), 2, 3)
        net.load_state_dict(load_checkpoint(d / "checkpoint.pt").model)
        singles.append(classify(net.eval(), x))
    assert torch.allclose(classify(pkg.model, x), torch.stack(singles).mean(0), atol=1e-6)


def test_members_must_share_the_network_and_differ_in_fold(tmp_path: Path) -> None:
    trial = _checkpoint(tmp_path / "trial", SEG, 2, 0, 0)
    same = _checkpoint(tmp_path / "same", SEG, 2, 0, 1)
    with pytest.raises(InputError, match="fold 0 already has a member"):
        fold_members(trial, [same])
    other = _checkpoint(tmp_path / "other", {**SEG, "network": {**SEG["network"], "channels": [4, 4]}}, 2, 1, 2)
    fingerprint = {"axes": "RAS", "n_scans": 1, "tolerance": 2.0, "spacing": {}}
    settings = {"preprocess": {}, "target_spacing": [2.0] * 3, "threshold": 0.5}
    with pytest.raises(InputError, match="network differs"):
        write_package(trial, tmp_path / "model", ["T1w", "FLAIR"], settings, fingerprint,
                      members=fold_members(trial, [other]))
    assert not (tmp_path / "model").exists()
