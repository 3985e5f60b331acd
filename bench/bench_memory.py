"""Benchmark: peak memory of ``mripipe validate`` and ``mripipe preprocess`` against file size.

``validate``: peak RSS (``/usr/bin/time -v``) of ``mripipe validate`` on the phantom's manifest
(baseline), then with one T1w replaced by a 1024^3 int16 ``.nii.gz`` (10 MB of file, 2 GiB of
voxels; written in bounded memory): refused from its header with the default limits, and
streamed in slabs with the limits lifted (``max_voxel_ratio``, ``max_fov_mm``).

``preprocess``: the calibration of :mod:`mripipe.preprocess.memory`: one phantom scan's T1w,
FLAIR and label upsampled 1x, 1.5x, 2x, 3x per axis, each preprocessed by ``mripipe preprocess``
(default config), peak RSS against the voxel count and the estimate (the 3x run takes ~4 min).

    .venv/bin/python bench/bench_memory.py validate --phantom data/phantom
    .venv/bin/python bench/bench_memory.py preprocess --phantom data/phantom --scales 1 1.5 2 3
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from mripipe.core.config import with_defaults
from mripipe.data.manifest import build
from mripipe.preprocess.memory import estimate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_sparse_nifti  # noqa: E402  (the tests' writer of oversize files)

MRIPIPE = [sys.executable, "-m", "mripipe.cli"]


def _peak(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS MiB, wall seconds) of a command under /usr/bin/time -v."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    rss = float(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1)) / 1024  # type: ignore[union-attr]
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    h, m, s = wall.groups() if wall else ("0", "0", "0")
    return rss, int(h or 0) * 3600 + int(m) * 60 + float(s)


def bench_validate(phantom: Path, tmp: Path) -> None:
    table = build({"source": "bids", "root": str(phantom)}, tmp / "manifest.tsv")
    huge = write_sparse_nifti(tmp / "huge_T1w.nii.gz", (1024, 1024, 1024), dtype=np.int16)
    with_huge = table.copy()
    with_huge.loc[0, "T1w"] = str(huge)
    with_huge.to_csv(tmp / "huge.tsv", sep="\t", index=False)
    (tmp / "huge.json").write_text((tmp / "manifest.json").read_text())
    lifted = {"max_voxel_ratio": 1e6, "max_fov_mm": 5000}
    for name, manifest, params in (("phantom", "manifest.tsv", {}), ("1024^3 refused", "huge.tsv", {}),
                                   ("1024^3 streamed", "huge.tsv", lifted)):
        rss, wall = _peak([*MRIPIPE, "validate", "--manifest", str(tmp / manifest), "--params", json.dumps(params),
                           "--out", str(tmp / f"v_{manifest}"), "--valid", str(tmp / f"ok_{manifest}")])
        found = pd.read_csv(tmp / f"v_{manifest}", sep="\t")
        checks = sorted(set(found.loc[found["file"] == str(huge), "check"]))
        print(f"{name:16s} {len(table)} scans: peak RSS {rss:7.0f} MiB, {wall:6.1f} s; checks on the 1024^3 file: {checks}")


def bench_preprocess(phantom: Path, tmp: Path, scales: list[float]) -> None:
    row = build({"source": "bids", "root": str(phantom)}).iloc[0]
    params = with_defaults("preprocess")
    for scale in scales:
        files = {}
        for key in ("T1w", "FLAIR", "label"):
            im = sitk.ReadImage(row[key])
            size = [int(round(n * scale)) for n in im.GetSize()]
            spacing = [sp * n / m for sp, n, m in zip(im.GetSpacing(), im.GetSize(), size, strict=True)]
            interp = sitk.sitkNearestNeighbor if key == "label" else sitk.sitkLinear
            files[key] = tmp / f"x{scale:g}_{key}.nii.gz"
            sitk.WriteImage(sitk.Resample(im, size, sitk.Transform(), interp, im.GetOrigin(), spacing, im.GetDirection(),
                                          0, im.GetPixelID()), str(files[key]))
        est = estimate([files["T1w"], files["FLAIR"]], files["label"], params)
        rss, wall = _peak([*MRIPIPE, "preprocess", "--scan", f"x{scale:g}", "--channel", f"T1w={files['T1w']}",
                           f"FLAIR={files['FLAIR']}", "--label", str(files["label"]), "--params", json.dumps(params),
                           "--spacing", *map(str, params["spacing"]), "--out-dir", str(tmp / f"x{scale:g}")])
        print(f"x{scale:<4g} {est.voxels / 1e6:6.1f} M channel voxels: peak RSS {rss:6.0f} MiB in {wall:5.0f} s; "
              f"declared {est.mem_mb} MiB ({est.mem_mb / rss:.2f}x)")


def main() -> None:
    """Parse arguments, run the benchmark, print the numbers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["validate", "preprocess"])
    ap.add_argument("--phantom", default="data/phantom")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if ns.what == "validate":
            bench_validate(Path(ns.phantom), Path(tmp))
        else:
            bench_preprocess(Path(ns.phantom), Path(tmp), ns.scales)


if __name__ == "__main__":
    main()
