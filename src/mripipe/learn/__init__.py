"""Learning: the patient-level split (``split``, writes ``results/splits.json``), patches and
classification volumes (``patches``, writes ``results/patches/``), seeded loaders (``loader``),
MONAI networks and inference helpers (``networks``), the optimisation loop (``loop``),
validation on whole scans (``monitor``), a trial's typed parameters (``trial_params``) and the
random search over them (``search``), one trial (``train``, writes
``results/{experiment}/trials/{trial}/``; ``checkpoint`` owns ``checkpoint.pt`` and ``last.pt``,
``resume`` continues the latter), successive halving as DAG rungs (``halving``, ``rung``:
``results/{experiment}/rungs/``) and selection on validation only (``choose``, ``package``,
writes ``results/{experiment}/selected.json`` and the model package).
Imports ``core``, ``data`` and ``track``; never reads the test subjects.
"""
