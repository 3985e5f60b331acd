"""Learning: the patient-level split, the patch cache, the seeded search with successive halving
(one DAG job per trial and rung), the choice on validation only and the model package. Imports
``core``, ``data`` and ``track``; never reads the test subjects.

Modules:

- ``augment``: on-the-fly training augmentation: the MONAI recipe.
- ``checkpoint``: ``checkpoint.pt`` and ``last.pt``: their fields, ``save`` and ``load`` (weights only).
- ``choose``: ``mripipe choose``: the best trial on the validation metric (``choice.json``).
- ``folds``: k-fold selection: fold jobs of the chosen trial and the fold ensemble's members.
- ``halving``: successive halving: the ladder of rungs, their budgets, survivors and promotion.
- ``loader``: training data loaders over the cached scans and classification volumes.
- ``loop``: the optimisation loop: optimiser, schedule, AMP, early stopping, exact resumption.
- ``losses``: the training losses of a trial.
- ``monitor``: validation during training: whole-scan Dice, classification balanced accuracy.
- ``networks``: the MONAI network factory, trained-model loading and whole-volume inference.
- ``package``: ``mripipe package``: the model package of the chosen trial and ``selected.json``.
- ``patches``: ``mripipe patches``: cached train/val volumes and classification volumes.
- ``postprocess``: post-processing of the selected model, chosen on validation only.
- ``resume``: ``last.pt``: the random state it saves and which one a job continues.
- ``rung``: ``mripipe rung``: rank a rung on validation, write who goes on.
- ``sampling``: online patch sampling with foreground oversampling.
- ``search``: the seeded random search space and a trial's sampled values.
- ``split``: ``mripipe split``: patient-level stratified split with a locked test set.
- ``train``: ``mripipe train``: one trial (or a rung slot, or a fold) tracked as an MLflow run.
- ``trial_params``: a trial's typed parameters (``TrialParams``), defaults built in one place.
"""
