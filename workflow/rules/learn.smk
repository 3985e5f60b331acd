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
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    shell:
        "mripipe split --manifest {input.manifest} --seed {SEED} --params {params.cfg:q} "
        "--out {output.json} --log {log}"


rule patches:
    input:
        manifest=MANIFEST,
        splits="results/splits.json",
        meta="results/manifest.json",
        images=preprocessed,
        code=code("patches"),
    output:
        index="results/patches/index.tsv",
        volumes="results/patches/volumes.tsv",
        classes="results/patches/classes.json",
    params:
        cfg=section("patches"),
        labels=json.dumps(config["data"]["labels"], sort_keys=True),
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
        cfg=experiment_params,
        uri=config["tracking"]["uri"],
        dataset=Path(config["data"]["root"]).name,
    log:
        "logs/{experiment}/search_init.log",
    shell:
        "mripipe search-init --experiment {wildcards.experiment} --tracking-uri {params.uri:q} "
        "--params {params.cfg:q} --manifest {input.manifest} --splits {input.splits} "
        "--dataset-name {params.dataset:q} --out {output.json} --log {log}"


rule train:
    input:
        index="results/patches/index.tsv",
        splits="results/splits.json",
        manifest=MANIFEST,
        search="results/{experiment}/search.json",
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
        cfg=experiment_params,
        budget=rung_budget,
        out_dir="results/{experiment}/trials/{trial}",
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
        "mripipe train --experiment {wildcards.experiment} --trial {wildcards.trial} "
        "--trials-per-gpu {resources.trials_per_gpu} --loader-workers {resources.loader_workers} "
        "--patches results/patches --splits {input.splits} --preprocessed results/preprocessed "
        "--manifest {input.manifest} --search {input.search} --seed {SEED} --budget {params.budget} "
        "--params {params.cfg:q} --threads {threads} --out-dir {params.out_dir} --log {log}"


# Successive halving (search.rungs > 1, see mripipe.learn.halving): `rung` ranks rung r on
# validation; slot k of rung r+1 continues the k-th survivor from its own last.pt to the larger
# budget. Trial ids come from the rung file at run time, so the DAG stays static.


rule rung:
    input:
        unpack(rung_inputs),
        code=code("rung"),
    output:
        json="results/{experiment}/rungs/rung-{rung}.json",
    params:
        cfg=experiment_params,
        args=rung_args,
    log:
        "logs/{experiment}/rung-{rung}.log",
    wildcard_constraints:
        rung=r"\d+",
    shell:
        "mripipe rung --experiment {wildcards.experiment} --rung {wildcards.rung} {params.args} "
        "--params {params.cfg:q} --out {output.json} --log {log}"


rule train_rung:
    input:
        rung=promoted_from,
        index="results/patches/index.tsv",
        splits="results/splits.json",
        manifest=MANIFEST,
        search="results/{experiment}/search.json",
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
        cfg=experiment_params,
        budget=rung_budget,
        out_dir="results/{experiment}/rungs/{rung}/slot-{slot}",
    log:
        "logs/{experiment}/rung-{rung}-slot-{slot}.log",
    benchmark:
        "benchmarks/{experiment}/rung-{rung}-slot-{slot}.tsv"
    wildcard_constraints:
        rung=r"[1-9]\d*",
        slot=r"\d+",
    threads: 1
    resources:
        gpu=1,
        mem_mb=3000,
        trials_per_gpu=config["train"]["trials_per_gpu"],
        loader_workers=config["train"]["loader_workers"],
    shell:
        "mripipe train --experiment {wildcards.experiment} --promote {input.rung} "
        "--slot {wildcards.slot} --trials-per-gpu {resources.trials_per_gpu} --loader-workers {resources.loader_workers} "
        "--patches results/patches --splits {input.splits} --preprocessed results/preprocessed "
        "--manifest {input.manifest} --search {input.search} --seed {SEED} --budget {params.budget} "
        "--params {params.cfg:q} --threads {threads} --out-dir {params.out_dir} --log {log}"


def package_params(wildcards):
    """What the model package records besides the trial: preprocessing, window, threshold, seed,
    and the evaluation's lesion matching (the candidate threshold is chosen with it)."""
    ev = config["evaluate"]
    matching = {k: ev[k] for k in ("min_overlap", "overlap_measure", "interpolate")}
    # multi-class: which class's candidates package chooses the threshold on (only when set, so a
    # binary run's command line is unchanged)
    matching |= {k: ev[k] for k in ("detection_classes", "regions", "candidate_threshold") if ev[k]}
    return json.dumps({"preprocess": config["preprocess"], "predict": config["predict"],
                       "threshold": ev["threshold"], "evaluate": matching, "seed": SEED}, sort_keys=True)


# The choice comes first (choice.json), then the fold jobs train it on the other folds
# (split.n_folds > 1), then package writes the package from the fold models and selected.json.


rule choose:
    input:
        metrics=final_metrics,
        rungs=ladder_files,
        code=code("choose"),
    output:
        json="results/{experiment}/choice.json",
    params:
        cfg=experiment_params,
        trials=final_trials,
        ladder=ladder_args,
    log:
        "logs/{experiment}/choose.log",
    shell:
        "mripipe choose --experiment {wildcards.experiment} --trials {params.trials} "
        "--params {params.cfg:q} --out {output.json} {params.ladder} --log {log}"


rule train_fold:
    input:
        choice="results/{experiment}/choice.json",
        index="results/patches/index.tsv",
        splits="results/splits.json",
        manifest=MANIFEST,
        search="results/{experiment}/search.json",
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
        cfg=experiment_params,
        budget=full_budget,
        out_dir="results/{experiment}/folds/fold-{fold}",
    log:
        "logs/{experiment}/fold-{fold}.log",
    benchmark:
        "benchmarks/{experiment}/fold-{fold}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    threads: 1
    resources:
        gpu=1,
        mem_mb=3000,
        trials_per_gpu=config["train"]["trials_per_gpu"],
        loader_workers=config["train"]["loader_workers"],
    shell:
        "mripipe train --experiment {wildcards.experiment} --choice {input.choice} "
        "--fold {wildcards.fold} --trials-per-gpu {resources.trials_per_gpu} --loader-workers {resources.loader_workers} "
        "--patches results/patches --splits {input.splits} --preprocessed results/preprocessed "
        "--manifest {input.manifest} --search {input.search} --seed {SEED} --budget {params.budget} "
        "--params {params.cfg:q} --threads {threads} --out-dir {params.out_dir} --log {log}"


rule package:
    input:
        choice="results/{experiment}/choice.json",
        folds=fold_metrics,
        search="results/{experiment}/search.json",
        manifest=MANIFEST,
        splits="results/splits.json",
        fingerprint="results/fingerprint.json",
        patches="results/patches/volumes.tsv",
        code=code("package"),
    output:
        json="results/{experiment}/selected.json",
        model=directory("results/{experiment}/model"),
    params:
        cfg=experiment_params,
        package=package_params,
        folds=fold_args,
    log:
        "logs/{experiment}/package.log",
    shell:
        "mripipe package --experiment {wildcards.experiment} --choice {input.choice} "
        "--search {input.search} --params {params.cfg:q} --out {output.json} "
        "--model-dir {output.model} --manifest {input.manifest} --splits {input.splits} "
        "--fingerprint {input.fingerprint} --patches results/patches "
        "--preprocessed results/preprocessed --package-params {params.package:q} {params.folds} "
        "--log {log}"
