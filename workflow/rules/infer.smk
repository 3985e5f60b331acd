# Test-set inference with the model package: the only reader of the test split.


rule predict:
    input:
        model="results/{experiment}/model",
        splits="results/splits.json",
        manifest=MANIFEST,
        scans=get_preprocessed,
        code=code("predict"),
    output:
        directory("results/{experiment}/predictions"),
    params:
        cfg=section("predict"),
        preprocessed=PREPROCESSED,
        cpu_isa=CPU_ISA,
    log:
        "logs/{experiment}/predict.log",
    benchmark:
        "benchmarks/{experiment}/predict.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=3000,
    shell:
        "mripipe predict --experiment {wildcards.experiment} --model {input.model} "
        "--splits {input.splits} --manifest {input.manifest} --preprocessed {params.preprocessed} "
        "--params {params.cfg:q} --threads {threads} --out-dir {output} --log {log}"
