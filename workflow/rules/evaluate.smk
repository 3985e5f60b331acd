# Evaluation of the test predictions and the summary of every experiment.
from mripipe.evaluate.labelmap import label_spec  # noqa: E402

# evaluate.regions and evaluate.detection_classes name classes of the label map: with a map in the
# config that is checked now, before any job runs (a dataset.json's map is checked by evaluate).
if config["data"].get("labels"):
    label_spec(config["data"]["labels"], config["evaluate"])

# light jobs run in the main Snakemake process, never submitted to a cluster
localrules:
    summarise,
    hashes,
    report_training,
    report_data,


rule evaluate:
    input:
        predictions="results/{experiment}/predictions",
        selected="results/{experiment}/selected.json",
        splits="results/splits.json",
        manifest=MANIFEST,
        scans=get_preprocessed,
        code=code("evaluate"),
    output:
        report(
            directory("results/{experiment}/eval"),
            patterns=["{name}.png"],
            caption="../report/evaluate.rst",
            category="Evaluation",
            subcategory="{experiment}",
        ),
    params:
        cfg=section("evaluate"),
        preprocessed=PREPROCESSED,
        seed=SEED,
        label_grid=LABEL_GRID,
    log:
        "logs/{experiment}/evaluate.log",
    benchmark:
        "benchmarks/{experiment}/evaluate.tsv"
    shell:
        "mripipe evaluate --experiment {wildcards.experiment} --predictions {input.predictions} "
        "--selected {input.selected} --splits {input.splits} --manifest {input.manifest} "
        "--preprocessed {params.preprocessed} --seed {params.seed} --params {params.cfg:q} "
        "--label-grid {params.label_grid:q} --out-dir {output} --log {log}"


rule summarise:
    input:
        evals=expand("results/{experiment}/eval", experiment=EXPERIMENTS),
        excluded="results/excluded.tsv",
        code=code("summarise"),
    output:
        json=report("results/summary.json", caption="../report/summary.rst", category="Summary"),
    params:
        metrics=get_metrics_files,
    log:
        "logs/summarise.log",
    shell:
        "mripipe summarise --metrics {params.metrics} --excluded {input.excluded} --out {output.json} --log {log}"


# What reproduce compares stage by stage (mripipe.evaluate.hashes): a content hash of every
# stage's outputs, and the kernel dispatch in effect.
rule hashes:
    input:
        unpack(get_hash_inputs),
        scans=get_preprocessed,
        code=code("hashes"),
    output:
        json="results/stages.json",
    params:
        patches=get_patches_dir,
        cpu_isa=CPU_ISA,
    log:
        "logs/hashes.log",
    shell:
        "mripipe hashes --scans {input.scans} --patches {params.patches} "
        "--checkpoints {input.checkpoints} --models {input.models} --predictions {input.predictions} "
        "--cpu-isa {params.cpu_isa} --out {output.json} --log {log}"


# Report pages around the metrics: the search comparison and the selected model's card (category
# Training), and the data validation table with the excluded scans (category Data).
rule report_training:
    input:
        metrics=get_trial_metrics,
        selected="results/{experiment}/selected.json",
        evals="results/{experiment}/eval",
        code=code("report-training"),
    output:
        search=report("results/{experiment}/training/search.png", caption="../report/search.rst",
                      category="Training", subcategory="{experiment}", labels={"figure": "search comparison", "trial": "all trials"}),
        table="results/{experiment}/training/search.tsv",
        history="results/{experiment}/training/history.tsv",
        card=report("results/{experiment}/training/card.html", caption="../report/card.rst",
                    category="Training", subcategory="{experiment}", labels={"figure": "selected model card", "trial": "selected"}),
    params:
        cfg=get_experiment_params,
        trials=get_trial_dirs,
        out_dir=get_output_dir,
    log:
        "logs/{experiment}/report_training.log",
    shell:
        "mripipe report-training --experiment {wildcards.experiment} --trials {params.trials} "
        "--selected {input.selected} --metrics {input.evals}/metrics.json --params {params.cfg:q} "
        "--out-dir {params.out_dir} --log {log}"


rule report_data:
    input:
        validation="results/validation.tsv",
        excluded="results/excluded.tsv",
        code=code("report-data"),
    output:
        html=report("results/data.html", caption="../report/data.rst", category="Data"),
    log:
        "logs/report_data.log",
    shell:
        "mripipe report-data --validation {input.validation} --excluded {input.excluded} "
        "--out {output.html} --log {log}"
