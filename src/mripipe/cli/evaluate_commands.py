"""Subcommands of evaluation, the report and reproduction (:mod:`mripipe.evaluate`): evaluate,
evaluate-detection, summarise, hashes, where, report-training, report-data, reproduce, publish."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mripipe.cli.arguments import add_common, add_label_grid, executes, optional_path, paths


def add_commands(sub: Any) -> None:
    """evaluate, evaluate-detection, summarise, where, report-training, report-data, reproduce,
    publish."""
    _evaluate_commands(sub)
    _report_commands(sub)


def _evaluate_commands(sub: Any) -> None:
    """evaluate, evaluate-detection, summarise, where."""
    p = sub.add_parser("evaluate", help="metrics with bootstrap CIs on the test predictions")
    add_common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--selected", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--preprocessed", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    add_label_grid(p)
    p.set_defaults(func=cli_evaluate)

    p = sub.add_parser(
        "evaluate-detection", help="lesion-level FROC/AP of any folder of maps against label maps"
    )
    p.add_argument("--log", default=None)
    p.add_argument("--predictions", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--min-iou", type=float, default=0.1)
    p.add_argument("--threshold", type=float, default=None)
    p.set_defaults(func=cli_evaluate_detection)

    p = sub.add_parser("summarise", help="headline metrics of every experiment")
    add_common(p)
    p.add_argument("--metrics", nargs="+", required=True, help="results/{experiment}/eval/metrics.json")
    p.add_argument("--excluded", default=None, help="results/excluded.tsv (scans left out, and why)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cli_summarise)

    p = sub.add_parser("hashes", help="a content hash of every stage's outputs (results/stages.json)")
    add_common(p)
    p.add_argument("--scans", nargs="+", required=True, help="the preprocessed scan folders")
    p.add_argument("--patches", required=True, help="the patch cache folder")
    p.add_argument("--checkpoints", nargs="*", default=[], help="every trial, rung slot and fold checkpoint.pt")
    p.add_argument("--models", nargs="*", default=[], help="results/{experiment}/model folders")
    p.add_argument("--predictions", nargs="*", default=[], help="results/{experiment}/predictions folders")
    p.add_argument("--cpu-isa", required=True, help="compute.cpu_isa the run was pinned at")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cli_hashes)

    p = sub.add_parser("where", help="print where the report, metrics and MLflow runs are")
    p.add_argument("--log", default=None)
    p.set_defaults(func=cli_where)


def _report_commands(sub: Any) -> None:
    """report-training, report-data, reproduce, publish."""
    p = sub.add_parser("report-training", help="search comparison plot and the selected model's card")
    add_common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--trials", nargs="+", required=True, help="trial folders")
    p.add_argument("--selected", required=True, help="results/{experiment}/selected.json")
    p.add_argument("--metrics", required=True, help="results/{experiment}/eval/metrics.json")
    p.add_argument("--out-dir", required=True, help="results/{experiment}/training")
    p.set_defaults(func=cli_report_training)

    p = sub.add_parser("report-data", help="the validation problems and excluded scans as a page")
    add_common(p)
    p.add_argument("--validation", required=True, help="results/validation.tsv")
    p.add_argument("--excluded", required=True, help="results/excluded.tsv")
    p.add_argument("--out", required=True, help="results/data.html")
    p.set_defaults(func=cli_report_data)

    p = sub.add_parser("reproduce", help="re-run HEAD from a clean state in a temporary copy; "
                       "compare every headline metric with the published result")
    p.add_argument("--log", default=None)
    p.add_argument("--published", default="published/phantom/summary.json")
    p.add_argument("--recipe", default=None, help="config/recipes/X.yaml: compare with its reference: block")
    p.add_argument("--summary", default=None, help="compare this summary.json instead of running")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is logged)")
    p.add_argument("--all-seeds", action="store_true",
                   help="re-run every published training seed (default: the first only)")
    p.set_defaults(func=cli_reproduce)

    p = sub.add_parser("publish", help="write the published result from a clean run of HEAD")
    p.add_argument("--log", default=None)
    p.add_argument("--out", default="published/phantom/summary.json")
    p.add_argument("--summary", default=None, help="publish this (fresh) summary.json instead of running")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--allow-dirty", action="store_true", help="publish with uncommitted changes")
    p.add_argument("--seeds", type=int, default=5, help="training seeds (the config's seed and the next ones)")
    p.set_defaults(func=cli_publish)


@executes("mripipe.evaluate.evaluate_experiment")
def cli_evaluate(ns: argparse.Namespace) -> None:
    """``mripipe evaluate``: segmentation or classification, then MLflow logging."""
    from mripipe.evaluate.evaluate_experiment import evaluate_experiment

    evaluate_experiment(ns.experiment, Path(ns.predictions), Path(ns.selected), Path(ns.splits),
                        Path(ns.manifest), Path(ns.preprocessed), ns.params, ns.seed,
                        Path(ns.out_dir), ns.label_grid)


@executes("mripipe.evaluate.evaluate_detection")
def cli_evaluate_detection(ns: argparse.Namespace) -> None:
    """``mripipe evaluate-detection``."""
    from mripipe.evaluate.evaluate_detection import evaluate_detection

    evaluate_detection(Path(ns.predictions), Path(ns.labels), Path(ns.out), min_iou=ns.min_iou,
                       threshold=ns.threshold)


@executes("mripipe.evaluate.summarise")
def cli_summarise(ns: argparse.Namespace) -> None:
    """``mripipe summarise``."""
    from mripipe.evaluate.summarise import summarise

    summarise(paths(ns.metrics), Path(ns.out), optional_path(ns.excluded))


@executes("mripipe.evaluate.hashes")
def cli_hashes(ns: argparse.Namespace) -> None:
    """``mripipe hashes``."""
    from mripipe.evaluate.hashes import write_stage_hashes

    write_stage_hashes(paths(ns.scans), Path(ns.patches), paths(ns.checkpoints), paths(ns.models),
                       paths(ns.predictions), ns.cpu_isa, Path(ns.out))


@executes("mripipe.evaluate.summarise")
def cli_where(ns: argparse.Namespace) -> str:
    """``mripipe where``: the locations under the working directory, as lines to print."""
    from mripipe.evaluate.summarise import where

    return "\n".join(where(Path.cwd()))


@executes("mripipe.evaluate.report")
def cli_report_training(ns: argparse.Namespace) -> None:
    """``mripipe report-training``."""
    from mripipe.evaluate.report import write_training_pages

    write_training_pages(ns.experiment, paths(ns.trials), Path(ns.selected), Path(ns.metrics),
                         ns.params, Path(ns.out_dir))


@executes("mripipe.evaluate.report")
def cli_report_data(ns: argparse.Namespace) -> None:
    """``mripipe report-data``."""
    from mripipe.evaluate.report import write_data_page

    write_data_page(Path(ns.validation), Path(ns.excluded), Path(ns.out))


@executes("mripipe.evaluate.reproduce")
def cli_reproduce(ns: argparse.Namespace) -> tuple[str, int]:
    """``mripipe reproduce`` of the repository in the working directory: the table to print and
    the exit status."""
    from mripipe.evaluate.reproduce import reproduce

    return reproduce(Path.cwd(), Path(ns.published), optional_path(ns.recipe), ns.cores, ns.keep,
                     optional_path(ns.summary), ns.all_seeds)


@executes("mripipe.evaluate.reproduce")
def cli_publish(ns: argparse.Namespace) -> str:
    """``mripipe publish`` of the repository in the working directory."""
    from mripipe.evaluate.reproduce import publish

    return publish(Path.cwd(), Path(ns.out), ns.cores, optional_path(ns.summary), ns.allow_dirty,
                   ns.seeds)
