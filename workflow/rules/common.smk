# Shared names for the rules: the source files each `mripipe` command executes (its code inputs,
# from the import graph), the config sections as JSON parameters, the scan list (known once the
# manifest checkpoint has run), and every input and params function of the rule files, named
# get_*. Every folder a job reads is a declared input (or holds declared inputs): a params
# function that takes `input` or `output` derives the folder or argument from the job's declared
# files; the preprocessed scans' folder is PREPROCESSED, next to the declared scan folders.
import json
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from mripipe.cli import command_code  # noqa: E402
from mripipe.data.manifest import channel_columns  # noqa: E402
from mripipe.learn.folds import other_folds  # noqa: E402
from mripipe.learn.halving import ladder  # noqa: E402
from mripipe.core.numerics import pinning_env  # noqa: E402
from mripipe.preprocess.memory import declared_mem_mb  # noqa: E402

SEED = config["seed"]
# Only training reads it (mripipe publish varies it alone); null = the master seed.
TRAIN_SEED = SEED if config.get("train_seed") is None else config["train_seed"]
# Every job's numerical libraries dispatch to at most compute.cpu_isa: the levers are environment
# variables read when a library loads, set here for every job this Snakemake process (or a
# cluster job's, which parses this file again) starts. CPU_ISA is a param of the jobs whose
# numbers depend on it (training, prediction), so changing it re-runs them.
CPU_ISA = config["compute"]["cpu_isa"]
os.environ.update(pinning_env(CPU_ISA))
EXPERIMENTS = sorted(config["experiments"])
SOURCE = config["data"]["source"]
AUTO_SPACING = config["preprocess"]["spacing"] == "auto"
# What the experiments need of every scan (validate marks a scan without it invalid).
TASKS = {e["task"] for e in config["experiments"].values()}
NEEDS = " ".join(n for n, t in (("label", "segmentation"), ("class", "classification")) if t in TASKS)
# The scans that passed validation and preprocessing: what split, patches, training, prediction
# and evaluation read (results/manifest.tsv keeps every scan; results/excluded.tsv says why not).
MANIFEST = "results/manifest.ready.tsv"


wildcard_constraints:
    scan="[^/.]+",


def code(command):
    """The mripipe source files `mripipe <command>` executes, relative to the working directory
    (the repository root when run there: a finished run that is moved stays up to date): the
    stage module's import closure and the CLI module holding the command's adapter. The
    dispatcher (mripipe/cli/__init__.py) is left out: it only parses arguments, and a changed
    command line already re-runs a job (Snakemake's `code` trigger), so editing it does not
    re-run the whole DAG."""
    return command_code(command, relative_to=Path(os.getcwd()))


def section(name):
    """A config section as JSON for `--params`."""
    return json.dumps(config.get(name, {}), sort_keys=True)


# How a label map must lie on its image's grid: validation's rule, which preprocessing and
# native-space evaluation apply again when they read the label (`--label-grid`).
LABEL_GRID = json.dumps({k: config["data"][k] for k in ("grid_tolerance_mm", "resample_labels")},
                        sort_keys=True)


_TABLES = {}


def read_table(tsv):
    """A TSV of strings, read once per version of the file: input functions run once per job,
    and re-reading the manifest for each of 2,000 scans would make building the DAG quadratic.
    Callers must not modify the table."""
    st = os.stat(tsv)
    version = (st.st_mtime_ns, st.st_size)
    cached = _TABLES.get(str(tsv))
    if cached is None or cached[0] != version:
        cached = (version, pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False))
        _TABLES[str(tsv)] = cached
    return cached[1]


def manifest_table():
    """The manifest (a checkpoint: readable once it has run)."""
    return read_table(checkpoints.manifest.get().output.tsv)


def get_dataset_index(wildcards):
    """What the manifest indexes besides the folder: the phantom folder (its rule's output), the
    DICOM cache and its table, dataset.json (msd, nnunet), the table, or a BIDS participants table."""
    root = Path(config["data"]["root"])
    if SOURCE == "phantom":
        return {"dataset": str(root)}
    if SOURCE == "dicom":
        table = config["data"]["dicom"]["table"]
        return {"dicom": "results/dicom", **({"table": os.path.normpath(root / table)} if table else {})}
    path = {"msd": root / "dataset.json", "nnunet": root / "dataset.json",
            "table": root / config["data"]["table"]["path"]}.get(SOURCE, root / "participants.tsv")
    return {"dataset": str(path)} if path.is_file() else {}


def get_dicom_args(wildcards, input):
    """`--dicom-cache` (the declared input.dicom, rule dicom's output) for a DICOM dataset."""
    return f"--dicom-cache {input.dicom}" if "dicom" in input.keys() else ""


def get_manifest_files(wildcards=None):
    """Every raw file the manifest names: replacing one re-validates."""
    table = manifest_table()
    cols = [*channel_columns(table), "label"]
    return sorted({v for c in cols if c in table.columns for v in table[c] if v})


def get_valid_images(wildcards=None):
    """The channel images of the scans validation kept: the fingerprint reads their headers."""
    table = read_table(checkpoints.validate.get().output.valid)
    return sorted({v for c in channel_columns(table) for v in table[c] if v})


def valid_scans():
    """The scans validation kept (a checkpoint)."""
    return sorted(read_table(checkpoints.validate.get().output.valid)["scan"])


def ready_scans():
    """The scans that made it through validation and preprocessing (a checkpoint)."""
    return sorted(read_table(checkpoints.ready.get().output.tsv)["scan"])


def scan_row(wildcards):
    table = manifest_table()
    rows = table[table["scan"] == wildcards.scan]
    if rows.empty:
        raise ValueError(f"results/manifest.tsv: no scan {wildcards.scan!r}")
    return rows.iloc[0], channel_columns(table)


def get_raw_files(wildcards):
    """A scan's raw channel, label and truth files: replacing one re-runs that scan only."""
    row, channels = scan_row(wildcards)
    files = {f"ch_{c}": row[c] for c in channels if row[c]}
    files.update({k: row[k] for k in ("label", "truth") if k in row and row[k]})
    return files


def get_scan_args(wildcards):
    """`--channel NAME=PATH ... [--label PATH] [--truth PATH]` for `mripipe preprocess` (the
    files of get_raw_files)."""
    row, channels = scan_row(wildcards)
    args = ["--channel", *(f"{c}={row[c]}" for c in channels if row[c])]
    for key in ("label", "truth"):
        if key in row and row[key]:
            args += [f"--{key}", row[key]]
    return " ".join(shlex.quote(a) for a in args)


def get_preprocess_mem_mb(wildcards, input):
    """A preprocessing job's mem_mb: estimated from its raw files' headers (the declared
    input.ch_* and input.label), at most preprocess.max_mem_mb."""
    channels = [f for k, f in input.items() if k.startswith("ch_")]
    return declared_mem_mb(channels, input.get("label"), config["preprocess"])


def get_spacing_inputs(wildcards):
    """The fingerprint, only when the target spacing depends on the whole dataset."""
    return {"fingerprint": "results/fingerprint.json"} if AUTO_SPACING else {}


def get_spacing_args(wildcards, input):
    """`--fingerprint` (the declared input) or the configured `--spacing X Y Z`."""
    if AUTO_SPACING:
        return f"--fingerprint {input.fingerprint}"
    return "--spacing " + " ".join(str(float(s)) for s in config["preprocess"]["spacing"])


# Rule preprocess writes one folder per scan in here. A job that reads scans declares their
# folders as its input `scans` (get_preprocessed or get_attempted) and passes this folder as
# `--preprocessed` (params.preprocessed). It is not derived from input.scans: until the ready
# checkpoint has run, Snakemake hands params functions the checkpoint's file in their place.
PREPROCESSED = "results/preprocessed"


def get_preprocessed(wildcards=None):
    """The preprocessed folders of the ready scans: what patches, training, packaging,
    prediction, evaluation and the QC table read."""
    return expand(f"{PREPROCESSED}/{{scan}}", scan=ready_scans())


def get_attempted(wildcards=None):
    """The preprocessed folders of every valid scan (each ends with a status.json)."""
    return expand(f"{PREPROCESSED}/{{scan}}", scan=valid_scans())


def get_qc_files(wildcards):
    """The qc.json in each of get_preprocessed's folders."""
    return [f"{s}/qc.json" for s in get_preprocessed()]


def get_output_dir(wildcards, output):
    """`--out-dir`: the folder that holds every declared output of the job."""
    (folder,) = {os.path.dirname(f) for f in output}
    return folder


# The patch cache: rule patches writes results/patches whole (atomically); a job that reads it
# declares the files it reads and passes their folder.
PATCH_FILES = {"index": "index.tsv", "volumes": "volumes.tsv", "classes": "classes.json",
               "meta": "patches.json"}


def get_patches_dir(wildcards, input):
    """`--patches`: the folder of the declared patch-cache files (input.patches_*)."""
    (folder,) = {os.path.dirname(f) for k, f in input.items() if k.startswith("patches_")}
    return folder


def get_experiment_params(wildcards):
    return json.dumps(config["experiments"][wildcards.experiment], sort_keys=True)


def trials(wildcards):
    n = config["experiments"][wildcards.experiment]["search"]["n_trials"]
    return [f"results/{wildcards.experiment}/trials/trial-{i:03d}" for i in range(n)]


def get_trial_metrics(wildcards):
    return [f"{t}/val_metrics.json" for t in trials(wildcards)]


def get_trial_dirs(wildcards, input):
    """`--trials`: the folders of the declared val_metrics.json files (input.metrics)."""
    return [os.path.dirname(m) for m in input.metrics]


# Training: rules train (rung 0 of the search), train_rung and train_fold share one definition
# and read the same files; what picks the trial differs (get_*_job).
def get_train_inputs(wildcards):
    """What every training job reads besides the scans (get_preprocessed: the validation scans
    are read whole) and its code: the patch cache, the split, the search's MLflow parent run."""
    return {
        **{f"patches_{k}": f"results/patches/{f}" for k, f in PATCH_FILES.items()},
        "splits": "results/splits.json",
        "manifest": MANIFEST,
        "search": f"results/{wildcards.experiment}/search.json",
    }


def get_trial_job(wildcards):
    """Rule train: `--trial TRIAL`, a trial of the search from scratch."""
    return f"--trial {shlex.quote(wildcards.trial)}"


def get_promote_job(wildcards, input):
    """Rule train_rung: `--promote RUNG --slot K`, the survivor of rank K in the ranked rung."""
    return f"--promote {shlex.quote(input.rung)} --slot {shlex.quote(wildcards.slot)}"


def get_fold_job(wildcards, input):
    """Rule train_fold: `--choice CHOICE --fold F`, the chosen trial trained on fold F."""
    return f"--choice {shlex.quote(input.choice)} --fold {shlex.quote(wildcards.fold)}"


# Successive halving (search.rungs > 1): rung 0 is the trials above, stopped at their rung's
# budget; rung r >= 1 is slots 0..n-1 under rungs/{r}/, each continuing the survivor of that rank
# in rungs/rung-{r-1}.json. With rungs: 1 there is no rung job and choose reads the trials.
def experiment_ladder(wildcards):
    return ladder(config["experiments"][wildcards.experiment])


def get_rung_budget(wildcards):
    """The epoch a training job stops at: its rung's budget (rung 0 for the trials)."""
    return experiment_ladder(wildcards)[int(getattr(wildcards, "rung", 0))].budget


def rung_dirs(wildcards, rung):
    if rung == 0:
        return trials(wildcards)
    n = experiment_ladder(wildcards)[rung].n_trials
    return [f"results/{wildcards.experiment}/rungs/{rung}/slot-{k:03d}" for k in range(n)]


def rung_file(wildcards, rung):
    return f"results/{wildcards.experiment}/rungs/rung-{rung}.json"


def get_rung_inputs(wildcards):
    """Ranking a rung: its val_metrics.json files and, from rung 1, the previous rung's file."""
    rung = int(wildcards.rung)
    files = {"metrics": [f"{d}/val_metrics.json" for d in rung_dirs(wildcards, rung)]}
    if rung:
        files["previous"] = rung_file(wildcards, rung - 1)
    return files


def get_rung_args(wildcards, input):
    """`--trials DIR... [--previous FILE]` for `mripipe rung` (the declared inputs)."""
    args = ["--trials", *get_trial_dirs(wildcards, input)]
    if input.get("previous"):
        args += ["--previous", input.previous]
    return " ".join(shlex.quote(a) for a in args)


def get_promoted_from(wildcards):
    """A slot of rung r >= 1: the ranked previous rung, whose survivor of rank `slot` it continues."""
    return rung_file(wildcards, int(wildcards.rung) - 1)


def final_trials(wildcards):
    """The folders choose chooses among: the last rung's (the trials, with rungs: 1)."""
    return rung_dirs(wildcards, len(experiment_ladder(wildcards)) - 1)


def get_final_metrics(wildcards):
    return [f"{t}/val_metrics.json" for t in final_trials(wildcards)]


def get_ladder_files(wildcards):
    """The ranked rungs' files (none with rungs: 1)."""
    return [rung_file(wildcards, r) for r in range(len(experiment_ladder(wildcards)) - 1)]


def get_ladder_args(wildcards, input):
    """`--rungs FILE...` (the declared input.rungs), or nothing with rungs: 1."""
    return " ".join(["--rungs", *input.rungs]) if input.rungs else ""


# k-fold ensembles (split.n_folds > 1, see mripipe.learn.folds): `choose` fixes the selected
# trial, fold f's `train_fold` job trains it on fold f with the full budget, and package packages
# the search fold's trial with the fold models. With n_folds: 1 there is no fold job.
def fold_dirs(wildcards):
    folds = other_folds(config["experiments"][wildcards.experiment], int(config["split"]["n_folds"]))
    return [f"results/{wildcards.experiment}/folds/fold-{f}" for f in folds]


def get_fold_metrics(wildcards):
    return [f"{d}/val_metrics.json" for d in fold_dirs(wildcards)]


def get_fold_args(wildcards, input):
    """`--folds DIR...`: the folders of the declared input.folds, or nothing with n_folds: 1."""
    dirs = [os.path.dirname(m) for m in input.folds]
    return " ".join(["--folds", *dirs]) if dirs else ""


def get_full_budget(wildcards):
    """A fold job's budget: the last rung's (training.epochs)."""
    return experiment_ladder(wildcards)[-1].budget


def get_package_params(wildcards):
    """What the model package records besides the trial: preprocessing, window, threshold, seed,
    and the evaluation's lesion matching (the candidate threshold is chosen with it)."""
    ev = config["evaluate"]
    matching = {k: ev[k] for k in ("min_overlap", "overlap_measure", "interpolate")}
    # multi-class: which class's candidates package chooses the threshold on (only when set, so a
    # binary run's command line is unchanged)
    matching |= {k: ev[k] for k in ("detection_classes", "regions", "candidate_threshold") if ev[k]}
    return json.dumps({"preprocess": config["preprocess"], "predict": config["predict"],
                       "threshold": ev["threshold"], "evaluate": matching, "seed": SEED}, sort_keys=True)


def get_hash_inputs(wildcards):
    """What `mripipe hashes` hashes besides the scans (get_preprocessed): the patch cache, and of
    every experiment each trial's, rung slot's and fold's checkpoint, the package and the test
    predictions."""
    checkpoints, models, predictions = [], [], []
    for exp in EXPERIMENTS:
        w = SimpleNamespace(experiment=exp)
        for rung in range(len(experiment_ladder(w))):
            checkpoints += [f"{d}/checkpoint.pt" for d in rung_dirs(w, rung)]
        checkpoints += [f"{d}/checkpoint.pt" for d in fold_dirs(w)]
        models.append(f"results/{exp}/model")
        predictions.append(f"results/{exp}/predictions")
    return {"checkpoints": checkpoints, "models": models,
            "predictions": predictions,
            **{f"patches_{k}": f"results/patches/{f}" for k, f in PATCH_FILES.items()}}


def get_metrics_files(wildcards, input):
    """The metrics.json of each declared evaluation folder (input.evals)."""
    return [f"{e}/metrics.json" for e in input.evals]
