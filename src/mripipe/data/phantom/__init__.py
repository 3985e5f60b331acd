"""The built-in phantom cohort: realistic MRI subjects with lesions and full ground truth.

``generate_cohort`` writes a BIDS dataset (see docs/contract.md) built from the ICBM152 2009a
template: per subject a smooth random warp and global scaling, white-matter lesions that change
between sessions, and per scan a T1w and an anisotropic FLAIR with their own rigid poses, axis
orders, bias fields, intensity scales and Rician noise. ``derivatives/truth/`` holds what a
stage needs to be checked against: clean images, bias fields, poses, noise sigma, lesion list.

Modules:

- ``acquisition``: acquisition of one contrast of one scan: grid, sampling, bias field, Rician noise.
- ``anatomy``: subject anatomy: the template as contrast maps, the head shell, random warps.
- ``bids_writer``: writing the phantom as BIDS: raw images, lesion masks, truth, participants.tsv.
- ``geometry``: image grids, orientation codes and rigid/affine transforms as 4x4 matrices.
- ``lesions``: white-matter lesions: placement, change between sessions, rendering.
- ``msd_writer``: the phantom in Medical Segmentation Decathlon layout, two foreground classes.
- ``params``: the ``phantom:`` config section, resolved against the schema's defaults.
- ``subject``: one phantom subject: anatomy, lesions per session, every contrast of every scan.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from mripipe.core.utils import interactive, rng
from mripipe.data.phantom.bids_writer import (
    LESION_DERIVATIVE,
    TRUTH_DERIVATIVE,
    write_description,
    write_participants,
)
from mripipe.data.phantom.params import CLASSES, PhantomParams
from mripipe.data.phantom.subject import SubjectPlan, generate_subject, template_for

__all__ = ["generate_cohort", "generate_dataset", "plan_cohort", "PhantomParams", "SubjectPlan", "OutputExistsError"]

log = logging.getLogger(__name__)


class OutputExistsError(FileExistsError, ValueError):
    """The output folder is not empty (a ValueError too, so the CLI reports it in one line)."""


def plan_cohort(seed: int, params: PhantomParams) -> list[SubjectPlan]:
    """Subjects, classes (balanced: counts differ by at most one), sessions, age and sex.

    Args:
        seed: master seed (the plan uses ``derive_seed(seed, "phantom", "cohort")``).
        params: resolved phantom parameters.

    Returns:
        One plan per subject, ordered ``sub-001``, ``sub-002``, ...
    """
    r = rng(seed, "phantom", "cohort")
    n = params.n_subjects
    classes = [CLASSES[i % len(CLASSES)] for i in range(n)]
    r.shuffle(classes)
    n_two = int(round(n * params.two_session_fraction))
    two = set(r.choice(n, size=n_two, replace=False).tolist())
    width = max(3, len(str(n)))
    return [
        SubjectPlan(
            subject=f"sub-{i + 1:0{width}d}",
            klass=classes[i],
            n_sessions=2 if i in two else 1,
            age=int(r.integers(20, 81)),
            sex=str(r.choice(["F", "M"])),
        )
        for i in range(n)
    ]


def generate_cohort(out: str | Path, seed: int, params: dict[str, Any], workers: int = 1) -> pd.DataFrame:
    """Generate the phantom BIDS dataset at ``out``.

    Everything is built in a temporary sibling folder and moved into place at the end, so
    ``out`` is either absent/empty or complete. The files depend only on ``seed`` and
    ``params`` (not on ``workers``): the same seed gives byte-identical files.

    Args:
        out: BIDS root to create; it may be missing or an empty folder, never non-empty.
        seed: master seed.
        params: the ``phantom:`` config section (missing keys take the schema defaults).
        workers: processes generating subjects in parallel (1 = in this process).

    Returns:
        The participants table (participant_id, age, sex, class, n_sessions).

    Raises:
        OutputExistsError: ``out`` exists and is not an empty folder (nothing is overwritten);
            a FileExistsError and a ValueError.
        ValueError: invalid parameters.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out}: already exists and is not empty; refusing to overwrite it (remove it to regenerate the phantom)")
    resolved = PhantomParams.from_dict(params)
    plans = plan_cohort(seed, resolved)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    start = time.perf_counter()
    try:
        write_description(tmp, "mripipe phantom", derivative=False)
        write_description(tmp / "derivatives" / LESION_DERIVATIVE, "mripipe phantom lesion masks", derivative=True)
        write_description(tmp / "derivatives" / TRUTH_DERIVATIVE, "mripipe phantom ground truth", derivative=True)
        cache = tmp / ".template-cache"
        template_for(resolved).save(cache)
        scans = _run_subjects(tmp, plans, seed, resolved, workers, str(cache))
        shutil.rmtree(cache)
        rows = [{"participant_id": p.subject, "age": p.age, "sex": p.sex, "class": p.klass, "n_sessions": p.n_sessions} for p in plans]
        table = write_participants(tmp, rows)
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log_summary(scans, time.perf_counter() - start, out)
    return table


def _run_subjects(
    root: Path, plans: list[SubjectPlan], seed: int, params: PhantomParams, workers: int, template_dir: str
) -> list[dict[str, Any]]:
    # longest jobs (two sessions) first so the pool ends evenly; results are order-independent
    order = sorted(plans, key=lambda p: (-p.n_sessions, p.subject))
    results: dict[str, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(plans), desc="phantom subjects", unit="subject", disable=not interactive())
    if workers <= 1 or len(plans) == 1:
        for plan in order:
            results[plan.subject] = generate_subject(root, plan, seed, params, template_dir)
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(plans)), mp_context=ctx) as pool:
            futures = {pool.submit(generate_subject, str(root), plan, seed, params, template_dir): plan.subject for plan in order}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update()
                log.debug("%s done", futures[fut])
    bar.close()
    return [scan for plan in plans for scan in results[plan.subject]]


def _log_summary(scans: list[dict[str, Any]], seconds: float, out: Path) -> None:
    n_les = np.array([s["n_lesions"] for s in scans])
    vols = np.array([v for s in scans for v in s["lesion_volumes_mm3"]])
    log.info("phantom: %d scans written to %s in %.1f s", len(scans), out, seconds)
    for klass in CLASSES:
        sel = [s["n_lesions"] for s in scans if s["class"] == klass]
        if sel:
            log.info("  class %-4s: %d scans, lesions per scan %d-%d (mean %.1f)", klass, len(sel), min(sel), max(sel), float(np.mean(sel)))
    if vols.size:
        log.info(
            "  %d lesions, volume median %.0f mm3 (range %.0f-%.0f); %d scans without lesion",
            vols.size, float(np.median(vols)), float(vols.min()), float(vols.max()), int((n_les == 0).sum()),
        )


def generate_dataset(out: str | Path, seed: int, params: dict[str, Any], workers: int = 1,
                     layout: str = "bids") -> None:
    """``mripipe phantom``: the phantom cohort in BIDS layout (:func:`generate_cohort`) or, with
    ``layout="msd"``, as an MSD dataset (:func:`mripipe.data.phantom.msd_writer.generate_msd`)."""
    if layout == "msd":
        from mripipe.data.phantom.msd_writer import generate_msd

        generate_msd(out, seed, params, workers=workers)
        return
    generate_cohort(out, seed, params, workers=workers)
