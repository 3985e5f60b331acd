# Test-set inference (the only reader of the test split), evaluation, and the summary.


rule predict:
    input:
        selected="results/{experiment}/selected.json",
        splits="results/splits.json",
        manifest="results/manifest.tsv",
        images=preprocessed,
        classes="results/patches/classes.json",
        code=code("predict", "models", "patches", "stats"),
    output:
        directory("results/{experiment}/predictions"),
    params:
        cfg=section("predict"),
    log:
        "logs/{experiment}/predict.log",
    benchmark:
        "benchmarks/{experiment}/predict.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=3000,
    shell:
        "mripipe predict --experiment {wildcards.experiment} --selected {input.selected} "
        "--splits {input.splits} --manifest {input.manifest} --preprocessed results/preprocessed "
        "--patches results/patches --params {params.cfg:q} --threads {threads} --out-dir {output} "
        "--log {log}"


rule evaluate:
    input:
        predictions="results/{experiment}/predictions",
        selected="results/{experiment}/selected.json",
        splits="results/splits.json",
        manifest="results/manifest.tsv",
        code=code("evaluate", "detection", "froc", "stats", "plots", "evaltrack"),
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
        code=code("summarise", "froc"),
    output:
        json=report("results/summary.json", caption="../report/summary.rst", category="Summary"),
    params:
        metrics=expand("results/{experiment}/eval/metrics.json", experiment=EXPERIMENTS),
    log:
        "logs/summarise.log",
    shell:
        "mripipe summarise --metrics {params.metrics} --out {output.json} --log {log}"
