"""A preprocessing job's memory: declared from its headers, refused at once above the declaration,
and an allocation past the job's own limit recorded as that scan's failure."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from mripipe.core.config import with_defaults
from mripipe.preprocess import memory
from mripipe.preprocess.preprocess_scan import preprocess_recorded

PARAMS = with_defaults("preprocess", {"spacing": [2.0, 2.0, 2.0]})


def _smooth(path: Path, n: int) -> Path:
    """An n^3 float32 image at 1.5 mm that compresses well (a smooth ramp)."""
    data = np.indices((n, n, n)).sum(0).astype(np.float32) + 1
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0])), str(path))
    return path


def test_estimate_follows_the_header_sizes(tmp_path: Path) -> None:
    small, large = _smooth(tmp_path / "small.nii.gz", 20), _smooth(tmp_path / "large.nii.gz", 40)
    a, b = memory.estimate([small], None, PARAMS), memory.estimate([large, small], None, PARAMS)
    assert b.voxels == 40**3 + 20**3 and b.largest.path == large
    grown = memory.MARGIN * (memory.CHANNEL_BYTES * 40**3 + memory.OUTPUT_BYTES * 98 * 116 * 94) / 2**20
    assert abs((b.mem_mb - a.mem_mb) - grown) <= 1  # one more channel on the 2 mm template grid
    assert memory.declared_mem_mb([large], None, {**PARAMS, "max_mem_mb": 600}) == 600


def test_a_scan_over_its_declared_memory_fails_alone_at_once(tmp_path: Path, sparse_nifti: Callable[..., Path]) -> None:
    """The issue's case: 1024^3 int16 voxels at 1 mm in a 10 MB file. Declared at the cap, the job
    fails before decompressing a byte, naming the file and its size."""
    big = sparse_nifti(tmp_path / "big_T1w.nii.gz", (1024, 1024, 1024), dtype=np.int16)
    flair = _smooth(tmp_path / "FLAIR.nii.gz", 20)
    declared = memory.declared_mem_mb([big, flair], None, PARAMS)
    assert declared == PARAMS["max_mem_mb"] < memory.estimate([big, flair], None, PARAMS).mem_mb
    out = tmp_path / "sub-big"
    preprocess_recorded("sub-big", [f"T1w={big}", f"FLAIR={flair}"], out, PARAMS, spacing=[2.0, 2.0, 2.0],
                        mem_mb=declared)
    status = json.loads((out / "status.json").read_text())
    assert status["ok"] is False and status["check"] == "memory"
    assert status["reason"].startswith(f"{big}: 1024x1024x1024 int16, 1,073,749,824 channel voxels in all: needs about ")
    assert status["reason"].endswith("more than the job's mem_mb 16,000 (at most preprocess.max_mem_mb); not started")


def test_running_out_within_the_job_limit_is_recorded(tmp_path: Path) -> None:
    """An underestimate (here: the estimate made to say 1 MB) meets the job's RLIMIT_DATA: the
    MemoryError (numpy) or failed allocation (ITK) is that scan's recorded failure. Run in a child
    process: the limit is the process's."""
    image = _smooth(tmp_path / "T1w.nii.gz", 160)  # 16 MB of float32, copied many times over
    script = textwrap.dedent(f"""
        from pathlib import Path
        from mripipe.preprocess import memory, preprocess_scan
        real = memory.estimate
        preprocess_scan.memory.estimate = lambda *a: memory.Estimate(1, real(*a).largest, real(*a).voxels)
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        used = int(status["RssAnon"].split()[0]) // 1024
        preprocess_scan.preprocess_recorded("sub-x", ["T1w={image}"], Path("{tmp_path / 'out'}"), {{}},
                                            spacing=[2.0, 2.0, 2.0], mem_mb=used + 40)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["check"] == "memory", status
    assert status["reason"].startswith(f"{image}: 160x160x160 float32, 4,096,000 channel voxels in all: out of memory "
                                       "within the job's mem_mb")
