"""``mripipe validate``: every file of the manifest checked up front, every problem listed at once.

Memory stays bounded whatever a file's size: every header is read first
(:mod:`mripipe.data.header`: links, truncation, dimensions, pixel type, qform/sform, direction),
and a file whose header promises an implausible size (:mod:`mripipe.data.plausible`: beyond
``data.max_voxel_ratio`` x its channel's median voxel count, or ``data.max_fov_mm``) is refused
before a byte is decompressed. The others are streamed in slabs
(:func:`mripipe.data.inspect.inspect_file`: finite, constant, integer overflow, label values, a
contrast signature). Then the dataset-level checks run: plausible spacing (absolute range and
against the dataset median of the channel), contrast against the channel's median
(:mod:`mripipe.data.contrast`), the label on its image's physical grid, label values integers
among the declared labels, every channel (and label / class where an experiment needs them)
present, no ambiguous duplicates (from the adapter). Problems go to ``results/validation.tsv``
(scan, file, check, detail, severity) and to the log, one line each naming the file. Valid scans
go to ``results/manifest.valid.tsv`` (the scan list of everything downstream); with
``data.on_invalid: fail`` any invalid scan stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from mripipe.core.config import with_defaults
from mripipe.core.errors import InputError
from mripipe.core.grid import Grid, match_grid
from mripipe.core.utils import atomic_path, read_json
from mripipe.data.contrast import contrast_problems
from mripipe.data.header import read_header
from mripipe.data.index import Problem
from mripipe.data.inspect import FileInfo, inspect_file
from mripipe.data.manifest import channel_columns, read_manifest
from mripipe.data.plausible import size_issues, spacing_problems

log = logging.getLogger(__name__)

COLUMNS = ["scan", "file", "check", "detail", "severity"]
CHECKS = ("missing", "link", "duplicate", "readable", "truncated", "dimension", "pixel_type", "xform",
          "direction", "fov", "voxels", "finite", "constant", "overflow", "spacing", "contrast", "grid",
          "label_values", "class", "preprocess")


def _files(table: pd.DataFrame, channels: list[str]) -> dict[str, list[str]]:
    """Channel (and ``label``) -> the files holding it, in manifest order (a 4-D file named by n
    channels of a row is listed under each)."""
    files: dict[str, list[str]] = {c: [f for f in table[c] if f] for c in channels}
    if "label" in table.columns:
        files["label"] = [f for f in table["label"] if f]
    return files


def _open_all(table: pd.DataFrame, channels: list[str], p: dict[str, Any]) -> dict[str, FileInfo]:
    """Every distinct file of the manifest: all headers first, the sizes they promise checked
    against the dataset, then the voxels of the files still fine, streamed in slabs."""
    wanted: dict[str, tuple[int, bool]] = {}
    for _, row in table.iterrows():
        paths = [row[c] for c in channels if row[c]]
        for path in paths:
            wanted[path] = (paths.count(path), False)
        if row.get("label", ""):
            wanted[row["label"]] = (1, True)
    headers = {f: read_header(f, n, p["xform"], float(p["xform_tolerance_mm"])) for f, (n, _) in wanted.items()}
    for f, issue in size_issues(_files(table, channels), headers, p):
        headers[f].issues.append(issue)
    signed = {c.lower() for c in p["signed_channels"]}
    magnitude = {f for c in channels if c.lower() not in signed for f in table[c] if f}
    return {f: inspect_file(headers[f], label, f in magnitude, float(p["overflow_fraction"]))
            for f, (_, label) in tqdm(wanted.items(), desc="validate", unit="file", mininterval=5)}


def _signatures(table: pd.DataFrame, channels: list[str], infos: dict[str, FileInfo]) -> list[tuple[str, str, str, np.ndarray]]:
    """(scan, file, channel, contrast signature) of every channel image that has one (the k-th
    channel naming a 4-D file takes its volume k)."""
    found = []
    for _, row in table.iterrows():
        named: dict[str, int] = {}
        for c in channels:
            f = row[c]
            if not f:
                continue
            k = named[f] = named.get(f, -1) + 1
            sigs = infos[f].signatures
            if k < len(sigs) and (sig := sigs[k]) is not None:
                found.append((row["scan"], f, c, sig))
    return found


def _label_problems(scan: str, label: FileInfo, image: FileInfo | None, labels: dict[int, str] | None,
                    p: dict[str, Any]) -> list[Problem]:
    """The label on its image's grid; its values integers among the declared labels."""
    out = []
    f = str(label.path)
    if image is not None and image.ok:
        # the rule every later reader applies (core.imageio.read_label): the same voxels in space,
        # whatever the order and direction of the axes (dcm2niix may permute or flip them)
        match = match_grid(Grid(label.affine, label.shape), Grid(image.affine, image.shape),
                           float(p["grid_tolerance_mm"]))
        if match.order is None:
            what = f"not on the grid of {image.path.name} ({match.detail})"
            if p["resample_labels"]:
                out.append(Problem(scan, f, "grid", f"{what}; resampled (data.resample_labels)", "warning"))
            else:
                out.append(Problem(scan, f, "grid", f"{what}; never resampled silently (data.resample_labels)"))
    values = label.values if label.values is not None else np.array([])
    if values.size and (np.any(np.mod(values, 1) != 0) or values.min() < 0):
        bad = [float(v) for v in values if v < 0 or v % 1][:5]
        out.append(Problem(scan, f, "label_values", f"label values must be non-negative integers (found {bad})"))
    elif labels is not None and values.size:
        extra = sorted(int(v) for v in values if int(v) not in labels)
        if extra:
            out.append(Problem(scan, f, "label_values", f"values {extra[:10]} are not among the declared labels {sorted(labels)}"))
    return out


def _row_problems(row: pd.Series, channels: list[str], infos: dict[str, FileInfo], meta: dict[str, Any],
                  needs: Sequence[str], p: dict[str, Any], manifest: Path) -> list[Problem]:
    scan = row["scan"]
    out = []
    for f in dict.fromkeys(row[c] for c in channels if row[c]):
        out += [Problem(scan, f, *issue) for issue in infos[f].issues]
    if row.get("label", ""):
        label = infos[row["label"]]
        out += [Problem(scan, row["label"], *issue) for issue in label.issues]
        ref = infos.get(row[channels[0]]) if row[channels[0]] else None
        if label.ok:
            declared = meta.get("labels")
            out += _label_problems(scan, label, ref, None if declared is None else {int(k): v for k, v in declared.items()}, p)
    elif "label" in needs:
        out.append(Problem(scan, str(manifest), "missing", "no label map (a segmentation experiment needs one)"))
    if "class" in needs and not row.get("class", ""):
        where = meta.get("class_file") or str(manifest)
        out.append(Problem(scan, where, "class", f"no class for {row['subject']} (data.class_column; a classification experiment needs one)"))
    return out


def validate(manifest: str | Path, params: dict[str, Any] | None, out: str | Path, valid: str | Path,
             needs: Sequence[str] = ()) -> pd.DataFrame:
    """Check every file of ``manifest``; write the problems and the manifest of valid scans.

    Args:
        manifest: ``results/manifest.tsv`` (``manifest.json`` beside it: declared labels and the
            adapter's missing/ambiguous files).
        params: the ``data:`` config section (on_invalid, resample_labels, spacing, tolerance).
        out: ``results/validation.tsv``.
        valid: ``results/manifest.valid.tsv``: the rows of the scans without an error.
        needs: ``label`` and/or ``class`` when an experiment needs them of every scan.

    Returns:
        The problems (columns :data:`COLUMNS`), errors and warnings.

    Raises:
        InputError: ``on_invalid: fail`` and some scan is invalid, or no scan is valid.
    """
    p = with_defaults("data", params)
    manifest = Path(manifest)
    table = read_manifest(manifest)
    channels = channel_columns(table)
    meta_path = manifest.with_suffix(".json")
    meta = dict(read_json(meta_path)) if meta_path.is_file() else {}
    if len(p["labels"]) >= 2:  # multi-class data.labels: the values a label may hold
        meta["labels"] = {"0": "background", **{str(v): k for k, v in p["labels"].items()}}
    problems = [Problem(**q) for q in meta.get("problems", [])]
    infos = _open_all(table, channels, p)
    for _, row in table.iterrows():
        problems += _row_problems(row, channels, infos, meta, needs, p, manifest)
    problems += spacing_problems(table, channels, infos, p)
    problems += contrast_problems(_signatures(table, channels, infos))
    return _write(table, problems, p, Path(out), Path(valid), len(infos))


def _write(table: pd.DataFrame, problems: list[Problem], p: dict[str, Any], out: Path, valid: Path,
           n_files: int) -> pd.DataFrame:
    found = pd.DataFrame([asdict(q) for q in problems], columns=COLUMNS).sort_values(["scan", "file", "check"], kind="stable")
    with atomic_path(out) as tmp:
        found.to_csv(tmp, sep="\t", index=False)
    for q in found.itertuples():
        (log.error if q.severity == "error" else log.warning)("%s: %s: %s (scan %s)", q.file, q.check, q.detail, q.scan)
    invalid = sorted(set(found.loc[found["severity"] == "error", "scan"]))
    kept = table[~table["scan"].isin(invalid)]
    log.info("validate: %d files of %d scans; %d invalid scan(s)%s", n_files, len(table), len(invalid),
             f": {', '.join(invalid)}" if invalid else "")
    if invalid and p["on_invalid"] == "fail":
        raise InputError(f"{out}: {len(invalid)} invalid scan(s) ({', '.join(invalid)}); data.on_invalid is fail")
    if kept.empty:
        raise InputError(f"{out}: no valid scan left ({len(invalid)} invalid)")
    with atomic_path(valid) as tmp:
        kept.to_csv(tmp, sep="\t", index=False)
    return found

