"""Dataset-level plausibility of each file's size, against absolute limits and the dataset's own
medians per channel: the voxel count and field of view from the headers alone (an implausible
file is refused before a byte of it is decompressed), and the voxel size once opened."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mripipe.data.header import Header, Issue
from mripipe.data.index import Problem
from mripipe.data.inspect import FileInfo


def _size(header: Header) -> str:
    return f"{'x'.join(map(str, header.dims))} {header.dtype.name}, {header.data_bytes / 2**30:.3g} GiB decompressed"


def size_issues(files: dict[str, list[str]], headers: dict[str, Header], p: dict[str, Any]) -> list[tuple[str, Issue]]:
    """(file, issue) of each file whose header promises an implausible size.

    Args:
        files: channel (or ``label``) -> the files of the dataset holding it.
        headers: file -> its header.
        p: the ``data:`` section: ``max_voxel_ratio`` (against the channel's median voxel count,
            over its files' headers) and ``max_fov_mm`` (per axis).

    Returns:
        ``voxels`` and ``fov`` issues, in the order found.
    """
    ratio, limit = float(p["max_voxel_ratio"]), float(p["max_fov_mm"])
    out: list[tuple[str, Issue]] = []
    for path, header in headers.items():
        fov = header.fov_mm
        if header.ok and np.any(fov > limit):
            axes = " x ".join(f"{f:.0f}" for f in fov)
            out.append((path, Issue("fov", f"field of view {axes} mm is beyond data.max_fov_mm {limit:g} "
                                           f"({_size(header)}); not decompressed")))
    for channel, paths in files.items():
        counts = {f: int(np.prod(headers[f].shape)) for f in dict.fromkeys(paths) if headers[f].ok}
        if not counts:
            continue
        median = float(np.median(list(counts.values())))
        for f, n in counts.items():
            if n > ratio * median:
                out.append((f, Issue("voxels", f"{n:,} voxels ({_size(headers[f])}): {n / median:.3g}x the {channel} "
                                               f"median of {median:,.0f} (data.max_voxel_ratio {ratio:g}); not decompressed")))
    return out


def spacing_problems(table: pd.DataFrame, channels: list[str], infos: dict[str, FileInfo],
                     p: dict[str, Any]) -> list[Problem]:
    """Voxel sizes outside ``spacing_range_mm`` or beyond ``spacing_ratio`` x the channel's median."""
    lo, hi = p["spacing_range_mm"]
    ratio = float(p["spacing_ratio"])
    out = []
    for ch in channels:
        files = {row[ch]: row["scan"] for _, row in table.iterrows() if row[ch] and infos[row[ch]].ok}
        if not files:
            continue
        largest = {f: float(infos[f].spacing.max()) for f in files}
        smallest = {f: float(infos[f].spacing.min()) for f in files}
        med_hi, med_lo = float(np.median(list(largest.values()))), float(np.median(list(smallest.values())))
        for f, scan in files.items():
            sp = ", ".join(f"{s:.3g}" for s in infos[f].spacing)
            if smallest[f] < lo or largest[f] > hi:
                out.append(Problem(scan, f, "spacing", f"voxel size ({sp}) mm outside [{lo:g}, {hi:g}] mm"))
            elif not (med_hi / ratio <= largest[f] <= med_hi * ratio and med_lo / ratio <= smallest[f] <= med_lo * ratio):
                out.append(Problem(scan, f, "spacing", f"voxel size ({sp}) mm is more than {ratio:g}x off the {ch} median ({med_lo:.3g}-{med_hi:.3g} mm)"))
    return out
