"""Subcommands of learning (:mod:`mripipe.learn`): split, patches, search-init, train, rung,
choose, package (search-init, the first step of a search, calls :mod:`mripipe.track`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mripipe.cli.arguments import add_common, executes, gpu_locks, json_object, optional_path, paths


def add_commands(sub: Any) -> None:
    """split, patches, search-init, train, rung, choose, package."""
    _data_commands(sub)
    _train_commands(sub)
    _select_commands(sub)


def _data_commands(sub: Any) -> None:
    """split, patches, search-init: what the trials read."""
    p = sub.add_parser("split", help="patient-level stratified split with a locked test set")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cli_split)

    p = sub.add_parser("patches", help="label-balanced patches of the training/validation scans")
    add_common(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--preprocessed", required=True, help="results/preprocessed")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--labels", type=json_object, default={},
                   help="data.labels as JSON (name -> value; {} = the dataset's declared labels)")
    p.add_argument("--manifest-meta", default=None,
                   help="results/manifest.json (the labels an MSD/nnU-Net dataset declares)")
    p.set_defaults(func=cli_patches)

    p = sub.add_parser("search-init", help="create the MLflow parent run of an experiment's search")
    add_common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--tracking-uri", required=True)
    p.add_argument("--out", required=True, help="results/{experiment}/search.json")
    p.add_argument("--manifest", default=None, help="the manifest the trials read (logged as the dataset)")
    p.add_argument("--splits", default=None, help="results/splits.json (the dataset's split)")
    p.add_argument("--dataset-name", default=None, help="the dataset's name in MLflow (default: the manifest's)")
    p.add_argument("--train-seed", type=int, default=None, help="the trials' training seed (the run's seed param)")
    p.set_defaults(func=cli_search_init)


def _train_commands(sub: Any) -> None:
    """train, rung."""
    p = sub.add_parser("train", help="train one random-search trial")
    add_common(p)
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
    p.set_defaults(func=cli_train)

    p = sub.add_parser("rung", help="rank a rung of successive halving on validation; who goes on")
    add_common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--rung", type=int, required=True, help="0-based rung number")
    p.add_argument("--trials", nargs="+", required=True, help="the rung's folders (trials or slots)")
    p.add_argument("--previous", default=None, help="rung > 0: the previous rung's file")
    p.add_argument("--out", required=True, help="results/{experiment}/rungs/rung-{r}.json")
    p.set_defaults(func=cli_rung)


def _select_commands(sub: Any) -> None:
    """choose, package: the choice and the model package."""
    p = sub.add_parser("choose", help="choose the best trial on the validation metric only (choice.json)")
    add_common(p)
    p.add_argument("--experiment", required=True)
    p.add_argument("--trials", nargs="+", required=True, help="trial folders (the last rung's slots)")
    p.add_argument("--out", required=True, help="results/{experiment}/choice.json")
    p.add_argument("--rungs", nargs="*", default=[],
                   help="successive halving: the ranked rungs' files; --trials are the last rung's slots")
    p.set_defaults(func=cli_choose)

    p = sub.add_parser("package", help="the model package of the chosen trial and selected.json")
    add_common(p)
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
    p.add_argument("--package-params", type=json_object, default={},
                   help='JSON {"preprocess": {...}, "predict": {...}, "threshold": t, "seed": s}')
    p.add_argument("--rungs", nargs="*", default=[],
                   help="successive halving: the ranked rungs' files; --trials are the last rung's slots")
    p.set_defaults(func=cli_package)


@executes("mripipe.learn.split")
def cli_split(ns: argparse.Namespace) -> None:
    """``mripipe split``."""
    from mripipe.learn.split import write_splits

    write_splits(Path(ns.manifest), ns.params, ns.seed, Path(ns.out))


@executes("mripipe.learn.patches")
def cli_patches(ns: argparse.Namespace) -> None:
    """``mripipe patches``."""
    from mripipe.learn.patches import write_patches

    write_patches(Path(ns.manifest), Path(ns.splits), Path(ns.preprocessed), Path(ns.out_dir),
                  ns.params, ns.seed, ns.labels, optional_path(ns.manifest_meta))


@executes("mripipe.track.search_init")
def cli_search_init(ns: argparse.Namespace) -> None:
    """``mripipe search-init``."""
    from mripipe.track.search_init import start_search

    start_search(ns.experiment, ns.tracking_uri, ns.params, Path(ns.out),
                 optional_path(ns.manifest), optional_path(ns.splits), ns.dataset_name, ns.train_seed)


@executes("mripipe.learn.train")
def cli_train(ns: argparse.Namespace) -> None:
    """``mripipe train``: a trial (``--trial``), a promoted rung slot (``--promote``) or the
    chosen trial on another fold (``--choice``, ``--fold``)."""
    from mripipe.learn.train import train_job

    train_job(
        ns.experiment, Path(ns.patches), Path(ns.splits), Path(ns.preprocessed), Path(ns.manifest),
        Path(ns.search), ns.seed, ns.params, Path(ns.out_dir), trial=ns.trial,
        promote=optional_path(ns.promote), slot=ns.slot, choice=optional_path(ns.choice),
        fold=ns.fold, budget=ns.budget, threads=ns.threads, lock_dir=gpu_locks(),
        per_device=ns.trials_per_gpu, loader_workers=ns.loader_workers,
    )


@executes("mripipe.learn.rung")
def cli_rung(ns: argparse.Namespace) -> None:
    """``mripipe rung``."""
    from mripipe.learn.rung import rank_rung

    rank_rung(ns.experiment, ns.rung, paths(ns.trials), ns.params, Path(ns.out),
              optional_path(ns.previous))


@executes("mripipe.learn.choose")
def cli_choose(ns: argparse.Namespace) -> None:
    """``mripipe choose``: the selected trial (``choice.json``), before the fold jobs."""
    from mripipe.learn.choose import choose_trial

    choose_trial(ns.experiment, paths(ns.trials), ns.params, Path(ns.out), paths(ns.rungs))


@executes("mripipe.learn.package")
def cli_package(ns: argparse.Namespace) -> None:
    """``mripipe package``: selected.json and, with ``--model-dir``, the package."""
    from mripipe.learn.package import package_experiment

    package_experiment(
        ns.experiment, Path(ns.search), ns.params, Path(ns.out), choice=optional_path(ns.choice),
        trials=paths(ns.trials), folds=paths(ns.folds), rungs=paths(ns.rungs),
        model_dir=optional_path(ns.model_dir), manifest=optional_path(ns.manifest),
        splits=optional_path(ns.splits), fingerprint=optional_path(ns.fingerprint),
        patches=optional_path(ns.patches), preprocessed=optional_path(ns.preprocessed),
        settings=ns.package_params,
    )
