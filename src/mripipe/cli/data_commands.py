"""Subcommands of the data stages (:mod:`mripipe.data`): phantom, dicom, manifest, validate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mripipe.cli.arguments import add_common, executes, optional_path


def add_commands(sub: Any) -> None:
    """phantom, dicom, manifest, validate."""
    p = sub.add_parser("phantom", help="generate the built-in phantom BIDS cohort")
    add_common(p)
    p.add_argument("--out", required=True, help="BIDS root to create (must not exist yet)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--layout", choices=["bids", "msd"], default="bids",
                   help="bids (default) or msd: imagesTr/labelsTr/dataset.json, two classes (lesion rim 1, core 2)")
    p.set_defaults(func=cli_phantom)

    p = sub.add_parser("dicom", help="convert a folder of DICOM studies with dcm2niix (a cache)")
    add_common(p)
    p.add_argument("--root", required=True, help="the DICOM folder (only read)")
    p.add_argument("--out", required=True, help="results/dicom")
    p.set_defaults(func=cli_dicom)

    p = sub.add_parser("manifest", help="index a dataset (data.source) into results/manifest.tsv")
    add_common(p)
    p.add_argument("--root", default=None, help="overrides data.root")
    p.add_argument("--channels", nargs="+", default=None, help="overrides data.channels")
    p.add_argument("--label", default=None, help="overrides data.label")
    p.add_argument("--dicom-cache", default=None, help="results/dicom (data.source: dicom)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cli_manifest)

    p = sub.add_parser("validate", help="check every file of the manifest up front")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--needs", nargs="*", default=[], choices=["label", "class"],
                   help="what the experiments need of every scan")
    p.add_argument("--out", required=True, help="results/validation.tsv")
    p.add_argument("--valid", required=True, help="results/manifest.valid.tsv (the valid scans)")
    p.set_defaults(func=cli_validate)


@executes("mripipe.data.phantom")
def cli_phantom(ns: argparse.Namespace) -> None:
    """``mripipe phantom``."""
    from mripipe.data.phantom import generate_dataset

    generate_dataset(Path(ns.out), ns.seed, ns.params, workers=ns.workers, layout=ns.layout)


@executes("mripipe.data.dicom")
def cli_dicom(ns: argparse.Namespace) -> None:
    """``mripipe dicom``."""
    from mripipe.data.dicom import convert

    convert(Path(ns.root), Path(ns.out))


@executes("mripipe.data.manifest")
def cli_manifest(ns: argparse.Namespace) -> None:
    """``mripipe manifest``: ``--root``, ``--channels`` and ``--label`` override the ``data``
    section given as ``--params``."""
    from mripipe.data.manifest import build

    params = dict(ns.params)
    for key in ("root", "label"):
        if getattr(ns, key):
            params[key] = getattr(ns, key)
    if ns.channels:
        params["channels"] = list(ns.channels)
    build(params, Path(ns.out), optional_path(ns.dicom_cache))


@executes("mripipe.data.validate")
def cli_validate(ns: argparse.Namespace) -> None:
    """``mripipe validate``."""
    from mripipe.data.validate import validate

    validate(Path(ns.manifest), ns.params, Path(ns.out), Path(ns.valid), list(ns.needs))
