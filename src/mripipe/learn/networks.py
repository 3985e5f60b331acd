"""Network factory (MONAI networks), trained-model loading and whole-volume inference.

Segmentation networks output logits ``(B, 2, X, Y, Z)`` (background, lesion); the lesion
probability is ``softmax(logits)[:, 1]``. With K >= 2 foreground classes they output ``K + 1``
channels (background first, then the classes by label value) and :func:`segment_softmax` gives
all of them. Classification networks output logits
``(B, n_classes)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.networks import nets
from monai.networks.blocks import Convolution
from torch import nn

from mripipe.core.errors import InputError
from mripipe.learn.checkpoint import CHECKPOINT, Checkpoint, load_checkpoint
from mripipe.learn.trial_params import (
    ClassificationNetwork,
    NetworkParams,
    SegmentationNetwork,
    TrialParams,
)

log = logging.getLogger(__name__)

SEGMENTATION_NETWORKS = ("unet", "segresnet", "basicunet")
CLASSIFICATION_NETWORKS = ("densenet", "resnet", "convnet")


def build_segmentation_net(network: SegmentationNetwork, in_channels: int, out_channels: int = 2) -> nn.Module:
    """A MONAI 3-D segmentation network with ``out_channels`` output channels (2: background,
    lesion; K + 1 for K foreground classes).

    Args:
        network: ``name`` unet|segresnet|basicunet, ``channels`` (c0, c1, ...: the widths per
            resolution level, each level halves the size) and ``dropout``.
        in_channels: image channels C.

    Returns:
        A module mapping ``(B, C, X, Y, Z)`` to logits ``(B, out_channels, X, Y, Z)``.
    """
    name = network.name
    ch = list(network.channels)
    dropout = float(network.dropout)
    if len(ch) < 2:
        raise InputError(f"network.channels needs at least two levels, got {ch}")
    if name == "unet":
        return nets.UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=ch,
            strides=[2] * (len(ch) - 1),
            num_res_units=1,
            dropout=dropout,
        )
    if name == "segresnet":
        return nets.SegResNet(
            spatial_dims=3,
            init_filters=ch[0],
            in_channels=in_channels,
            out_channels=out_channels,
            dropout_prob=dropout or None,
            blocks_down=tuple([1] * len(ch)),
            blocks_up=tuple([1] * (len(ch) - 1)),
            norm=("GROUP", {"num_groups": math.gcd(8, ch[0])}),
        )
    if name == "basicunet":
        # BasicUNet has a fixed depth of 4 down-samplings: map the levels onto its 6 widths.
        feats = (ch[0], ch[0], ch[1], ch[-1], ch[-1], ch[0])
        return nets.BasicUNet(
            spatial_dims=3, in_channels=in_channels, out_channels=out_channels, features=feats, dropout=dropout
        )
    raise InputError(f"unknown segmentation network {name!r}; expected one of {SEGMENTATION_NETWORKS}")


def check_input_size(network: NetworkParams, size: Sequence[int]) -> None:
    """Raise ``ValueError`` if a network cannot take inputs of spatial ``size``.

    Segmentation networks halve the patch ``levels`` times (BasicUNet: always 4): each side
    must be a multiple of ``2**levels`` and at least twice that. DenseNet/ResNet divide a
    volume by 16 and batch-normalise there, so a batch of one needs each side >= 32; ``convnet``
    divides it by ``2**depth`` and needs each side >= ``2**(depth + 1)``.
    """
    name = network.name
    if isinstance(network, ClassificationNetwork):
        if name == "convnet":
            least = 2 ** (network.depth + 1)
            if min(size) < least:
                raise InputError(
                    f"volume size {list(size)} is too small for convnet of depth "
                    f"{network.depth} (each side >= {least})"
                )
        elif name in CLASSIFICATION_NETWORKS and min(size) < 32:
            raise InputError(f"volume size {list(size)} is too small for {name} (each side >= 32)")
        return
    if name not in SEGMENTATION_NETWORKS:
        return
    levels = 4 if name == "basicunet" else len(network.channels) - 1
    factor = 2**levels
    if any(s % factor or s // factor < 2 for s in size):
        raise InputError(
            f"patch size {list(size)} does not suit {name} with {levels} down-samplings: each "
            f"side must be a multiple of {factor} and at least {2 * factor}"
        )


def build_classification_net(network: ClassificationNetwork, in_channels: int, n_classes: int) -> nn.Module:
    """A small MONAI 3-D classifier.

    Args:
        network: ``name`` densenet|resnet|convnet, ``width`` w, ``depth`` d, ``dropout``; DenseNet
            uses ``w`` as initial features and growth rate with three dense blocks of ``d``
            layers; ResNet uses basic blocks, widths ``w * (1, 2, 4, 8)``, ``d`` blocks per stage, a stride-2 stem and no max-pool
            (both networks divide the volume by 16); ``convnet`` is :func:`conv_classifier`.
        in_channels: image channels C.
        n_classes: number of classes K.

    Returns:
        A module mapping ``(B, C, X, Y, Z)`` to logits ``(B, K)``.
    """
    name = network.name
    width, depth = network.width, network.depth
    dropout = float(network.dropout)
    if name == "densenet":
        return nets.DenseNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=n_classes,
            init_features=width,
            growth_rate=width,
            block_config=(depth, depth, depth),
            bn_size=2,
            dropout_prob=dropout,
        )
    if name == "resnet":
        model = nets.ResNet(
            block="basic",
            layers=[depth] * 4,
            block_inplanes=[width, 2 * width, 4 * width, 8 * width],
            spatial_dims=3,
            n_input_channels=in_channels,
            conv1_t_size=3,
            conv1_t_stride=2,
            no_max_pool=True,
            num_classes=n_classes,
        )
        if dropout > 0 and model.fc is not None:
            model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)  # type: ignore[assignment]
        return model
    if name == "convnet":
        return conv_classifier(in_channels, n_classes, width, depth, dropout)
    raise InputError(
        f"unknown classification network {name!r}; expected one of {CLASSIFICATION_NETWORKS}"
    )


def conv_classifier(
    in_channels: int, n_classes: int, width: int, depth: int, dropout: float = 0.0
) -> nn.Module:
    """A shallow all-convolutional classifier for a few dozen training volumes.

    ``depth`` MONAI conv-batch-norm-PReLU blocks (3x3x3, stride 2, widths ``width * 2**i``),
    global average pooling, dropout and a linear layer. Global averaging of local features makes
    the logits depend on *how much* of a local pattern (e.g. a bright FLAIR spot) the volume holds,
    not on where: the inductive bias of a burden count, with few parameters to memorise anatomy.

    Args:
        in_channels: image channels C.
        n_classes: number of classes K.
        width: channels of the first block.
        depth: number of blocks (each halves the volume).
        dropout: dropout probability before the linear layer.

    Returns:
        A module mapping ``(B, C, X, Y, Z)`` to logits ``(B, K)``.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for level in range(depth):
        out = width * 2**level
        layers.append(Convolution(spatial_dims=3, in_channels=channels, out_channels=out,
                                  strides=2, kernel_size=3, norm="batch", act="prelu"))
        channels = out
    layers += [AvgMaxPool(), nn.Dropout(dropout), nn.Linear(2 * channels, n_classes)]
    return nn.Sequential(*layers)


class AvgMaxPool(nn.Module):
    """Global average and max pooling, concatenated: ``(B, C, X, Y, Z)`` -> ``(B, 2C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool every channel over space; averages first, then maxima."""
        flat = x.flatten(2)
        return torch.cat([flat.mean(dim=2), flat.amax(dim=2)], dim=1)


def build_model(params: TrialParams, in_channels: int, n_classes: int) -> nn.Module:
    """The network of a trial's parameters (see :func:`mripipe.learn.search.resolve_params`).

    Args:
        params: the trial's parameters (its ``network`` is used).
        in_channels: image channels C.
        n_classes: segmentation: output channels, 2 (background, lesion) or K + 1 for K
            foreground classes; classification: K classes.
    """
    if isinstance(params.network, SegmentationNetwork):
        return build_segmentation_net(params.network, in_channels, n_classes)
    return build_classification_net(params.network, in_channels, n_classes)


def load_trained(trial_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Checkpoint]:
    """Load a trial's best checkpoint (``checkpoint.pt``, :mod:`mripipe.learn.checkpoint`).

    Args:
        trial_dir: ``results/{experiment}/trials/{trial}``.
        device: where to put the model.

    Returns:
        ``(model in eval mode on device, checkpoint)`` (see docs/contract.md).
    """
    ckpt = load_checkpoint(Path(trial_dir) / CHECKPOINT, device)
    model = build_model(ckpt.params, ckpt.meta.in_channels, ckpt.meta.n_classes)
    model.load_state_dict(ckpt.model)
    model.to(device).eval()
    return model, ckpt


def autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    """Mixed precision on CUDA (float16), a no-op context on CPU."""
    on = enabled and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=on)


@torch.no_grad()
def segment_logits(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    amp: bool = True,
) -> torch.Tensor:
    """Sliding-window logits of a whole volume (MONAI ``sliding_window_inference``).

    Args:
        model: segmentation network (eval mode), on the device inference runs on.
        image: ``(C, X, Y, Z)`` float32 volume (any device).
        roi_size: window size, normally the training patch size.
        sw_batch_size: windows per forward pass.
        overlap: window overlap fraction.
        amp: float16 autocast when on CUDA.

    Returns:
        ``(n_out, X, Y, Z)`` float32 logits on the model's device.
    """
    device = next(model.parameters()).device
    x = image.to(device=device, dtype=torch.float32)[None]
    with autocast(device, amp):
        out = sliding_window_inference(
            x, roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, predictor=model,
            overlap=overlap, mode="gaussian",
        )
    assert isinstance(out, torch.Tensor)
    return out[0].float()


def segment_probability(model: nn.Module, image: torch.Tensor, roi_size: Sequence[int],
                        *args: Any, **kwargs: Any) -> torch.Tensor:
    """Lesion probability of a whole volume: channel 1 of :func:`segment_softmax` (same arguments).

    Returns:
        ``(X, Y, Z)`` float32 probabilities in [0, 1] on the CPU.
    """
    return segment_softmax(model, image, roi_size, *args, **kwargs)[1]


def segment_softmax(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    amp: bool = True,
) -> torch.Tensor:
    """Every class's probability of a whole volume: softmax of :func:`segment_logits`.

    Returns:
        ``(K + 1, X, Y, Z)`` float32 probabilities (background first) on the CPU.
    """
    logits = segment_logits(model, image, roi_size, sw_batch_size, overlap, amp)
    return torch.softmax(logits, dim=0).cpu()


@torch.no_grad()
def classify(model: nn.Module, image: torch.Tensor, amp: bool = True) -> torch.Tensor:
    """Class probabilities of a batch of volumes.

    Args:
        model: classification network (eval mode).
        image: ``(B, C, X, Y, Z)`` float32.
        amp: float16 autocast when on CUDA.

    Returns:
        ``(B, K)`` float32 probabilities on the CPU.
    """
    device = next(model.parameters()).device
    with autocast(device, amp):
        logits = model(image.to(device=device, dtype=torch.float32))
    return torch.softmax(logits.float(), dim=1).cpu()
