"""Benchmark: preprocessing throughput with ``--cores 2`` over ``--cores 1``, and peak memory.

Runs the real ``mripipe preprocess`` jobs through a small Snakemake workflow (one job per scan,
``threads: 1`` each, with ``benchmark:`` files) twice in a scratch folder: once with one core and
once with two. Prints scans per minute for both, their ratio (target >= 1.8), the per-scan wall
time and the per-scan peak memory (``max_rss`` of Snakemake's benchmark files), and the median
QC metrics against the phantom's truth.

    .venv/bin/python bench/bench_preprocess.py --phantom /tmp/ph --n-scans 4

``--phantom`` is a phantom BIDS root (``mripipe phantom --out ...``); it is generated with 6
subjects when missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

SNAKEFILE = """
import pandas as pd
SCANS = sorted(pd.read_csv("manifest.tsv", sep="\\t", dtype=str)["scan"])
PARAMS = {params!r}

rule all:
    input: expand("out/{{scan}}/qc.json", scan=SCANS)

rule preprocess:
    input: manifest="manifest.tsv", fingerprint="fingerprint.json"
    output: "out/{{scan}}/qc.json"
    benchmark: "benchmarks/{{scan}}.tsv"
    threads: 1
    params: cfg=PARAMS
    shell:
        "{mripipe} preprocess --manifest {{input.manifest}} --scan {{wildcards.scan}} "
        "--fingerprint {{input.fingerprint}} --params {{params.cfg:q}} --threads {{threads}} "
        "--seed 42 --out-dir out/{{wildcards.scan}}"
"""


def phantom_manifest(root: Path, n_scans: int) -> pd.DataFrame:
    """Manifest rows (contract columns) of the first ``n_scans`` scans of a phantom BIDS root."""
    rows = []
    for t1 in sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))[:n_scans]:
        scan = t1.name.removesuffix("_T1w.nii.gz")
        sub, ses = scan.split("_")
        rows.append(
            {
                "subject": sub,
                "session": ses,
                "scan": scan,
                "T1w": str(t1.resolve()),
                "FLAIR": str(t1.with_name(f"{scan}_FLAIR.nii.gz").resolve()),
                "label": str(
                    (
                        root
                        / "derivatives/lesions"
                        / sub
                        / ses
                        / "anat"
                        / f"{scan}_desc-lesions_mask.nii.gz"
                    ).resolve()
                ),
                "class": "",
                "truth": str(
                    (root / "derivatives/truth" / sub / ses / f"{scan}_truth.json").resolve()
                ),
            }
        )
    return pd.DataFrame(rows)


def run(workdir: Path, cores: int) -> float:
    """Run the workflow from scratch with ``cores`` cores; returns the wall time in seconds."""
    for sub in ("out", "benchmarks", ".snakemake"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", str(cores), "--quiet", "all"],
        cwd=workdir,
        check=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    """Parse arguments, run both passes, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", default="/tmp/mripipe_bench_phantom", help="phantom BIDS root")
    ap.add_argument("--n-scans", type=int, default=4)
    ap.add_argument(
        "--params", default="{}", help="preprocess params (JSON), schema defaults otherwise"
    )
    ap.add_argument("--spacing", type=float, nargs=3, default=[2.0, 2.0, 2.0])
    args = ap.parse_args()

    root = Path(args.phantom)
    mripipe = str(Path(sys.executable).with_name("mripipe"))
    if not (root / "participants.tsv").exists():
        subprocess.run(
            [
                mripipe,
                "phantom",
                "--out",
                str(root),
                "--seed",
                "42",
                "--workers",
                "2",
                "--params",
                '{"n_subjects": 6}',
            ],
            check=True,
        )
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        work = Path(tmp)
        manifest = phantom_manifest(root, args.n_scans)
        manifest.to_csv(work / "manifest.tsv", sep="\t", index=False)
        (work / "fingerprint.json").write_text(
            json.dumps({"target_spacing": args.spacing, "source": "config"})
        )
        params = json.dumps(json.loads(args.params))
        (work / "Snakefile").write_text(SNAKEFILE.format(params=params, mripipe=mripipe))
        n = len(manifest)
        t1 = run(work, 1)
        bench1 = pd.concat(
            [pd.read_csv(p, sep="\t") for p in sorted((work / "benchmarks").glob("*.tsv"))]
        )
        t2 = run(work, 2)
        bench2 = pd.concat(
            [pd.read_csv(p, sep="\t") for p in sorted((work / "benchmarks").glob("*.tsv"))]
        )
        qc = pd.json_normalize(
            [json.loads(p.read_text()) for p in sorted((work / "out").glob("*/qc.json"))], sep="."
        )

    print(f"preprocess benchmark: {n} phantom scans, spacing {args.spacing}, params {params}")
    print(
        f"  --cores 1: {t1:7.1f} s  {60 * n / t1:6.2f} scans/min  (job wall median {bench1['s'].median():.1f} s)"
    )
    print(
        f"  --cores 2: {t2:7.1f} s  {60 * n / t2:6.2f} scans/min  (job wall median {bench2['s'].median():.1f} s)"
    )
    print(f"  throughput ratio 2 cores / 1 core: {t1 / t2:.2f}x (target >= 1.8)")
    print(
        f"  peak memory per scan (max_rss): median {bench1['max_rss'].median():.0f} MB, max {bench1['max_rss'].max():.0f} MB"
    )
    cols = {
        "truth.template_error_mm": "template registration error (mm, target <= 1.5)",
        "truth.coreg_error_mm.FLAIR": "co-registration error FLAIR (mm, target <= 1.0)",
        "truth.bias_corr.T1w": "N4 bias correlation T1w (target >= 0.95)",
        "truth.bias_corr.FLAIR": "N4 bias correlation FLAIR (target >= 0.95)",
        "truth.psnr_gain_db.T1w": "denoise PSNR gain T1w (dB, target >= 3)",
        "truth.psnr_gain_db.FLAIR": "denoise PSNR gain FLAIR (dB, target >= 3)",
        "timings_s.total": "in-process time per scan (s)",
    }
    for col, what in cols.items():
        if col in qc:
            print(f"  median {what}: {qc[col].median():.3f}")


if __name__ == "__main__":
    main()
