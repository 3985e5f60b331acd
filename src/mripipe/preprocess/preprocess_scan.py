"""``mripipe preprocess``: one scan's preprocessing, whose failure does not block the others.

It runs through :func:`cli_preprocess_recorded`: the scan's folder always
ends with a ``status.json`` (``ok``, ``reason``); a scan that fails (bad input the code
recognises, a registration that does not converge, or a crash, whose traceback stays in the
rule's log) keeps only that file and the job still succeeds. After the template registration
the normalised correlation with the template inside the brain mask is recorded in ``qc.json``
(``registration_ncc``); below ``preprocess.min_registration_ncc``, an absolute floor, the scan is
failed with that reason. :mod:`mripipe.preprocess.ready` reads the statuses back and also judges
each scan's NCC against the dataset's (a robust z-score), which no single job can see.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from mripipe.core.config import param
from mripipe.core.errors import InputError
from mripipe.core.imageio import read_image, to_array
from mripipe.core.template import load_template, reference_grid
from mripipe.core.utils import read_json, write_json
from mripipe.preprocess import pipeline
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
