"""Evaluation of the test predictions: lesion matching (``detection``), FROC/AP/AUROC (``froc``),
bootstrap CIs and classification metrics (``stats``), plots (``plots``), the per-experiment
evaluation (``evaluation``, writes ``results/{experiment}/eval/``) and the headline summary
(``summarise``, writes ``results/summary.json``). It reads the files of ``infer`` and ``learn`` and
never imports them: only ``core``, ``data`` and ``track``.
"""
