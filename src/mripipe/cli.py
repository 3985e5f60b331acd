"""The ``mripipe`` command: parses arguments, sets up logging, dispatches to a stage function.

No logic lives here: each subcommand calls one plain typed function of its stage module, which is
what the unit tests call too. Stage modules are imported lazily so ``mripipe --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from mripipe.core.errors import InputError
from mripipe.core.utils import setup_logging

log = logging.getLogger("mripipe")


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--params is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--params must be a JSON object")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", default=None, help="also log to this file (the rule's log:)")
    p.add_argument("--params", type=_json, default={}, help="the stage's config section as JSON")


def _run(module: str, func: str) -> Callable[[argparse.Namespace], Any]:
    def call(ns: argparse.Namespace) -> Any:
        fn = getattr(importlib.import_module(f"mripipe.{module}"), func)
        return fn(ns)

    call.module = f"mripipe.{module}"  # type: ignore[attr-defined]
    return call


def command_module(command: str) -> str:
    """The module a subcommand executes, e.g. ``preprocess`` -> ``mripipe.preprocess.pipeline``."""
    parser = build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else []:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return str(action.choices[command].get_default("func").module)
    raise KeyError(f"no mripipe subcommand {command!r}")


def _data_commands(sub: Any) -> None:
    """Subcommands of the data stages: phantom, dicom, manifest, validate."""
    p = sub.add_parser("phantom", help="generate the built-in phantom BIDS cohort")
    _common(p)
    p.add_argument("--out", required=True, help="BIDS root to create (must not exist yet)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--layout", choices=["bids", "msd"], default="bids",
                   help="bids (default) or msd: imagesTr/labelsTr/dataset.json, two classes (lesion rim 1, core 2)")
    p.set_defaults(func=_run("data.phantom", "cli_phantom"))

    p = sub.add_parser("dicom", help="convert a folder of DICOM studies with dcm2niix (a cache)")
    _common(p)
    p.add_argument("--root", required=True, help="the DICOM folder (only read)")
    p.add_argument("--out", required=True, help="results/dicom")
    p.set_defaults(func=_run("data.dicom", "cli_dicom"))

    p = sub.add_parser("manifest", help="index a dataset (data.source) into results/manifest.tsv")
    _common(p)
    p.add_argument("--root", default=None, help="overrides data.root")
    p.add_argument("--channels", nargs="+", default=None, help="overrides data.channels")
    p.add_argument("--label", default=None, help="overrides data.label")
    p.add_argument("--dicom-cache", default=None, help="results/dicom (data.source: dicom)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run("data.manifest", "cli_manifest"))

    p = sub.add_parser("validate", help="check every file of the manifest up front")
    _common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--needs", nargs="*", default=[], choices=["label", "class"],
                   help="what the experiments need of every scan")
    p.add_argument("--out", required=True, help="results/validation.tsv")
    p.add_argument("--valid", required=True, help="results/manifest.valid.tsv (the valid scans)")
    p.set_defaults(func=_run("data.validate", "cli_validate"))


def _preprocess_commands(sub: Any) -> None:
    """Subcommands of preprocessing: fingerprint, preprocess, ready, qc-table."""
    p = sub.add_parser("fingerprint", help="dataset fingerprint: target spacing (nnU-Net rule)")
    _common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run("preprocess.fingerprint", "cli_fingerprint"))

    p = sub.add_parser("preprocess", help="preprocess one scan into template space")
    _common(p)
    p.add_argument("--scan", required=True)
    p.add_argument("--channel", nargs="+", required=True, metavar="NAME=PATH",
                   help="the scan's raw channels in order; the first is the reference")
    p.add_argument("--label", default=None, help="label map on the reference grid")
    p.add_argument("--truth", default=None, help="the phantom's truth.json (QC against truth)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--spacing", nargs=3, type=float, help="target spacing in mm")
    target.add_argument("--fingerprint", help="results/fingerprint.json (spacing: auto)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="master seed (registration sampling)")
    p.set_defaults(func=_run("preprocess.preprocess_scan", "cli_preprocess_recorded"))

    p = sub.add_parser("ready", help="the scans that made it through preprocessing, and those that did not")
    _common(p)
    p.add_argument("--manifest", required=True, help="results/manifest.valid.tsv")
    p.add_argument("--validation", required=True, help="results/validation.tsv")
    p.add_argument("--preprocessed", required=True, help="results/preprocessed")
    p.add_argument("--out", required=True, help="results/manifest.ready.tsv")
    p.add_argument("--excluded", required=True, help="results/excluded.tsv")
    p.set_defaults(func=_run("preprocess.ready", "cli_ready"))

    p = sub.add_parser("qc-table", help="gather per-scan qc.json into a table and a plot")
    _common(p)
    p.add_argument("--qc", nargs="+", required=True, help="qc.json files")
    p.add_argument("--out", required=True, help="qc.tsv")
    p.add_argument("--plot", required=True, help="summary PNG")
    p.set_defaults(func=_run("preprocess.qc", "cli_qc_table"))


def _learn_commands(sub: Any) -> None:
    """Subcommands of learning: split, patches, search-init, train, rung, select."""
    p = sub.add_parser("split", help="patient-level stratified split with a locked test set")
    _common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run("learn.split", "cli_split"))

    p = sub.add_parser("patches", help="label-balanced patches of the training/validation scans")
    _common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--preprocessed", required=True, help="results/preprocessed")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--labels", type=_json, default={},
                   help="data.labels as JSON (name -> value; {} = the dataset's declared labels)")
    p.add_argument("--manifest-meta", default=None,
                   help="results/manifest.json (the labels an MSD/nnU-Net dataset declares)")
    p.set_defaults(func=_run("learn.patches", "cli_patches"))

    p = sub.add_parser("search-init", help="create the MLflow parent run of an experiment's search")
    _common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--out", required=True, help="results/{experiment}/search.json")
    p.add_argument("--manifest", default=None, help="the manifest the trials read (logged as the dataset)")
    p.add_argument("--splits", default=None, help="results/splits.json (the dataset's split)")
    p.add_argument("--dataset-name", default=None, help="the dataset's name in MLflow (default: the manifest's)")
    p.set_defaults(func=_run("track.tracking", "cli_search_init"))

    p = sub.add_parser("train", help="train one random-search trial")
    _common(p)
    p.add_argument("--experiment", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", help="trial-000, trial-001, ...")
    which.add_argument("--promote", help="results/{experiment}/rungs/rung-{r}.json: continue a survivor")
    which.add_argument("--choice", help="results/{experiment}/choice.json: train the chosen trial on --fold")
    p.add_argument("--slot", type=int, default=0, help="with --promote: the survivor's rank (0 = best)")
    p.add_argument("--fold", type=int, default=None, help="with --choice: the fold to train on (split.n_folds > 1)")
    p.add_argument("--budget", type=int, default=None,
                   help="stop at this epoch of the schedule (the rung's budget; default training.epochs)")
    p.add_argument("--patches", required=True, help="results/patches")
    p.add_argument("--splits", required=True)
    p.add_argument("--preprocessed", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--search", required=True, help="results/{experiment}/search.json")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trials-per-gpu", type=int, default=1,
                   help="trials sharing one GPU (train.trials_per_gpu): k slots per device")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="DataLoader worker processes when training on a GPU (train.loader_workers)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_run("learn.train", "cli_train"))

    p = sub.add_parser("rung", help="rank a rung of successive halving on validation; who goes on")
    _common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--rung", type=int, required=True, help="0-based rung number")
    p.add_argument("--trials", nargs="+", required=True, help="the rung's folders (trials or slots)")
    p.add_argument("--previous", default=None, help="rung > 0: the previous rung's file")
    p.add_argument("--out", required=True, help="results/{experiment}/rungs/rung-{r}.json")
    p.set_defaults(func=_run("learn.rung", "cli_rung"))


def _select_commands(sub: Any) -> None:
    """Subcommands of the choice and the model package: choose, select."""
    p = sub.add_parser("choose", help="choose the best trial on the validation metric only (choice.json)")
    _common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--trials", nargs="+", required=True, help="trial folders (the last rung's slots)")
    p.add_argument("--out", required=True, help="results/{experiment}/choice.json")
    p.add_argument("--rungs", nargs="*", default=[],
                   help="successive halving: the ranked rungs' files; --trials are the last rung's slots")
    p.set_defaults(func=_run("learn.choose", "cli_choose"))

    p = sub.add_parser("package", help="the model package of the chosen trial and selected.json")
    _common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--choice", default=None, help="results/{experiment}/choice.json (mripipe choose)")
    p.add_argument("--trials", nargs="+", default=None, help="trial folders, without --choice")
    p.add_argument("--folds", nargs="*", default=[],
                   help="split.n_folds > 1: the chosen configuration trained on the other folds")
    p.add_argument("--search", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--model-dir", default=None, help="write the model package here (results/{experiment}/model)")
    p.add_argument("--manifest", default=None, help="channels and scan subjects (package)")
    p.add_argument("--splits", default=None, help="training subjects of the fingerprint (package)")
    p.add_argument("--fingerprint", default=None, help="results/fingerprint.json (package)")
    p.add_argument("--patches", default=None, help="results/patches (classification volume parameters)")
    p.add_argument("--preprocessed", default=None,
                   help="results/preprocessed (segmentation: post-processing chosen on the validation scans)")
    p.add_argument("--package-params", type=_json, default={},
                   help='JSON {"preprocess": {...}, "predict": {...}, "threshold": t, "seed": s}')
    p.add_argument("--rungs", nargs="*", default=[],
                   help="successive halving: the ranked rungs' files; --trials are the last rung's slots")
    p.set_defaults(func=_run("learn.package", "cli_package"))


def _infer_evaluate_commands(sub: Any) -> None:
    """Subcommands of inference, evaluation and the summary."""
    p = sub.add_parser("predict", help="inference of the model package on the test scans")
    _common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--model", required=True, help="the model package (results/{experiment}/model)")
    p.add_argument("--splits", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--preprocessed", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_run("infer.predict", "cli_predict"))

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
    p.set_defaults(func=_run("infer.run", "cli_infer"))

    p = sub.add_parser("evaluate", help="metrics with bootstrap CIs on the test predictions")
    _common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--selected", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--preprocessed", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_run("evaluate.evaluate_experiment", "cli_evaluate"))

    p = sub.add_parser(
        "evaluate-detection", help="lesion-level FROC/AP of any folder of maps against label maps"
    )
    p.add_argument("--log", default=None)
    p.add_argument("--predictions", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--min-iou", type=float, default=0.1)
    p.add_argument("--threshold", type=float, default=None)
    p.set_defaults(func=_run("evaluate.evaluate_detection", "cli_evaluate_detection"))

    p = sub.add_parser("summarise", help="headline metrics of every experiment")
    _common(p)
    p.add_argument("--metrics", nargs="+", required=True, help="results/{experiment}/eval/metrics.json")
    p.add_argument("--excluded", default=None, help="results/excluded.tsv (scans left out, and why)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_run("evaluate.summarise", "cli_summarise"))

    p = sub.add_parser("where", help="print where the report, metrics and MLflow runs are")
    p.add_argument("--log", default=None)
    p.set_defaults(func=_run("evaluate.summarise", "cli_where"))


def _report_commands(sub: Any) -> None:
    """Subcommands of the report and of reproduction: report-training, report-data, reproduce, publish."""
    p = sub.add_parser("report-training", help="search comparison plot and the selected model's card")
    _common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--trials", nargs="+", required=True, help="trial folders")
    p.add_argument("--selected", required=True, help="results/{experiment}/selected.json")
    p.add_argument("--metrics", required=True, help="results/{experiment}/eval/metrics.json")
    p.add_argument("--out-dir", required=True, help="results/{experiment}/training")
    p.set_defaults(func=_run("evaluate.report", "cli_report_training"))

    p = sub.add_parser("report-data", help="the validation problems and excluded scans as a page")
    _common(p)
    p.add_argument("--validation", required=True, help="results/validation.tsv")
    p.add_argument("--excluded", required=True, help="results/excluded.tsv")
    p.add_argument("--out", required=True, help="results/data.html")
    p.set_defaults(func=_run("evaluate.report", "cli_report_data"))

    p = sub.add_parser("reproduce", help="re-run HEAD from a clean state in a temporary copy; "
                       "compare every headline metric with the published result")
    p.add_argument("--log", default=None)
    p.add_argument("--published", default="published/phantom/summary.json")
    p.add_argument("--recipe", default=None, help="config/recipes/X.yaml: compare with its reference: block")
    p.add_argument("--summary", default=None, help="compare this summary.json instead of running")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is logged)")
    p.set_defaults(func=_run("evaluate.reproduce", "cli_reproduce"))

    p = sub.add_parser("publish", help="write the published result from a clean run of HEAD")
    p.add_argument("--log", default=None)
    p.add_argument("--out", default="published/phantom/summary.json")
    p.add_argument("--summary", default=None, help="publish this (fresh) summary.json instead of running")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--allow-dirty", action="store_true", help="publish with uncommitted changes")
    p.set_defaults(func=_run("evaluate.reproduce", "cli_publish"))


def _track_commands(sub: Any) -> None:
    """Subcommands of tracking: tracking-server."""
    p = sub.add_parser("tracking-server",
                       help="one MLflow server for parallel trials (tracking.uri: http://HOST:PORT)")
    p.add_argument("--log", default=None)
    p.add_argument("--backend-store-uri", default="sqlite:///mlflow.db",
                   help="sqlite:///PATH (on a local disk) or postgresql://USER:PW@HOST:PORT/DB")
    p.add_argument("--artifacts", default="mlartifacts", help="the shared artifact root")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (0.0.0.0: reachable from the cluster's nodes)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_run("track.server", "cli_tracking_server"))


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their arguments."""
    parser = argparse.ArgumentParser(prog="mripipe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _data_commands(sub)
    _preprocess_commands(sub)
    _learn_commands(sub)
    _select_commands(sub)
    _infer_evaluate_commands(sub)
    _report_commands(sub)
    _track_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mripipe`` console script."""
    ns = build_parser().parse_args(argv)
    setup_logging(ns.log)
    try:
        out = ns.func(ns)
    except (InputError, FileNotFoundError) as exc:
        # Bad input the code recognises on purpose: one line naming the file and the problem.
        log.error("%s", exc)
        return 1
    except Exception:
        # Anything else is a bug or an environment failure: the full traceback, in the log.
        log.exception("mripipe %s crashed", ns.command)
        return 1
    if isinstance(out, tuple):  # (user-facing text, exit status), e.g. `mripipe reproduce`
        print(out[0])
        return int(out[1])
    if isinstance(out, str):  # user-facing output of a command (e.g. `mripipe where`)
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
