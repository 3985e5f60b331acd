# Test-set inference: the only reader of the test split.


rule predict:
    input:
        selected="results/{experiment}/selected.json",
        splits="results/splits.json",
        manifest=MANIFEST,
        images=preprocessed,
        classes="results/patches/classes.json",
        code=code("predict"),
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
