"""A scan that fails preprocessing does not block the others.

``mripipe preprocess`` runs through :func:`cli_preprocess_recorded`: the scan's folder always
ends with a ``status.json`` (``ok``, ``reason``); a scan that fails (bad input the code
recognises, a registration that does not converge, or a crash, whose traceback stays in the
rule's log) keeps only that file and the job still succeeds. After the template registration
the normalised correlation with the template inside the brain mask is recorded in ``qc.json``;
below ``preprocess.min_registration_ncc`` the scan is failed with that reason.

``mripipe ready`` (a checkpoint) gathers the statuses into ``results/manifest.ready.tsv`` (the
scans everything downstream uses) and ``results/excluded.tsv`` (scan, stage, check, reason) for
both the scans validation excluded and those preprocessing lost.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.imageio import read_image, to_array
from mripipe.core.template import load_template, reference_grid
from mripipe.core.utils import atomic_path, read_json, write_json
from mripipe.data.manifest import read_manifest
from mripipe.preprocess import pipeline

log = logging.getLogger(__name__)

STATUS = "status.json"
EXCLUDED_COLUMNS = ["scan", "stage", "check", "reason"]


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


def cli_preprocess_recorded(ns: argparse.Namespace) -> None:
    """``mripipe preprocess`` with its outcome recorded in ``status.json`` (never blocking others)."""
    out_dir = Path(ns.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        pipeline.cli_preprocess(ns)
    except InputError as exc:
        return _fail(out_dir, ns.scan, "preprocess", str(exc))
    except Exception as exc:  # noqa: BLE001 -- recorded, the traceback kept in the log
        log.exception("preprocessing %s crashed", ns.scan)
        return _fail(out_dir, ns.scan, "preprocess", f"{type(exc).__name__}: {exc}".splitlines()[0])
    qc_path = out_dir / "qc.json"
    qc: dict[str, Any] = dict(read_json(qc_path))
    if param("preprocess", ns.params, "register"):
        ncc = registration_ncc(out_dir)
        least = float(param("preprocess", ns.params, "min_registration_ncc"))
        qc["registration_ncc"] = round(ncc, 4)
        write_json(qc_path, qc)
        if ncc < least:
            return _fail(out_dir, ns.scan, "registration",
                         f"{ns.channel[0].split('=', 1)[-1]}: correlation with the template in the brain mask {ncc:.3f} "
                         f"< preprocess.min_registration_ncc {least:g} (failed template registration?)")
    write_json(out_dir / STATUS, {"scan": ns.scan, "ok": True, "check": "", "reason": ""})
    return None


def ready(valid: str | Path, validation: str | Path, preprocessed: str | Path, out: str | Path,
          excluded: str | Path) -> pd.DataFrame:
    """The scans that made it through preprocessing, and every scan that did not (and why).

    Args:
        valid: ``results/manifest.valid.tsv`` (the scans validation kept).
        validation: ``results/validation.tsv`` (errors there exclude a scan).
        preprocessed: ``results/preprocessed`` (``{scan}/status.json``).
        out: ``results/manifest.ready.tsv``.
        excluded: ``results/excluded.tsv`` (scan, stage, check, reason).

    Raises:
        InputError: no scan made it.
    """
    table = read_manifest(valid)
    problems = pd.read_csv(validation, sep="\t", dtype=str, keep_default_na=False)
    rows = [{"scan": q.scan, "stage": "validate", "check": q.check, "reason": f"{q.file}: {q.detail}"}
            for q in problems.itertuples() if q.severity == "error"]
    ok = []
    for scan in table["scan"]:
        status = read_json(Path(preprocessed) / scan / STATUS)
        if status.get("ok"):
            ok.append(scan)
        else:
            rows.append({"scan": scan, "stage": "preprocess", "check": status.get("check", ""), "reason": status.get("reason", "")})
    gone = pd.DataFrame(rows, columns=EXCLUDED_COLUMNS)
    with atomic_path(excluded) as tmp:
        gone.to_csv(tmp, sep="\t", index=False)
    kept = table[table["scan"].isin(ok)]
    log.info("ready: %d scans; %d excluded (%d by validation, %d in preprocessing)", len(kept),
             gone["scan"].nunique(), (gone["stage"] == "validate").groupby(gone["scan"]).any().sum(),
             int((gone["stage"] == "preprocess").sum()))
    if kept.empty:
        raise InputError(f"{excluded}: no scan made it through preprocessing ({len(table)} tried)")
    with atomic_path(out) as tmp:
        kept.to_csv(tmp, sep="\t", index=False)
    return kept


def cli_ready(ns: argparse.Namespace) -> None:
    """Adapter for ``mripipe ready``."""
    ready(ns.manifest, ns.validation, ns.preprocessed, ns.out, ns.excluded)
