"""The memory one scan's preprocessing takes, estimated from its raw files' headers alone, and the
limit a job sets on itself from what it declared.

The rule declares ``mem_mb`` = :func:`estimate` (at most ``preprocess.max_mem_mb``), so Snakemake
and SLURM never overcommit; ``mripipe preprocess --mem-mb`` refuses at once a scan whose estimate
is above it, and otherwise limits its own data segment (``RLIMIT_DATA``: heap and anonymous
mappings, which tracked peak RSS within 35 MB on the phantom, where the address space ran
530 MB above it in thread stacks and library reservations) so that an underestimate ends in a
``MemoryError`` recorded for that scan rather than a machine out of memory.

Calibration (``bench/bench_memory.py preprocess``): peak RSS of ``mripipe preprocess`` (default
config, template path, T1w + FLAIR + label of phantom sub-001 upsampled 1, 1.5, 2 and 3 times
per axis) was 569, 802, 1099 and 2584 MiB for 3.5, 11.7, 27.8 and 93.7 million channel voxels
(2.3 to 62 million label voxels) at a 2 mm target (1.07 million output voxels), and 907 MiB at
1 mm (8.5 million output voxels). :data:`CHANNEL_BYTES` is the slope between the two largest
(23.6 B per voxel), :data:`OUTPUT_BYTES` the 1 mm run's excess over the 2 mm one per output
voxel and channel, :data:`BASE_MIB` the intercept (interpreter, SimpleITK, template). The fit
lies 2-12% above every run; the declaration adds :data:`MARGIN` (35-40% headroom in all).
"""

from __future__ import annotations

import logging
import math
import resource
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mripipe.core.template import template_extent_mm
from mripipe.data.header import Header, read_header
from mripipe.preprocess import native

log = logging.getLogger(__name__)

BASE_MIB = 475
#: per voxel of every raw channel volume (float32 copies through reorientation, N4 and denoising)
CHANNEL_BYTES = 24
#: per voxel of the label map (read and kept as uint16)
LABEL_BYTES = 4
#: per voxel of the output grid and channel (resampled arrays, the stack, the written images)
OUTPUT_BYTES = 24
MARGIN = 1.25
_MIB = 1 << 20
_STATUS = Path("/proc/self/status")
#: how ITK's failed allocations read once through SimpleITK
_ALLOCATION_FAILURES = ("bad_alloc", "Failed to allocate memory", "MemoryAllocationError")


@dataclass(frozen=True)
class Estimate:
    """A scan's estimated peak memory and what it comes from.

    Attributes:
        mem_mb: the estimate with its margin, MiB (as SLURM counts ``--mem``).
        largest: the largest raw file (a failure names it).
        voxels: every voxel of the raw channel files.
    """

    mem_mb: int
    largest: Header
    voxels: int

    def describe(self) -> str:
        h = self.largest
        return f"{h.path}: {'x'.join(map(str, h.dims))} {h.dtype.name}, {self.voxels:,} channel voxels in all"


def _output_voxels(reference: Header, n_channels: int, params: dict[str, Any]) -> int:
    """Voxels of the output stack: the template's extent (or the reference's own, on the native
    path) at the target spacing (the reference's own under ``spacing: auto``)."""
    spacing = reference.spacing if params["spacing"] == "auto" else np.asarray(params["spacing"], dtype=float)
    extent = reference.fov_mm if native.is_native(params) else np.asarray(template_extent_mm())
    return n_channels * math.prod(max(1, round(float(e / s))) for e, s in zip(extent, spacing, strict=True))


def estimate(channels: Sequence[str | Path], label: str | Path | None, params: dict[str, Any]) -> Estimate:
    """The peak memory of preprocessing these raw files, from their headers.

    Args:
        channels: the scan's channel files in order, the reference first (a 4-D file named by
            several channels is counted once).
        label: its label map, if any.
        params: the ``preprocess:`` section, complete.
    """
    headers = [read_header(p, expected_volumes=0) for p in dict.fromkeys(str(c) for c in channels)]
    readable = [h for h in headers if h.dims] or [Header(Path(str(channels[0])))]
    voxels = sum(h.voxels for h in readable)
    n_channels = len(channels)
    label_voxels = read_header(label).voxels if label else 0
    need = (CHANNEL_BYTES * voxels + LABEL_BYTES * label_voxels
            + OUTPUT_BYTES * (_output_voxels(readable[0], n_channels, params) if readable[0].dims else 0))
    mem_mb = math.ceil(MARGIN * (BASE_MIB + need / _MIB))
    return Estimate(mem_mb, max(readable, key=lambda h: h.voxels), voxels)


def _status_kb(*keys: str) -> list[int]:
    fields = dict(line.split(":", 1) for line in _STATUS.read_text().splitlines() if ":" in line)
    return [int(fields.get(k, "0 kB").split()[0]) for k in keys]


@contextmanager
def limited(mem_mb: int | None) -> Iterator[None]:
    """Within the block, limit this process's data segment (``RLIMIT_DATA``) to ``mem_mb`` MiB
    of use, plus what is reserved but unused on entry (thread stacks, allocator arenas), so the
    limit counts what is touched; the previous limit is restored on exit. None: no limit."""
    if mem_mb is None or not _STATUS.is_file():  # Linux only: elsewhere the declaration alone
        yield
        return
    before = resource.getrlimit(resource.RLIMIT_DATA)
    data_kb, anon_kb = _status_kb("VmData", "RssAnon")
    limit = mem_mb * _MIB + max(0, data_kb - anon_kb) * 1024
    if before[1] != resource.RLIM_INFINITY:
        limit = min(limit, before[1])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, before[1]))
    log.info("memory: data segment limited to %.0f MiB (mem_mb %d)", limit / _MIB, mem_mb)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, before)


def out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, or ITK's (reported through SimpleITK as a
    RuntimeError, which the pipeline turns into an InputError naming the step)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or any(m in text for m in _ALLOCATION_FAILURES)


def declared_mem_mb(channels: Sequence[str | Path], label: str | Path | None, params: dict[str, Any]) -> int:
    """What a preprocessing job declares: :func:`estimate`, at most ``preprocess.max_mem_mb``."""
    return min(estimate(channels, label, params).mem_mb, int(params["max_mem_mb"]))
