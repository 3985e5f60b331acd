"""A package's network: one model, or the mean of a fold ensemble's members.

A package written with ``split.n_folds: k > 1`` lists its ``k`` weight files in ``model.json``
``ensemble.members`` (:mod:`mripipe.learn.folds`); ``weights`` is the search fold's member, so a
reader that knows one file still loads a working model. :func:`load_network` loads every member
and wraps them in :class:`MeanProbability`, whose output is the log of the members' mean softmax
probabilities: every caller that applies a softmax (sliding-window segmentation, classification,
argmax) then gets exactly the mean of the members' probabilities for each input (window or
volume), as nnU-Net averages its fold models. Overlapping sliding windows are blended as a
single network's outputs are (Gaussian weights, before the softmax). A package without
``ensemble`` (``k = 1``, older packages) loads its one network unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mripipe.core.errors import InputError
from mripipe.core.package_format import WEIGHTS_FILE
from mripipe.learn.checkpoint import load_state_dict
from mripipe.learn.networks import build_model
from mripipe.learn.trial_params import TrialParams

log = logging.getLogger(__name__)


class MeanProbability(nn.Module):
    """Networks combined by averaging their softmax probabilities over the channel axis (dim 1).

    ``forward`` returns ``log(mean_i softmax(member_i(x)))`` in float32: a softmax of it gives the
    mean probabilities back exactly (they sum to 1), an argmax the ensemble's decision.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, ...)`` -> ``(B, K, ...)`` log mean probabilities."""
        mean = torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members]).mean(0)
        return torch.log(mean.clamp_min(torch.finfo(torch.float32).tiny))


def member_files(meta: Mapping[str, Any]) -> list[str]:
    """The weight files of a package, in fold order (one for a single model)."""
    ensemble = meta.get("ensemble")
    if not ensemble:
        return [str((meta.get("weights") or {}).get("file") or WEIGHTS_FILE)]
    return [str(m["file"]) for m in ensemble["members"]]


def load_weights(path: Path, meta: Mapping[str, Any], device: str) -> nn.Module:
    """The package's network with the state dict of ``path`` (``weights_only=True``), eval mode.

    Raises:
        InputError: not a weights-only state dict, or weights that do not fit ``model.json``.
    """
    state = load_state_dict(path, device)
    model = build_model(TrialParams.from_dict(meta["params"]), int(meta["in_channels"]),
                         int(meta["n_classes"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit the network of model.json ({exc})") from None
    return model.to(device).eval()


def load_network(root: Path, meta: Mapping[str, Any], device: str) -> nn.Module:
    """The network of a package: its one model, or :class:`MeanProbability` of its members."""
    models = [load_weights(Path(root) / f, meta, device) for f in member_files(meta)]
    if len(models) == 1:
        return models[0]
    log.info("%s: fold ensemble of %d models (mean probabilities)", root, len(models))
    return MeanProbability(models).to(device).eval()
