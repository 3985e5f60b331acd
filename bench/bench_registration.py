"""Benchmark: per-scan template registration time of the new method over the old, same run.

For each phantom scan the reference channel is prepared as in ``mripipe preprocess`` (reorient
to RAS, N4, denoising, downsampling to ``template_spacing``); then the old method
(``template_init: moments``, ``template_bounded_step: false``) and the new one (the schema's
defaults: rotation search, bounded steps) register it to the template, interleaved and
alternating which goes first, ``--repeats`` times, on one thread (as a pipeline job), with the
pipeline's sampling seed. Prints per scan the median wall times and the registration error
against the phantom's truth, and the ratios new / old of the summed median wall and CPU times
(CPU time is the steadier figure on a shared machine): ratios against a baseline measured in
the same run, never an absolute time.

    .venv/bin/python bench/bench_registration.py --phantom /tmp/ph --n-scans 4 --repeats 3

``--phantom`` is a phantom BIDS root; it is generated with 6 subjects when missing. ``--scans``
picks scans by name instead of the first ``--n-scans``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import SimpleITK as sitk

from mripipe.core.config import with_defaults
from mripipe.core.imageio import to_array
from mripipe.core.template import reference_grid, template_brainmask
from mripipe.core.utils import derive_seed
from mripipe.preprocess import intensity, registration
from mripipe.preprocess.qc import ERROR_GRID_MM, mapping_error_mm

OLD = {"template_init": "moments", "template_bounded_step": False}


def prepared(t1: Path, p: dict) -> sitk.Image:
    """The reference channel as the pipeline registers it (RAS, N4, denoised, downsampled)."""
    img = sitk.DICOMOrient(sitk.ReadImage(str(t1)), "RAS")
    work = intensity.n4_correct(img, p).corrected if p["n4"] else img
    if p["denoise"] != "none":
        work = intensity.denoise(work, p["denoise"], p)
    return registration.downsample(work, float(p["template_spacing"]))


def true_transform(root: Path, scan: str) -> sitk.Transform | None:
    """The phantom's true template -> T1w transform of ``scan`` (None without truth)."""
    sub, ses = scan.split("_")
    path = root / "derivatives/truth" / sub / ses / f"{scan}_from-T1w_to-template_mode-image_xfm.tfm"
    return sitk.ReadTransform(str(path)) if path.is_file() else None


def main() -> None:
    """Parse arguments, time both methods interleaved, print the table and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", default="/tmp/mripipe_bench_phantom", help="phantom BIDS root")
    ap.add_argument("--n-scans", type=int, default=4)
    ap.add_argument("--scans", nargs="*", default=None, help="scan names (default: the first n)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--params", default="{}", help="preprocess params (JSON) over the defaults")
    ap.add_argument("--seed", type=int, default=42, help="master seed, as the workflow's")
    args = ap.parse_args()

    root = Path(args.phantom)
    if not (root / "participants.tsv").exists():
        mripipe = str(Path(sys.executable).with_name("mripipe"))
        subprocess.run([mripipe, "phantom", "--out", str(root), "--seed", "42", "--workers", "2",
                        "--params", '{"n_subjects": 6}'], check=True)
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    new = with_defaults("preprocess", json.loads(args.params))
    old = {**new, **OLD}
    t1s = sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))
    if args.scans:
        t1s = [t for t in t1s if t.name.removesuffix("_T1w.nii.gz") in set(args.scans)]
    else:
        t1s = t1s[: args.n_scans]
    fixed, mask = registration.template_fixed(
        float(new["template_spacing"]), float(new["template_mask_dilation_mm"])
    )
    grid = reference_grid((ERROR_GRID_MM,) * 3)
    brain = to_array(template_brainmask((ERROR_GRID_MM,) * 3)) > 0

    print(f"registration benchmark: {len(t1s)} phantom scans x {args.repeats} repeats, 1 thread")
    print(f"  {'scan':16s} {'old s':>7s} {'new s':>7s} {'ratio':>6s} {'old err mm':>10s} {'new err mm':>10s}")
    total = {"old": 0.0, "new": 0.0}
    cpu_total = {"old": 0.0, "new": 0.0}
    for t1 in t1s:
        scan = t1.name.removesuffix("_T1w.nii.gz")
        moving = prepared(t1, new)
        seed = derive_seed(args.seed, "preprocess", scan)
        times: dict[str, list[float]] = {"old": [], "new": []}
        cpu: dict[str, list[float]] = {"old": [], "new": []}
        est: dict[str, sitk.Transform] = {}
        for rep in range(args.repeats):
            for name in ("old", "new") if rep % 2 == 0 else ("new", "old"):
                t0, c0 = time.perf_counter(), time.process_time()
                est[name] = registration.register_to_template(
                    fixed, moving, old if name == "old" else new, seed, mask
                )
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
        med = {k: median(v) for k, v in times.items()}
        for k in total:
            total[k] += med[k]
            cpu_total[k] += median(cpu[k])
        truth = true_transform(root, scan)
        err = {k: mapping_error_mm(est[k], truth, grid, brain) if truth else float("nan") for k in est}
        print(f"  {scan:16s} {med['old']:7.2f} {med['new']:7.2f} {med['new'] / med['old']:6.2f} "
              f"{err['old']:10.2f} {err['new']:10.2f}")
    print(f"  per-scan registration time, new / old (sum of medians): wall {total['new'] / total['old']:.2f}x, "
          f"CPU {cpu_total['new'] / cpu_total['old']:.2f}x")


if __name__ == "__main__":
    main()
