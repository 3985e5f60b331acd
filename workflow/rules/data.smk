# Inputs: the phantom generator (default data) and the manifest of every scan.


rule phantom:
    output:
        participants=f"{config['data']['root']}/participants.tsv",
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


checkpoint manifest:
    input:
        participants=f"{config['data']['root']}/participants.tsv",
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
