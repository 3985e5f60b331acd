# Shared names for the rules: the source files each `mripipe` command executes (its code inputs,
# from the import graph), the config sections as JSON parameters, and the scan list (known once
# the manifest checkpoint has run).
import json
import os
import shlex
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from mripipe.cli import command_code  # noqa: E402
from mripipe.data.manifest import channel_columns  # noqa: E402
from mripipe.learn.folds import other_folds  # noqa: E402
from mripipe.learn.halving import ladder  # noqa: E402

SEED = config["seed"]
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


def manifest_files(wildcards=None):
    """Every raw file the manifest names: replacing one re-validates."""
    table = manifest_table()
    cols = [*channel_columns(table), "label"]
    return sorted({v for c in cols if c in table.columns for v in table[c] if v})


def valid_scans(wildcards=None):
    """The scans validation kept (a checkpoint)."""
    return sorted(read_table(checkpoints.validate.get().output.valid)["scan"])


def scans(wildcards=None):
    """The scans that made it through validation and preprocessing (a checkpoint)."""
    return sorted(read_table(checkpoints.ready.get().output.tsv)["scan"])


def scan_row(wildcards):
    table = manifest_table()
    rows = table[table["scan"] == wildcards.scan]
    if rows.empty:
        raise ValueError(f"results/manifest.tsv: no scan {wildcards.scan!r}")
    return rows.iloc[0], channel_columns(table)


def raw_files(wildcards):
    """A scan's raw channel, label and truth files: replacing one re-runs that scan only."""
    row, channels = scan_row(wildcards)
    files = {f"ch_{c}": row[c] for c in channels if row[c]}
    files.update({k: row[k] for k in ("label", "truth") if k in row and row[k]})
    return files


def scan_args(wildcards):
    """`--channel NAME=PATH ... [--label PATH] [--truth PATH]` for `mripipe preprocess`."""
    row, channels = scan_row(wildcards)
    args = ["--channel", *(f"{c}={row[c]}" for c in channels if row[c])]
    for key in ("label", "truth"):
        if key in row and row[key]:
            args += [f"--{key}", row[key]]
    return " ".join(shlex.quote(a) for a in args)


def spacing_inputs(wildcards):
    """The fingerprint, only when the target spacing depends on the whole dataset."""
    return {"fingerprint": "results/fingerprint.json"} if AUTO_SPACING else {}


def spacing_args(wildcards):
    if AUTO_SPACING:
        return "--fingerprint results/fingerprint.json"
    return "--spacing " + " ".join(str(float(s)) for s in config["preprocess"]["spacing"])


def preprocessed(wildcards=None):
    """The preprocessed folders of the ready scans."""
    return expand("results/preprocessed/{scan}", scan=scans())


def attempted(wildcards=None):
    """The preprocessed folders of every valid scan (each ends with a status.json)."""
    return expand("results/preprocessed/{scan}", scan=valid_scans())


def qc_files(wildcards=None):
    return expand("results/preprocessed/{scan}/qc.json", scan=scans())


def trials(wildcards):
    n = config["experiments"][wildcards.experiment]["search"]["n_trials"]
    return [f"results/{wildcards.experiment}/trials/trial-{i:03d}" for i in range(n)]


def trial_metrics(wildcards):
    return [f"{t}/val_metrics.json" for t in trials(wildcards)]


# Successive halving (search.rungs > 1): rung 0 is the trials above, stopped at their rung's
# budget; rung r >= 1 is slots 0..n-1 under rungs/{r}/, each continuing the survivor of that rank
# in rungs/rung-{r-1}.json. With rungs: 1 there is no rung job and choose reads the trials.
def experiment_ladder(wildcards):
    return ladder(config["experiments"][wildcards.experiment])


def rung_budget(wildcards):
    """The epoch a training job stops at: its rung's budget (rule train: rung 0)."""
    return experiment_ladder(wildcards)[int(getattr(wildcards, "rung", 0))].budget


def rung_dirs(wildcards, rung):
    if rung == 0:
        return trials(wildcards)
    n = experiment_ladder(wildcards)[rung].n_trials
    return [f"results/{wildcards.experiment}/rungs/{rung}/slot-{k:03d}" for k in range(n)]


def rung_file(wildcards, rung):
    return f"results/{wildcards.experiment}/rungs/rung-{rung}.json"


def rung_inputs(wildcards):
    """Rule rung: the rung's val_metrics.json files and, from rung 1, the previous rung's file."""
    rung = int(wildcards.rung)
    files = {"metrics": [f"{d}/val_metrics.json" for d in rung_dirs(wildcards, rung)]}
    if rung:
        files["previous"] = rung_file(wildcards, rung - 1)
    return files


def rung_args(wildcards):
    """`--trials DIR... [--previous FILE]` for `mripipe rung`."""
    rung = int(wildcards.rung)
    args = ["--trials", *rung_dirs(wildcards, rung)]
    if rung:
        args += ["--previous", rung_file(wildcards, rung - 1)]
    return " ".join(shlex.quote(a) for a in args)


def promoted_from(wildcards):
    """Rule train_rung: the ranked previous rung, whose survivor of rank `slot` it continues."""
    return rung_file(wildcards, int(wildcards.rung) - 1)


def final_trials(wildcards):
    """The folders choose chooses among: the last rung's (the trials, with rungs: 1)."""
    return rung_dirs(wildcards, len(experiment_ladder(wildcards)) - 1)


def final_metrics(wildcards):
    return [f"{t}/val_metrics.json" for t in final_trials(wildcards)]


def ladder_files(wildcards):
    """The ranked rungs' files (none with rungs: 1)."""
    return [rung_file(wildcards, r) for r in range(len(experiment_ladder(wildcards)) - 1)]


def ladder_args(wildcards):
    files = ladder_files(wildcards)
    return " ".join(["--rungs", *files]) if files else ""


# k-fold ensembles (split.n_folds > 1, see mripipe.learn.folds): `choose` fixes the selected
# trial, fold f's `train_fold` job trains it on fold f with the full budget, and package packages
# the search fold's trial with the fold models. With n_folds: 1 there is no fold job.
def fold_dirs(wildcards):
    folds = other_folds(config["experiments"][wildcards.experiment], int(config["split"]["n_folds"]))
    return [f"results/{wildcards.experiment}/folds/fold-{f}" for f in folds]


def fold_metrics(wildcards):
    return [f"{d}/val_metrics.json" for d in fold_dirs(wildcards)]


def fold_args(wildcards):
    dirs = fold_dirs(wildcards)
    return " ".join(["--folds", *dirs]) if dirs else ""


def full_budget(wildcards):
    """A fold job's budget: the last rung's (training.epochs)."""
    return experiment_ladder(wildcards)[-1].budget


def experiment_params(wildcards):
    return json.dumps(config["experiments"][wildcards.experiment], sort_keys=True)
