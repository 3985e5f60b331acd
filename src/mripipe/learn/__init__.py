"""Learning: the patient-level split (``split``, writes ``results/splits.json``), patches and
classification volumes (``patches``, writes ``results/patches/``), seeded loaders (``loader``),
MONAI networks and inference helpers (``networks``), the optimisation loop (``trainer``),
validation on whole scans (``validators``), the random search space (``search``), one trial
(``train``, writes ``results/{experiment}/trials/{trial}/``; ``resume`` continues its ``last.pt``),
successive halving as DAG rungs (``ladder``, ``rungs``: ``results/{experiment}/rungs/``) and
selection on validation only (``select``, writes ``results/{experiment}/selected.json``).
Imports ``core``, ``data`` and ``track``; never reads the test subjects.
"""
