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
from mripipe.cli import command_module  # noqa: E402
from mripipe.core.codegraph import code_files  # noqa: E402
from mripipe.data.manifest import channel_columns  # noqa: E402

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
    (the repository root when run there: a finished run that is moved stays up to date). The
    dispatcher cli.py is left out: it only parses arguments, and a changed command line already
    re-runs a job (Snakemake's `code` trigger), so editing it does not re-run the whole DAG."""
    return code_files([command_module(command)], relative_to=Path(os.getcwd()))


def section(name):
    """A config section as JSON for `--params`."""
    return json.dumps(config.get(name, {}), sort_keys=True)


def manifest_table():
    """The manifest (a checkpoint: readable once it has run)."""
    tsv = checkpoints.manifest.get().output.tsv
    return pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)


def manifest_files(wildcards=None):
    """Every raw file the manifest names: replacing one re-validates."""
    table = manifest_table()
    cols = [*channel_columns(table), "label"]
    return sorted({v for c in cols if c in table.columns for v in table[c] if v})


def valid_scans(wildcards=None):
    """The scans validation kept (a checkpoint)."""
    tsv = checkpoints.validate.get().output.valid
    return sorted(pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)["scan"])


def scans(wildcards=None):
    """The scans that made it through validation and preprocessing (a checkpoint)."""
    tsv = checkpoints.ready.get().output.tsv
    return sorted(pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)["scan"])


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


def experiment_params(wildcards):
    return json.dumps(config["experiments"][wildcards.experiment], sort_keys=True)
