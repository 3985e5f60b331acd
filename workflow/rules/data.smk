# Data in: the phantom generator (only when data.source is phantom) and the manifest of every scan.

if SOURCE == "phantom":

    rule phantom:
        input:
            code=code("phantom"),
        output:
            # the whole folder: a changed generator regenerates the cohort from scratch
            root=directory(config["data"]["root"]),
        params:
            cfg=section("phantom"),
            root=config["data"]["root"],
        log:
            "logs/phantom.log",
        benchmark:
            "benchmarks/phantom.tsv"
        threads: workflow.cores
        resources:
            mem_mb=3000,
        shell:
            "mripipe phantom --out {params.root} --seed {SEED} --workers {threads} "
            "--params {params.cfg:q} --log {log}"


def dataset_index(wildcards):
    """The phantom folder (its rule's output), or a user's participants table when present."""
    if SOURCE == "phantom":
        return [config["data"]["root"]]
    path = Path(config["data"]["root"]) / "participants.tsv"
    return [str(path)] if path.is_file() else []


checkpoint manifest:
    input:
        dataset=dataset_index,
        code=code("manifest"),
    output:
        tsv="results/manifest.tsv",
    params:
        root=config["data"]["root"],
        channels=config["data"]["channels"],
        label=config["data"]["label"],
    log:
        "logs/manifest.log",
    benchmark:
        "benchmarks/manifest.tsv"
    shell:
        "mripipe manifest --root {params.root} --channels {params.channels} "
        "--label {params.label} --out {output.tsv} --log {log}"
