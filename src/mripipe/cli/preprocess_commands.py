"""Subcommands of preprocessing (:mod:`mripipe.preprocess`): fingerprint, preprocess, ready,
qc-table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mripipe.cli.arguments import add_common, add_label_grid, executes, optional_path, paths


def add_commands(sub: Any) -> None:
    """fingerprint, preprocess, ready, qc-table."""
    p = sub.add_parser("fingerprint", help="dataset fingerprint: target spacing (nnU-Net rule)")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cli_fingerprint)

    p = sub.add_parser("preprocess", help="preprocess one scan into template space")
    add_common(p)
    p.add_argument("--scan", required=True)
    p.add_argument("--channel", nargs="+", required=True, metavar="NAME=PATH",
                   help="the scan's raw channels in order; the first is the reference")
    p.add_argument("--label", default=None, help="label map on the reference grid")
    add_label_grid(p)
    p.add_argument("--truth", default=None, help="the phantom's truth.json (QC against truth)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--spacing", nargs=3, type=float, help="target spacing in mm")
    target.add_argument("--fingerprint", help="results/fingerprint.json (spacing: auto)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="master seed (registration sampling)")
    p.add_argument("--mem-mb", type=int, default=None,
                   help="the memory the job declared (MiB): a scan estimated above it fails at once, "
                        "and the job limits its data segment to it")
    p.set_defaults(func=cli_preprocess)

    p = sub.add_parser("ready", help="the scans that made it through preprocessing, and those that did not")
    add_common(p)
    p.add_argument("--manifest", required=True, help="results/manifest.valid.tsv")
    p.add_argument("--validation", required=True, help="results/validation.tsv")
    p.add_argument("--preprocessed", required=True, help="results/preprocessed")
    p.add_argument("--out", required=True, help="results/manifest.ready.tsv")
    p.add_argument("--excluded", required=True, help="results/excluded.tsv")
    p.set_defaults(func=cli_ready)

    p = sub.add_parser("qc-table", help="gather per-scan qc.json into a table and a plot")
    add_common(p)
    p.add_argument("--qc", nargs="+", required=True, help="qc.json files")
    p.add_argument("--out", required=True, help="qc.tsv")
    p.add_argument("--plot", required=True, help="summary PNG")
    p.set_defaults(func=cli_qc_table)


@executes("mripipe.preprocess.fingerprint")
def cli_fingerprint(ns: argparse.Namespace) -> None:
    """``mripipe fingerprint``."""
    from mripipe.preprocess.fingerprint import write_fingerprint

    write_fingerprint(Path(ns.manifest), ns.params, Path(ns.out))


@executes("mripipe.preprocess.preprocess_scan")
def cli_preprocess(ns: argparse.Namespace) -> None:
    """``mripipe preprocess``: its outcome recorded in ``status.json`` (never blocking others)."""
    from mripipe.preprocess.preprocess_scan import preprocess_recorded

    preprocess_recorded(
        ns.scan, list(ns.channel), Path(ns.out_dir), ns.params, spacing=ns.spacing,
        fingerprint=optional_path(ns.fingerprint), label=optional_path(ns.label),
        truth=optional_path(ns.truth), threads=ns.threads, seed=ns.seed,
        label_grid=ns.label_grid, mem_mb=ns.mem_mb,
    )


@executes("mripipe.preprocess.ready")
def cli_ready(ns: argparse.Namespace) -> None:
    """``mripipe ready``."""
    from mripipe.preprocess.ready import ready

    ready(Path(ns.manifest), Path(ns.validation), Path(ns.preprocessed), Path(ns.out),
          Path(ns.excluded), ns.params)


@executes("mripipe.preprocess.qc")
def cli_qc_table(ns: argparse.Namespace) -> None:
    """``mripipe qc-table``: qc.json files gathered into qc.tsv and a summary plot."""
    from mripipe.preprocess.qc import qc_table

    qc_table(paths(ns.qc), Path(ns.out), Path(ns.plot), ns.params)
