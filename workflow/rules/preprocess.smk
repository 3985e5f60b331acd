# Per-scan preprocessing into template space, the dataset fingerprint, and the QC table.


rule fingerprint:
    input:
        manifest="results/manifest.tsv",
        code=code("fingerprint"),
    output:
        json="results/fingerprint.json",
    params:
        cfg=section("preprocess"),
    log:
        "logs/fingerprint.log",
    benchmark:
        "benchmarks/fingerprint.tsv"
    shell:
        "mripipe fingerprint --manifest {input.manifest} --params {params.cfg:q} "
        "--out {output.json} --log {log}"


rule preprocess:
    input:
        unpack(raw_files),
        unpack(spacing_inputs),
        code=code("preprocess"),
    output:
        image="results/preprocessed/{scan}/image.nii.gz",
        label="results/preprocessed/{scan}/label.nii.gz",
        brainmask="results/preprocessed/{scan}/brainmask.nii.gz",
        transform="results/preprocessed/{scan}/transform.tfm",
        qc_json="results/preprocessed/{scan}/qc.json",
        qc_png="results/preprocessed/{scan}/qc.png",
    params:
        cfg=section("preprocess"),
        scan=scan_args,
        spacing=spacing_args,
        out_dir="results/preprocessed/{scan}",
    log:
        "logs/preprocess/{scan}.log",
    benchmark:
        "benchmarks/preprocess/{scan}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
    shell:
        "mripipe preprocess --scan {wildcards.scan} {params.scan} {params.spacing} "
        "--params {params.cfg:q} --threads {threads} --seed {SEED} "
        "--out-dir {params.out_dir} --log {log}"


rule qc_table:
    input:
        qc=qc_files,
        code=code("qc-table"),
    output:
        tsv="results/preprocessed/qc.tsv",
        plot=report("results/preprocessed/qc.png", caption="../report/qc.rst", category="Preprocessing"),
    log:
        "logs/qc_table.log",
    shell:
        "mripipe qc-table --qc {input.qc} --out {output.tsv} --plot {output.plot} --log {log}"
