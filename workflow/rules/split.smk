# Patient-level split with a locked test set, then label-balanced patches of train/val scans.


rule split:
    input:
        manifest="results/manifest.tsv",
        code=code("split"),
    output:
        json="results/splits.json",
    params:
        cfg=section("split"),
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    shell:
        "mripipe split --manifest {input.manifest} --seed {SEED} --params {params.cfg:q} "
        "--out {output.json} --log {log}"


rule patches:
    input:
        manifest="results/manifest.tsv",
        splits="results/splits.json",
        images=preprocessed,
        code=code("patches", "split"),
    output:
        index="results/patches/index.tsv",
        volumes="results/patches/volumes.tsv",
        classes="results/patches/classes.json",
    params:
        cfg=section("patches"),
        out_dir="results/patches",
    log:
        "logs/patches.log",
    benchmark:
        "benchmarks/patches.tsv"
    resources:
        mem_mb=2000,
    shell:
        "mripipe patches --manifest {input.manifest} --splits {input.splits} "
        "--preprocessed results/preprocessed --seed {SEED} --params {params.cfg:q} "
        "--out-dir {params.out_dir} --log {log}"
