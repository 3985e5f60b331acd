"""Benchmark: validation throughput (scans/s) and its time as a share of preprocessing.

Indexes a phantom BIDS root, runs ``mripipe validate``'s function on every scan (every file opened
and decompressed once), then preprocesses ``--n-preprocess`` of the scans with the default
``preprocess:`` section in the same process, and prints validation scans/s, the mean
preprocessing time per scan, and validation time / (preprocessing time x number of scans): the
share validation adds to the per-scan stage of ``make run`` (target <= ~10 %).

    .venv/bin/python bench/bench_validate.py --phantom data/phantom --n-preprocess 2

``--phantom`` defaults to ``data/phantom`` (the default cohort ``make run`` generates); it is
generated with ``--n-subjects`` subjects when missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mripipe.core.config import with_defaults
from mripipe.data.manifest import build, channel_columns
from mripipe.data.validate import validate
from mripipe.preprocess.pipeline import preprocess_scan


def main() -> None:
    """Parse arguments, run the benchmark, print the numbers."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", default="data/phantom")
    ap.add_argument("--n-subjects", type=int, default=40, help="when the phantom must be generated")
    ap.add_argument("--n-preprocess", type=int, default=2)
    ns = ap.parse_args()
    root = Path(ns.phantom)
    if not root.is_dir():
        subprocess.run([str(Path(sys.executable).parent / "mripipe"), "phantom", "--out", str(root), "--seed", "42",
                        "--workers", "2", "--params", f'{{"n_subjects": {ns.n_subjects}}}'], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        table = build({"source": "bids", "root": str(root)}, out / "manifest.tsv")
        t0 = time.perf_counter()
        validate(out / "manifest.tsv", {}, out / "validation.tsv", out / "valid.tsv", ["label", "class"])
        t_val = time.perf_counter() - t0
        params = with_defaults("preprocess")
        spacing = params["spacing"] if params["spacing"] != "auto" else [2.0, 2.0, 2.0]
        t0 = time.perf_counter()
        for _, row in table.head(ns.n_preprocess).iterrows():
            channels = {c: Path(row[c]) for c in channel_columns(table)}
            preprocess_scan(channels, Path(row["label"]) if row["label"] else None, out / row["scan"], params, spacing)
        t_pre = (time.perf_counter() - t0) / ns.n_preprocess
    n = len(table)
    print(f"scans: {n}  validation: {t_val:.2f} s ({n / t_val:.1f} scans/s)")
    print(f"preprocessing: {t_pre:.1f} s per scan (mean of {ns.n_preprocess})")
    print(f"validation / preprocessing of all scans: {t_val / (t_pre * n):.3%}")


if __name__ == "__main__":
    main()
