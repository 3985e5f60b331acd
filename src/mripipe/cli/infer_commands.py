"""Subcommands of inference (:mod:`mripipe.infer`): predict (the test scans, in the workflow) and
infer (new raw scans, for users)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mripipe.cli.arguments import add_common, executes, gpu_locks


def add_commands(sub: Any) -> None:
    """predict, infer."""
    p = sub.add_parser("predict", help="inference of the model package on the test scans")
    add_common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--model", required=True, help="the model package (results/{experiment}/model)")
    p.add_argument("--splits", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--preprocessed", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cli_predict)

    p = sub.add_parser("infer", help="apply a model package to new raw scans (native-grid outputs)")
    p.add_argument("--log", default=None)
    p.add_argument("--model", required=True, help="package folder or MLflow URI (models:/lesion_seg@champion)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--input", nargs="+", help="one scan's channel images, in the model's order")
    what.add_argument("--dataset", help="a dataset root: every scan is segmented")
    p.add_argument("--source", default="bids", choices=["bids", "msd", "nnunet", "table", "dicom"],
                   help="layout of --dataset, read by the same adapters as data.source")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per scan with --dataset)")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store of a models:/ URI")
    p.add_argument("--device", default=None, help="cpu, cuda:0, ... (default: the first GPU, else cpu)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ignore-spacing", action="store_true",
                   help="apply the model to a spacing far from its training data")
    p.add_argument("--sw-batch-size", type=int, default=None,
                   help="sliding windows per forward pass (speed/memory only; default the package's)")
    p.set_defaults(func=cli_infer)


@executes("mripipe.infer.predict")
def cli_predict(ns: argparse.Namespace) -> None:
    """``mripipe predict``: the model package applied to the test scans."""
    from mripipe.infer.predict import predict_test

    predict_test(ns.experiment, Path(ns.model), Path(ns.splits), Path(ns.manifest),
                 Path(ns.preprocessed), ns.params, Path(ns.out_dir), ns.threads, gpu_locks())


@executes("mripipe.infer.run")
def cli_infer(ns: argparse.Namespace) -> str:
    """``mripipe infer``: one scan (``--input``) or a dataset (``--dataset``); paths are handed on
    as given (they are recorded in ``inference.json``)."""
    from mripipe.infer.run import infer

    return infer(ns.model, ns.out, inputs=ns.input, dataset=ns.dataset, source=ns.source,
                 tracking_uri=ns.tracking_uri, device=ns.device, threads=ns.threads,
                 check_spacing=not ns.ignore_spacing, sw_batch_size=ns.sw_batch_size)
