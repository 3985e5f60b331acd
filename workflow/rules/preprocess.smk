# Per-scan preprocessing into template space, the dataset fingerprint, and the QC table.


rule fingerprint:
    input:
        manifest="results/manifest.valid.tsv",
        images=get_valid_images,
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
        unpack(get_raw_files),
        unpack(get_spacing_inputs),
        code=code("preprocess"),
    output:
        # image.nii.gz, label.nii.gz, brainmask.nii.gz, transform.tfm, qc.json, qc.png and
        # status.json; a scan that fails keeps only status.json (why) and does not block others
        report(directory("results/preprocessed/{scan}"), patterns=["{name}.png"],
               caption="../report/qc_scan.rst", category="Preprocessing", subcategory="QC gallery",
               labels={"scan": "{scan}"}),
    params:
        cfg=section("preprocess"),
        scan=get_scan_args,
        spacing=get_spacing_args,
        seed=SEED,
        label_grid=LABEL_GRID,
    log:
        "logs/preprocess/{scan}.log",
    benchmark:
        "benchmarks/preprocess/{scan}.tsv"
    threads: 1
    resources:
        # from the raw files' header sizes (mripipe.preprocess.memory), at most
        # preprocess.max_mem_mb; the job refuses a scan above it and limits itself to it
        mem_mb=get_preprocess_mem_mb,
    shell:
        "mripipe preprocess --scan {wildcards.scan} {params.scan} {params.spacing} "
        "--params {params.cfg:q} --label-grid {params.label_grid:q} --threads {threads} "
        "--seed {params.seed} --mem-mb {resources.mem_mb} --out-dir {output} --log {log}"


checkpoint ready:
    input:
        scans=get_attempted,
        valid="results/manifest.valid.tsv",
        validation="results/validation.tsv",
        code=code("ready"),
    output:
        tsv=MANIFEST,
        excluded="results/excluded.tsv",
    params:
        preprocessed=PREPROCESSED,
        cfg=section("preprocess"),  # the registration outlier test's settings
    log:
        "logs/ready.log",
    shell:
        "mripipe ready --manifest {input.valid} --validation {input.validation} "
        "--preprocessed {params.preprocessed} --params {params.cfg:q} --out {output.tsv} "
        "--excluded {output.excluded} --log {log}"


rule qc_table:
    input:
        scans=get_preprocessed,
        code=code("qc-table"),
    output:
        tsv="results/preprocessed/qc.tsv",
        plot=report("results/preprocessed/qc.png", caption="../report/qc.rst", category="Preprocessing"),
    params:
        qc=get_qc_files,
        cfg=section("preprocess"),  # registration_ncc_min_sd
    log:
        "logs/qc_table.log",
    shell:
        "mripipe qc-table --qc {params.qc} --params {params.cfg:q} --out {output.tsv} "
        "--plot {output.plot} --log {log}"
