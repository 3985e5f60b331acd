"""``mripipe hashes``: a content hash of every stage's outputs (``results/stages.json``), and where
two runs' hashes part.

A hash covers what a stage computed, not how the file was written: NIfTI images by dtype, shape,
affine and voxels (gzip headers carry times), ``.npy`` arrays by their array, weights files by their
tensors only (a checkpoint also holds the MLflow run id, random per run), text files by their bytes.
The stages, in the order the DAG runs them:

- ``preprocess``: one hash per scan (image, brain mask, label, transform);
- ``patches``: one per file of the patch cache;
- ``<experiment> rung <r>``: each trial's (rung 0) or slot's best weights at that rung;
- ``<experiment> folds``: each fold model of a k-fold ensemble;
- ``<experiment> package``: the packaged weights;
- ``<experiment> predictions``: each test scan's probability and label maps.

The job also records the kernel dispatch in effect (:func:`mripipe.core.numerics.dispatch_in_effect`):
it runs under the same pinned environment as training.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mripipe.core.numerics import dispatch_in_effect
from mripipe.core.utils import write_json

log = logging.getLogger(__name__)

SCAN_FILES = ("image.nii.gz", "brainmask.nii.gz", "label.nii.gz", "transform.tfm")
#: Files that are not a stage's computation: the package's ``model.json`` names its MLflow run and
#: experiment (random per run); what it packages is hashed as ``weights.pt``. Neither hashed nor
#: compared (a file published before this rule may still list it).
NOT_HASHED = ("model.json",)
_RUNG = re.compile(r"(?:trials/(?P<trial>[^/]+)|rungs/(?P<rung>\d+)/(?P<slot>[^/]+)|folds/(?P<fold>[^/]+))/")


def _update_array(h: Any, array: np.ndarray) -> None:
    arr = np.ascontiguousarray(array)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())


def _update_tensors(h: Any, obj: Any) -> None:
    """Every tensor of ``obj`` (dicts by sorted key, lists in order); other values are ignored."""
    import torch

    if isinstance(obj, torch.Tensor):
        _update_array(h, obj.detach().cpu().contiguous().view(torch.uint8).numpy()
                      if obj.dtype == torch.bfloat16 else obj.detach().cpu().numpy())
    elif isinstance(obj, Mapping):
        for key in sorted(obj, key=str):
            h.update(str(key).encode())
            _update_tensors(h, obj[key])
    elif isinstance(obj, list | tuple):
        for item in obj:
            _update_tensors(h, item)


def file_hash(path: Path) -> str:
    """The content hash of one output file (see the module for what each kind covers)."""
    h = hashlib.sha256()
    name = path.name
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img: Any = nib.load(str(path))
        _update_array(h, np.asarray(img.affine, dtype=np.float64))
        _update_array(h, np.asanyarray(img.dataobj))
    elif name.endswith(".npy"):
        _update_array(h, np.load(path, mmap_mode="r"))
    elif name.endswith(".pt"):
        import torch

        _update_tensors(h, torch.load(path, map_location="cpu", weights_only=True))
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def _combined(files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        h.update(file_hash(f).encode())
    return h.hexdigest()


def scan_hashes(scans: Iterable[Path]) -> dict[str, str]:
    """``{scan: hash}`` of preprocessed scan folders (the files of :data:`SCAN_FILES` present)."""
    return {d.name: _combined(d / f for f in SCAN_FILES if (d / f).is_file()) for d in sorted(scans)}


def folder_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: hash}`` of every file under ``folder`` (Snakemake's markers skipped)."""
    files = [p for p in folder.rglob("*")
             if p.is_file() and not p.name.startswith(".") and p.name not in NOT_HASHED]
    return {str(p.relative_to(folder)): file_hash(p) for p in sorted(files)}


def weights_stage(checkpoint: Path) -> tuple[str, str]:
    """The stage (``<experiment> rung <r>`` or ``<experiment> folds``) and item of a checkpoint."""
    text = checkpoint.as_posix()
    match = _RUNG.search(text)
    if match is None:
        raise ValueError(f"{checkpoint}: not a trial, rung slot or fold checkpoint")
    experiment = Path(text[: match.start()]).name
    if match["trial"]:
        return f"{experiment} rung 0", match["trial"]
    if match["rung"]:
        return f"{experiment} rung {match['rung']}", match["slot"]
    return f"{experiment} folds", match["fold"]


def stage_hashes(scans: list[Path], patches: Path, checkpoints: list[Path], models: list[Path],
                 predictions: list[Path]) -> list[dict[str, Any]]:
    """Every stage's ``{"stage": name, "items": {item: hash}}``, in the order the DAG runs them."""
    stages: list[dict[str, Any]] = [{"stage": "preprocess", "items": scan_hashes(scans)},
                                     {"stage": "patches", "items": folder_hashes(patches)}]
    by_stage: dict[str, dict[str, str]] = {}
    for ckpt in sorted(checkpoints):
        stage, item = weights_stage(ckpt)
        by_stage.setdefault(stage, {})[item] = file_hash(ckpt)
    experiments = sorted({m.parent.name for m in models} | {s.split(" ")[0] for s in by_stage})
    for exp in experiments:
        for stage in sorted((s for s in by_stage if s.split(" ")[0] == exp), key=_stage_order):
            stages.append({"stage": stage, "items": by_stage[stage]})
        for folder, what in [(m, "package") for m in models if m.parent.name == exp] + \
                [(p, "predictions") for p in predictions if p.parent.name == exp]:
            stages.append({"stage": f"{exp} {what}", "items": folder_hashes(folder)})
    return stages


def _stage_order(stage: str) -> tuple[int, int]:
    parts = stage.split(" ")
    return (1, 0) if parts[1] == "folds" else (0, int(parts[2]))


def write_stage_hashes(scans: list[Path], patches: Path, checkpoints: list[Path], models: list[Path],
                       predictions: list[Path], cpu_isa: str, out: Path) -> None:
    """``mripipe hashes``: write ``results/stages.json`` (stages, the cap, the dispatch in effect)."""
    stages = stage_hashes(scans, patches, checkpoints, models, predictions)
    write_json(out, {"cpu_isa": cpu_isa, "dispatch": dispatch_in_effect(), "stages": stages})
    log.info("%d stages hashed into %s", len(stages), out)


def _stage_line(stage: str, ref: Mapping[str, str], got: Mapping[str, str]) -> tuple[str, bool]:
    ref = {k: v for k, v in ref.items() if Path(k).name not in NOT_HASHED}
    got = {k: v for k, v in got.items() if Path(k).name not in NOT_HASHED}
    same = [k for k in ref if got.get(k) == ref[k]]
    differ = [k for k in ref if k in got and got[k] != ref[k]]
    missing = [k for k in ref if k not in got]
    extra = [k for k in got if k not in ref]
    if not differ and not missing and not extra:
        return f"{stage}: identical ({len(same)}/{len(ref)})", True
    parts = []
    if differ:
        parts.append(f"{', '.join(differ[:3])}{' ...' if len(differ) > 3 else ''} differ "
                     f"({len(differ)} of {len(ref)})")
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}")
    if extra:
        parts.append(f"not in the reference {', '.join(extra[:3])}")
    return f"{stage}: {'; '.join(parts)}", False


def where_runs_part(reference: list[Mapping[str, Any]], reproduced: list[Mapping[str, Any]]) -> tuple[list[str], str | None]:
    """Compare two runs' stage lists: one line per stage of the reference, and the first stage
    whose outputs differ (None when every stage is identical)."""
    got = {s["stage"]: dict(s["items"]) for s in reproduced}
    lines, first = [], None
    for stage in reference:
        name = str(stage["stage"])
        line, same = _stage_line(name, dict(stage["items"]), got.get(name, {}))
        lines.append(line)
        if not same and first is None:
            first = name
    return lines, first
