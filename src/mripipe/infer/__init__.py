"""Inference with the model package: ``package`` loads ``results/{experiment}/model/`` (a folder
or an MLflow ``models:/`` URI) and applies it; ``predict`` runs it on the test split (the only
reader of the test subjects' images) and writes ``results/{experiment}/predictions/`` on the raw
reference grid (``{scan}_prob``/``{scan}_seg``) or class scores; ``run`` is ``mripipe infer`` on
new raw scans; ``mlflow_model`` is the pyfunc wrapping the same package. Imports ``core``,
``data``, ``preprocess`` and ``learn``.
"""
