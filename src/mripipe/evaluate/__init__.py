"""Evaluation of the test predictions, the summary, the report pages and the reproduction of the
published result. Lesion matching and FROC live in ``core`` (validation uses them too). It reads
the files of ``infer`` and ``learn`` and never imports them: only ``core``, ``data`` and ``track``.

Modules:

- ``classes``: multi-class segmentation scores: per class, per region, detection per class.
- ``compare``: a reproduced summary against a published one, metric by metric, and the tolerance.
- ``evaluate_detection``: ``mripipe evaluate-detection``: lesion-level FROC/AP of any folders of maps.
- ``hashes``: ``mripipe hashes``: a content hash of every stage's outputs, and where two runs part.
- ``evaluate_experiment``: ``mripipe evaluate``: one experiment's test metrics with bootstrap CIs.
- ``labelmap``: the label map of a multi-class segmentation and what evaluation scores of it.
- ``plots``: evaluation plots: FROC, confusion, ROC, Dice, overlays.
- ``report``: ``mripipe report-training`` and ``report-data``: pages of the Snakemake report.
- ``reproduce``: ``mripipe reproduce`` and ``publish``: a clean run of HEAD in a fresh copy.
- ``scoring``: per-scan segmentation scores: Dice, HD95, volumes, lesion detection.
- ``spread``: the seed spread of a published result and the tolerance it gives.
- ``stats``: classification metrics and subject-level bootstrap confidence intervals.
- ``summarise``: ``mripipe summarise`` (``results/summary.json``) and ``mripipe where``.
"""
