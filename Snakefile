# mripipe: raw MRI -> evaluated, tracked, versioned model. Thin by design: every rule calls the
# `mripipe` CLI; the logic lives in src/mripipe/. See README.md and workflow/rules/.
from snakemake.utils import min_version, validate

min_version("9.0")


# The default config, unless config files are given on the command line: then they are the
# whole config (a recipe, the e2e config), and the schema fills every key they leave out.
# Snakemake would otherwise merge them into this file's experiments and phantom settings.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/learn.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        "results/summary.json",
        "results/stages.json",
        "results/preprocessed/qc.tsv",
        "results/data.html",
        expand("results/{experiment}/training/card.html", experiment=EXPERIMENTS),
    default_target: True
