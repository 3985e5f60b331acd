"""``mripipe preprocess``: one scan's preprocessing, whose failure does not block the others.

It runs through :func:`preprocess_recorded`: the scan's folder always ends with a ``status.json`` (``ok``, ``reason``); a scan that fails (bad input the code
recognises, a registration that does not converge, or a crash, whose traceback stays in the
rule's log) keeps only that file and the job still succeeds. After the template registration
the normalised correlation with the template inside the brain mask is recorded in ``qc.json``
(``registration_ncc``); below ``preprocess.min_registration_ncc``, an absolute floor, the scan is
failed with that reason. :mod:`mripipe.preprocess.ready` reads the statuses back and also judges
each scan's NCC against the dataset's (a robust z-score), which no single job can see. With ``--mem-mb``
(what the rule declared from the headers), a scan estimated above it fails at once and one that
runs out of memory within it fails with the file and its size (check ``memory``,
:mod:`mripipe.preprocess.memory`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mripipe.core.config import param, with_defaults
from mripipe.core.errors import InputError
from mripipe.core.grid import LabelGrid
from mripipe.core.imageio import read_image, to_array
from mripipe.core.template import load_template, reference_grid
from mripipe.core.utils import read_json, write_json
from mripipe.preprocess import memory, pipeline
from mripipe.preprocess.ready import STATUS

log = logging.getLogger(__name__)

def registration_ncc(out_dir: Path) -> float:
    """Normalised correlation of the reference channel with the template T1, inside the brain mask.

    Read from the outputs (``image.nii.gz`` channel 0 and ``brainmask.nii.gz`` on the template grid).
    """
    image = read_image(out_dir / "image.nii.gz")
    vol = to_array(image)
    ref = vol[0] if vol.ndim == 4 else vol
    mask = to_array(read_image(out_dir / "brainmask.nii.gz")) > 0
    grid = reference_grid(tuple(image.GetSpacing()[:3]))
    t1 = to_array(sitk.Resample(load_template().t1, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    a, b = ref[mask].astype(float), t1[mask].astype(float)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _fail(out_dir: Path, scan: str, check: str, reason: str) -> None:
    """Leave only ``status.json`` (failed, with the reason) in the scan's folder."""
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    write_json(out_dir / STATUS, {"scan": scan, "ok": False, "check": check, "reason": reason})
    log.error("%s: preprocessing failed (%s): %s; the scan is excluded", scan, check, reason)


def channel_paths(pairs: Sequence[str]) -> dict[str, Path]:
    """``["T1w=a.nii.gz", "FLAIR=b.nii.gz"]`` -> ordered channel name -> path."""
    out: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--channel {pair!r}: expected NAME=PATH")
        if name in out:
            raise InputError(f"--channel {pair!r}: channel {name!r} given twice")
        out[name] = Path(path)
    return out


def target_spacing(spacing: Sequence[float] | None, fingerprint: Path | None) -> list[float]:
    """The target spacing in mm: the fingerprint's ``target_spacing`` (``spacing: auto``) when a
    fingerprint file is given, else ``spacing``."""
    if fingerprint is not None:
        fp = read_json(fingerprint)
        if "target_spacing" not in fp:
            raise InputError(f"{fingerprint}: no target_spacing")
        return [float(s) for s in fp["target_spacing"]]
    if spacing is None:
        raise InputError("preprocess needs a target spacing or a fingerprint")
    return [float(s) for s in spacing]


class OverBudgetError(MemoryError):
    """A scan that needs (or took) more memory than its job declared; the message says which."""


def _over_budget(est: memory.Estimate, mem_mb: int, exc: BaseException | None = None) -> OverBudgetError:
    """The failure of a scan estimated above ``mem_mb`` (``exc`` None), or out of memory within it."""
    if exc is None:
        return OverBudgetError(f"{est.describe()}: needs about {est.mem_mb:,} MB to preprocess, more than the job's "
                          f"mem_mb {mem_mb:,} (at most preprocess.max_mem_mb); not started")
    what = str(exc).removeprefix(f"{est.largest.path}: ") if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return OverBudgetError(f"{est.describe()}: out of memory within the job's mem_mb {mem_mb:,} (estimated {est.mem_mb:,} MB): "
                      f"{what}".splitlines()[0])


def _preprocess(channels: Sequence[str], out_dir: Path, params: dict[str, Any], spacing: Sequence[float] | None,
                fingerprint: Path | None, label: Path | None, truth: Path | None, threads: int,
                seed: int, label_grid: LabelGrid | None, mem_mb: int | None = None) -> None:
    """:func:`~mripipe.preprocess.pipeline.preprocess_scan` of the channels as the rule hands them;
    with ``mem_mb``, refused at once when estimated above it, else run within it
    (:mod:`mripipe.preprocess.memory`)."""
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(max(1, int(threads)))
    target = target_spacing(spacing, fingerprint)
    paths = channel_paths(channels)
    if mem_mb is None:
        pipeline.preprocess_scan(paths, label, out_dir, params, target, truth, seed=seed,
                                 label_grid=label_grid)
        return
    est = memory.estimate(list(paths.values()), label, with_defaults("preprocess", params))
    if est.mem_mb > mem_mb:
        raise _over_budget(est, mem_mb)
    try:
        with memory.limited(mem_mb):
            pipeline.preprocess_scan(paths, label, out_dir, params, target, truth, seed=seed,
                                     label_grid=label_grid)
    except (MemoryError, InputError) as exc:
        if not memory.out_of_memory(exc):
            raise
        raise _over_budget(est, mem_mb, exc) from None


def preprocess_recorded(
    scan: str,
    channels: Sequence[str],
    out_dir: Path,
    params: dict[str, Any],
    spacing: Sequence[float] | None = None,
    fingerprint: Path | None = None,
    label: Path | None = None,
    truth: Path | None = None,
    threads: int = 1,
    seed: int = 0,
    label_grid: Mapping[str, Any] | None = None,
    mem_mb: int | None = None,
) -> None:
    """``mripipe preprocess``: one scan, with its outcome recorded in ``status.json`` (never
    blocking others).

    Args:
        scan: the scan's id.
        channels: the raw channels in order as ``NAME=PATH`` (parsed here, so a malformed one is
            recorded like any other bad input); the first is the reference.
        out_dir: the scan's folder (``results/preprocessed/{scan}``).
        params: the ``preprocess:`` config section.
        spacing: target spacing in mm; or
        fingerprint: ``results/fingerprint.json`` (``spacing: auto``), which wins when given.
        label: label map on the reference grid, if any.
        truth: the phantom's ``truth.json`` (QC against truth), if any.
        threads: SimpleITK threads (set globally for the process).
        seed: master seed (registration sampling).
        label_grid: ``data.grid_tolerance_mm`` and ``data.resample_labels``: how the label must
            lie on the reference grid (:class:`~mripipe.core.grid.LabelGrid`); default the schema's.
        mem_mb: the memory the job declared (MiB): a scan estimated above it is failed at once,
            and one that runs out within it is failed with the file and its size.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        _preprocess(channels, out_dir, params, spacing, fingerprint, label, truth, threads, seed,
                    LabelGrid.from_params(label_grid), mem_mb)
    except OverBudgetError as exc:
        return _fail(out_dir, scan, "memory", str(exc))
    except InputError as exc:
        return _fail(out_dir, scan, "preprocess", str(exc))
    except Exception as exc:  # noqa: BLE001 -- recorded, the traceback kept in the log
        log.exception("preprocessing %s crashed", scan)
        return _fail(out_dir, scan, "preprocess", f"{type(exc).__name__}: {exc}".splitlines()[0])
    qc_path = out_dir / "qc.json"
    qc: dict[str, Any] = dict(read_json(qc_path))
    if param("preprocess", params, "register"):
        ncc = registration_ncc(out_dir)
        least = float(param("preprocess", params, "min_registration_ncc"))
        qc["registration_ncc"] = round(ncc, 4)
        write_json(qc_path, qc)
        if ncc < least:
            return _fail(out_dir, scan, "registration",
                         f"{channels[0].split('=', 1)[-1]}: correlation with the template in the brain mask {ncc:.3f} "
                         f"< preprocess.min_registration_ncc {least:g} (failed template registration?)")
    write_json(out_dir / STATUS, {"scan": scan, "ok": True, "check": "", "reason": ""})
    return None
