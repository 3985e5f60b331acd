"""MLflow tracking: the store, the parent search run and trial runs (``tracking``, writes
``results/{experiment}/search.json``, ``mlflow.db`` and ``mlartifacts/``) and logging of test
metrics onto the search run (``evaluation``). Imports ``core`` only.
"""
