"""Inference with the model package: on the test split (the only reader of the test subjects'
images) and on new raw scans. Imports ``core``, ``data``, ``preprocess`` and ``learn``.

Modules:

- ``apply``: load a model package (folder or MLflow URI) and apply it.
- ``ensemble``: a package's network: one model, or the mean of a fold ensemble's members.
- ``mlflow_model``: the MLflow pyfunc model of a package (models from code).
- ``predict``: ``mripipe predict``: the package on the test scans, outputs on each raw grid.
- ``run``: ``mripipe infer``: the package on new raw scans.
"""
