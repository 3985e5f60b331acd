# Data in: the phantom generator (only when data.source is phantom) and the manifest of every scan.

# light jobs run in the main Snakemake process, never submitted to a cluster
localrules:
    manifest,

if SOURCE == "phantom":

    rule phantom:
        input:
            code=code("phantom"),
        output:
            # the whole folder: a changed generator regenerates the cohort from scratch
            root=directory(config["data"]["root"]),
        params:
            cfg=section("phantom"),
            seed=SEED,
        log:
            "logs/phantom.log",
        benchmark:
            "benchmarks/phantom.tsv"
        threads: workflow.cores
        resources:
            mem_mb=3000,
        shell:
            "mripipe phantom --out {output.root} --seed {params.seed} --workers {threads} "
            "--params {params.cfg:q} --log {log}"


if SOURCE == "dicom":

    rule dicom:
        input:
            code=code("dicom"),
        output:
            # the converted series (NIfTI + JSON sidecars): a cache, never written into data.root
            directory("results/dicom"),
        params:
            root=config["data"]["root"],
        log:
            "logs/dicom.log",
        shell:
            "mripipe dicom --root {params.root} --out {output} --log {log}"


checkpoint manifest:
    input:
        unpack(get_dataset_index),
        code=code("manifest"),
    output:
        tsv="results/manifest.tsv",
        meta="results/manifest.json",
    params:
        cfg=section("data"),
        dicom=get_dicom_args,
    log:
        "logs/manifest.log",
    benchmark:
        "benchmarks/manifest.tsv"
    shell:
        "mripipe manifest --params {params.cfg:q} {params.dicom} --out {output.tsv} --log {log}"


# Every file opened once: invalid scans are listed in validation.tsv and left out of
# manifest.valid.tsv (data.on_invalid: exclude), or stop the run here (fail).
checkpoint validate:
    input:
        manifest="results/manifest.tsv",
        meta="results/manifest.json",
        files=get_manifest_files,
        code=code("validate"),
    output:
        tsv="results/validation.tsv",
        valid="results/manifest.valid.tsv",
    params:
        cfg=section("data"),
        needs=f"--needs {NEEDS}" if NEEDS else "",
    log:
        "logs/validate.log",
    benchmark:
        "benchmarks/validate.tsv"
    shell:
        "mripipe validate --manifest {input.manifest} --params {params.cfg:q} {params.needs} "
        "--out {output.tsv} --valid {output.valid} --log {log}"
