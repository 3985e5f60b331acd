# Learning: the patient-level split with a locked test set, label-balanced patches of the
# train/val scans, then the random search (one DAG job per trial), the choice on validation, the
# fold models of a k-fold ensemble (split.n_folds > 1) and the model package.

# light jobs run in the main Snakemake process, never submitted to a cluster
localrules:
    split,
    search_init,
    rung,
    choose,
    package,


rule split:
    input:
        manifest=MANIFEST,
        code=code("split"),
    output:
        json="results/splits.json",
    params:
        cfg=section("split"),
        seed=SEED,
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    shell:
        "mripipe split --manifest {input.manifest} --seed {params.seed} --params {params.cfg:q} "
        "--out {output.json} --log {log}"


# The patch cache, written whole into results/patches (see mripipe.learn.patches): the files
# declared here are the ones the training and package jobs read.
rule patches:
    input:
        manifest=MANIFEST,
        splits="results/splits.json",
        meta="results/manifest.json",
        scans=get_preprocessed,
        code=code("patches"),
    output:
        index="results/patches/index.tsv",
        volumes="results/patches/volumes.tsv",
        classes="results/patches/classes.json",
        meta="results/patches/patches.json",
    params:
        cfg=section("patches"),
        labels=json.dumps(config["data"]["labels"], sort_keys=True),
        preprocessed=PREPROCESSED,
        seed=SEED,
        out_dir=get_output_dir,
    log:
        "logs/patches.log",
    benchmark:
        "benchmarks/patches.tsv"
    resources:
        mem_mb=2000,
    shell:
        "mripipe patches --manifest {input.manifest} --splits {input.splits} "
        "--preprocessed {params.preprocessed} --seed {params.seed} --params {params.cfg:q} "
        "--labels {params.labels:q} --manifest-meta {input.meta} --out-dir {params.out_dir} --log {log}"


# Random search: one MLflow parent run per experiment, one DAG job per trial, then selection on
# the validation metric only. A trial asks for `gpu=1`: with `--resources gpu=N` at most N run at
# once, each on its own device; on a CPU machine the resource is unconstrained.


rule search_init:
    input:
        manifest=MANIFEST,
        splits="results/splits.json",
        code=code("search-init"),
    output:
        json="results/{experiment}/search.json",
    params:
        cfg=get_experiment_params,
        uri=config["tracking"]["uri"],
        dataset=Path(config["data"]["root"]).name,
        seed=TRAIN_SEED,
    log:
        "logs/{experiment}/search_init.log",
    shell:
        "mripipe search-init --experiment {wildcards.experiment} --tracking-uri {params.uri:q} "
        "--train-seed {params.seed} "
        "--params {params.cfg:q} --manifest {input.manifest} --splits {input.splits} "
        "--dataset-name {params.dataset:q} --out {output.json} --log {log}"


# One definition of training: rule train runs a trial of the search from scratch; train_rung
# (successive halving) and train_fold (k-fold ensembles) below are this rule with their own
# outputs, log, benchmark and what picks the trial (params.job, and the input it reads), so
# they run the same command with the same resources.
rule train:
    input:
        unpack(get_train_inputs),
        scans=get_preprocessed,
        code=code("train"),
    output:
        params="results/{experiment}/trials/{trial}/params.json",
        checkpoint="results/{experiment}/trials/{trial}/checkpoint.pt",
        history="results/{experiment}/trials/{trial}/history.tsv",
        metrics="results/{experiment}/trials/{trial}/val_metrics.json",
        curves=report("results/{experiment}/trials/{trial}/history.png", caption="../report/history.rst",
                      category="Training", subcategory="{experiment}",
                      labels={"figure": "learning curves", "trial": "{trial}"}),
    params:
        job=get_trial_job,
        cfg=get_experiment_params,
        budget=get_rung_budget,
        patches=get_patches_dir,
        preprocessed=PREPROCESSED,
        seed=TRAIN_SEED,
        cpu_isa=CPU_ISA,
        out_dir=get_output_dir,
    log:
        "logs/{experiment}/{trial}.log",
    benchmark:
        "benchmarks/{experiment}/{trial}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=3000,
        # a resource, not a param: packing trials onto GPUs never re-runs one
        trials_per_gpu=config["train"]["trials_per_gpu"],
        loader_workers=config["train"]["loader_workers"],
    shell:
        "mripipe train --experiment {wildcards.experiment} {params.job} "
        "--trials-per-gpu {resources.trials_per_gpu} --loader-workers {resources.loader_workers} "
        "--patches {params.patches} --splits {input.splits} --preprocessed {params.preprocessed} "
        "--manifest {input.manifest} --search {input.search} --seed {params.seed} --budget {params.budget} "
        "--params {params.cfg:q} --threads {threads} --out-dir {params.out_dir} --log {log}"


# Successive halving (search.rungs > 1, see mripipe.learn.halving): `rung` ranks rung r on
# validation; slot k of rung r+1 continues the k-th survivor from its own last.pt to the larger
# budget. Trial ids come from the rung file at run time, so the DAG stays static.


rule rung:
    input:
        unpack(get_rung_inputs),
        code=code("rung"),
    output:
        json="results/{experiment}/rungs/rung-{rung}.json",
    params:
        cfg=get_experiment_params,
        args=get_rung_args,
    log:
        "logs/{experiment}/rung-{rung}.log",
    wildcard_constraints:
        rung=r"\d+",
    shell:
        "mripipe rung --experiment {wildcards.experiment} --rung {wildcards.rung} {params.args} "
        "--params {params.cfg:q} --out {output.json} --log {log}"


# `use rule ... with:` replaces input, output, log, benchmark and wildcard_constraints whole and
# params by name (budget: get_rung_budget reads the rung wildcard).
use rule train as train_rung with:
    input:
        unpack(get_train_inputs),
        scans=get_preprocessed,
        rung=get_promoted_from,
        code=code("train"),
    output:
        params="results/{experiment}/rungs/{rung}/slot-{slot}/params.json",
        checkpoint="results/{experiment}/rungs/{rung}/slot-{slot}/checkpoint.pt",
        history="results/{experiment}/rungs/{rung}/slot-{slot}/history.tsv",
        metrics="results/{experiment}/rungs/{rung}/slot-{slot}/val_metrics.json",
        curves=report("results/{experiment}/rungs/{rung}/slot-{slot}/history.png",
                      caption="../report/history.rst", category="Training", subcategory="{experiment}",
                      labels={"figure": "learning curves", "trial": "rung {rung} slot {slot}"}),
    params:
        job=get_promote_job,
    log:
        "logs/{experiment}/rung-{rung}-slot-{slot}.log",
    benchmark:
        "benchmarks/{experiment}/rung-{rung}-slot-{slot}.tsv"
    wildcard_constraints:
        rung=r"[1-9]\d*",
        slot=r"\d+",


# The choice comes first (choice.json), then the fold jobs train it on the other folds
# (split.n_folds > 1), then package writes the package from the fold models and selected.json.


rule choose:
    input:
        metrics=get_final_metrics,
        rungs=get_ladder_files,
        code=code("choose"),
    output:
        json="results/{experiment}/choice.json",
    params:
        cfg=get_experiment_params,
        trials=get_trial_dirs,
        ladder=get_ladder_args,
    log:
        "logs/{experiment}/choose.log",
    shell:
        "mripipe choose --experiment {wildcards.experiment} --trials {params.trials} "
        "--params {params.cfg:q} --out {output.json} {params.ladder} --log {log}"


use rule train as train_fold with:
    input:
        unpack(get_train_inputs),
        scans=get_preprocessed,
        choice="results/{experiment}/choice.json",
        code=code("train"),
    output:
        params="results/{experiment}/folds/fold-{fold}/params.json",
        checkpoint="results/{experiment}/folds/fold-{fold}/checkpoint.pt",
        history="results/{experiment}/folds/fold-{fold}/history.tsv",
        metrics="results/{experiment}/folds/fold-{fold}/val_metrics.json",
        curves=report("results/{experiment}/folds/fold-{fold}/history.png",
                      caption="../report/history.rst", category="Training", subcategory="{experiment}",
                      labels={"figure": "learning curves", "trial": "selected, fold {fold}"}),
    params:
        job=get_fold_job,
        budget=get_full_budget,
    log:
        "logs/{experiment}/fold-{fold}.log",
    benchmark:
        "benchmarks/{experiment}/fold-{fold}.tsv"
    wildcard_constraints:
        fold=r"\d+",


rule package:
    input:
        choice="results/{experiment}/choice.json",
        folds=get_fold_metrics,
        search="results/{experiment}/search.json",
        manifest=MANIFEST,
        splits="results/splits.json",
        fingerprint="results/fingerprint.json",
        patches_volumes="results/patches/volumes.tsv",
        patches_meta="results/patches/patches.json",
        scans=get_preprocessed,
        code=code("package"),
    output:
        json="results/{experiment}/selected.json",
        model=directory("results/{experiment}/model"),
    params:
        cfg=get_experiment_params,
        package=get_package_params,
        folds=get_fold_args,
        patches=get_patches_dir,
        preprocessed=PREPROCESSED,
    log:
        "logs/{experiment}/package.log",
    shell:
        "mripipe package --experiment {wildcards.experiment} --choice {input.choice} "
        "--search {input.search} --params {params.cfg:q} --out {output.json} "
        "--model-dir {output.model} --manifest {input.manifest} --splits {input.splits} "
        "--fingerprint {input.fingerprint} --patches {params.patches} "
        "--preprocessed {params.preprocessed} --package-params {params.package:q} {params.folds} "
        "--log {log}"
