# Evaluation of the test predictions and the summary of every experiment.

# light jobs run in the main Snakemake process, never submitted to a cluster
localrules:
    summarise,


rule evaluate:
    input:
        predictions="results/{experiment}/predictions",
        selected="results/{experiment}/selected.json",
        splits="results/splits.json",
        manifest=MANIFEST,
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
    log:
        "logs/{experiment}/evaluate.log",
    benchmark:
        "benchmarks/{experiment}/evaluate.tsv"
    shell:
        "mripipe evaluate --experiment {wildcards.experiment} --predictions {input.predictions} "
        "--selected {input.selected} --splits {input.splits} --manifest {input.manifest} "
        "--preprocessed results/preprocessed --seed {SEED} --params {params.cfg:q} "
        "--out-dir {output} --log {log}"


rule summarise:
    input:
        evals=expand("results/{experiment}/eval", experiment=EXPERIMENTS),
        excluded="results/excluded.tsv",
        code=code("summarise"),
    output:
        json=report("results/summary.json", caption="../report/summary.rst", category="Summary"),
    params:
        metrics=expand("results/{experiment}/eval/metrics.json", experiment=EXPERIMENTS),
    log:
        "logs/summarise.log",
    shell:
        "mripipe summarise --metrics {params.metrics} --excluded {input.excluded} --out {output.json} --log {log}"
