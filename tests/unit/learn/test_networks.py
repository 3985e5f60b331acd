"""Tests of mripipe.learn.networks: the network factory, checkpoint loading and whole-volume inference."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mripipe.learn.checkpoint import Checkpoint, CheckpointMeta, save
from mripipe.learn.networks import (
    build_model,
    check_input_size,
    classify,
    load_trained,
    segment_probability,
)
from mripipe.learn.search import resolve_params
from mripipe.learn.trial_params import ClassificationNetwork, SegmentationNetwork, TrialParams

torch.set_num_threads(1)


def seg_params(name: str) -> TrialParams:
    return resolve_params({"task": "segmentation", "network": {"name": name, "channels": [4, 8]}}, 0)


def cls_params(name: str) -> TrialParams:
    return resolve_params({"task": "classification", "network": {"name": name, "width": 4, "depth": 1}}, 0)


@pytest.mark.parametrize("name", ["unet", "segresnet", "basicunet"])
def test_segmentation_networks_map_patches_to_two_channel_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(seg_params(name), in_channels=2, n_classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, 32, 32, 32))
    assert out.shape == (1, 2, 32, 32, 32)


@pytest.mark.parametrize("name", ["densenet", "resnet", "convnet"])
def test_classification_networks_map_volumes_to_class_logits(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(cls_params(name), in_channels=2, n_classes=3).eval()
    probs = classify(model, torch.randn(2, 2, 32, 40, 32))
    assert probs.shape == (2, 3)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))


def test_input_size_checks() -> None:
    check_input_size(SegmentationNetwork("unet", (8, 16, 32), 0.0), [16, 16, 16])  # 16 / 4 = 4 ok
    with pytest.raises(ValueError, match="multiple of 16"):
        check_input_size(SegmentationNetwork("basicunet", (8, 16, 32), 0.0), [16, 16, 16])
    with pytest.raises(ValueError, match="too small for densenet"):
        check_input_size(ClassificationNetwork("densenet", 8, 2, 0.0), [16, 32, 32])


def test_convnet_counts_bright_spots_through_average_pooling() -> None:
    # conv_classifier ends in [global mean, global max] per channel: with an identity-like first
    # block the mean grows with the number of bright spots, the max does not. Two spots vs one
    # spot in an otherwise empty volume must therefore give different pooled features, and the
    # features do not depend on where the spots are (a shifted copy gives the same output).
    torch.manual_seed(0)
    model = build_model(cls_params("convnet"), in_channels=1, n_classes=3).eval()
    one = torch.zeros(1, 1, 16, 16, 16)
    one[0, 0, 4, 4, 4] = 5.0
    two = one.clone()
    two[0, 0, 10, 10, 10] = 5.0
    shifted = torch.roll(one, shifts=(2, 2, 2), dims=(2, 3, 4))
    features = model[:-2]  # up to the pooling, before dropout and the linear layer
    with torch.no_grad():
        f1, f2, fs = features(one), features(two), features(shifted)
    assert f1.shape == (1, 8)  # width 4, depth 1: 4 means + 4 maxima
    assert not torch.allclose(f1[:, :4], f2[:, :4])
    torch.testing.assert_close(f1, fs)
    check_input_size(ClassificationNetwork("convnet", 4, 2, 0.0), [8, 8, 8])
    with pytest.raises(ValueError, match="too small for convnet of depth 2"):
        check_input_size(ClassificationNetwork("convnet", 4, 2, 0.0), [8, 6, 8])


def test_unknown_network_is_a_clear_error() -> None:
    p = seg_params("unet")
    p = replace(p, network=replace(p.network, name="transformer"))
    with pytest.raises(ValueError, match="unknown segmentation network 'transformer'"):
        build_model(p, 2, 2)


def test_load_trained_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    params = seg_params("unet")
    model = build_model(params, 2, 2)
    meta = CheckpointMeta(in_channels=2, n_classes=2, class_names=("background", "lesion"),
                          roi_size=(16, 16, 16), mlflow_run_id="abc", task="segmentation")
    save(Checkpoint(model.state_dict(), params, 3, "val_dice", 0.5, meta), tmp_path / "checkpoint.pt")
    loaded, ckpt = load_trained(tmp_path, "cpu")
    assert not loaded.training
    assert ckpt.epoch == 3 and ckpt.meta.roi_size == (16, 16, 16) and ckpt.params == params
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_load_trained_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "checkpoint.pt")):
        load_trained(tmp_path)
    torch.save({"weights": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not an mripipe checkpoint"):
        load_trained(tmp_path)


def test_sliding_window_probability_covers_a_whole_volume() -> None:
    torch.manual_seed(0)
    model = build_model(seg_params("unet"), 2, 2).eval()
    prob = segment_probability(model, torch.randn(2, 20, 27, 18), roi_size=[16, 16, 16])
    assert prob.shape == (20, 27, 18)
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


@pytest.mark.gpu
def test_cuda_inference_with_amp() -> None:
    model = build_model(seg_params("unet"), 2, 2).cuda().eval()
    prob = segment_probability(model, torch.randn(2, 20, 20, 20), roi_size=[16, 16, 16], amp=True)
    assert prob.device.type == "cpu" and prob.shape == (20, 20, 20)
