"""Each channel's tissue contrast, told from its voxels against the dataset's own: an image whose
contrast looks like another channel's (a FLAIR filed as T1w) is flagged with a warning.

A volume's signature is its depth profile: the median intensity in each quarter of the head by
depth (distance in mm to the head's surface, on a coarse copy), divided by the head's median. It
follows tissue order without a template (T1w: deep white matter brighter than cortex, dark CSF
and skull in between; FLAIR: the cortex the brighter). Measured on the 40-subject phantom: T1w
profiles about (0.83, 0.36, 1.11, 1.19), FLAIR about (0.64, 0.46, 1.20, 1.17), every file within
about 0.05 of its channel's median and 0.2 from the other's.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from mripipe.data.index import Problem

#: files of a channel needed before its median signature is trusted
MIN_FILES = 3
#: flagged when another channel's median is this many times nearer than its own channel's
NEARER = 2.0
#: ... and the two channels' medians are at least this far apart (channels of one contrast never are)
SEPARATION = 0.1


def signature(coarse: np.ndarray, spacing: np.ndarray) -> np.ndarray | None:
    """The depth profile of a coarse volume with voxel size ``spacing`` (mm); None without a head
    (the largest bright connected region, holes filled) large enough to measure."""
    top = float(np.percentile(coarse, 99.5))
    if top <= 0:
        return None
    # closed first: a thin dark skull between scalp and brain must not split the head
    labels, n = ndi.label(ndi.binary_fill_holes(ndi.binary_closing(coarse > 0.1 * top)))
    if n == 0:
        return None
    head = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    if np.count_nonzero(head) < 64:
        return None
    depth = ndi.distance_transform_edt(head, sampling=spacing)[head]
    values = coarse[head]
    centre = float(np.median(values))
    quarter = np.digitize(depth, np.quantile(depth, [0.25, 0.5, 0.75]))
    if centre <= 0 or len(np.unique(quarter)) < 4:
        return None
    return np.array([np.median(values[quarter == q]) for q in range(4)]) / centre


def contrast_problems(found: list[tuple[str, str, str, np.ndarray]]) -> list[Problem]:
    """Warnings on the files whose signature is :data:`NEARER` times nearer another channel's
    median than their own (channels whose medians are :data:`SEPARATION` apart or more).

    Args:
        found: (scan, file, channel, signature) of every channel image measured.
    """
    by_channel: dict[str, list[np.ndarray]] = {}
    for _, _, channel, sig in found:
        by_channel.setdefault(channel, []).append(sig)
    medians = {c: np.median(np.stack(s), axis=0) for c, s in by_channel.items() if len(s) >= MIN_FILES}
    if len(medians) < 2:
        return []
    out = []
    for scan, path, channel, sig in found:
        if channel not in medians:
            continue
        own = float(np.linalg.norm(sig - medians[channel]))
        other, near = min(((c, float(np.linalg.norm(sig - m))) for c, m in medians.items() if c != channel),
                          key=lambda cd: cd[1])
        if near * NEARER < own and np.linalg.norm(medians[other] - medians[channel]) >= SEPARATION:
            profile = ", ".join(f"{s:.2f}" for s in sig)
            out.append(Problem(scan, path, "contrast", f"{channel} image whose contrast looks like {other}: depth profile "
                                                      f"({profile}) is {near:.2g} from the {other} median and {own:.2g} "
                                                      f"from the {channel} median (swapped or mislabelled channel?)", "warning"))
    return out
