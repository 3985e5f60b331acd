# Shared names for the rules: the module each rule runs (so edits re-trigger it), the config
# sections as JSON parameters, and the scan list (known once the manifest checkpoint has run).
import json
from pathlib import Path

import pandas as pd

SRC = Path(workflow.basedir) / "src" / "mripipe"
SEED = config["seed"]
EXPERIMENTS = sorted(config["experiments"])


def code(*modules):
    """The module files a rule runs, as inputs (Snakemake does not see imports change)."""
    return [str(SRC / f"{m}.py") for m in modules]


def section(name):
    """A config section as JSON for `--params`."""
    return json.dumps(config.get(name, {}), sort_keys=True)


def scans(wildcards=None):
    """Every scan of the manifest (a checkpoint: the list is known once it has run)."""
    tsv = checkpoints.manifest.get().output.tsv
    return sorted(pd.read_csv(tsv, sep="\t", dtype=str)["scan"])


def preprocessed(wildcards=None):
    return expand("results/preprocessed/{scan}/image.nii.gz", scan=scans())


def qc_files(wildcards=None):
    return expand("results/preprocessed/{scan}/qc.json", scan=scans())


def trials(wildcards):
    n = config["experiments"][wildcards.experiment]["search"]["n_trials"]
    return [f"results/{wildcards.experiment}/trials/trial-{i:03d}" for i in range(n)]


def trial_metrics(wildcards):
    return [f"{t}/val_metrics.json" for t in trials(wildcards)]


def experiment_params(wildcards):
    return json.dumps(config["experiments"][wildcards.experiment], sort_keys=True)
