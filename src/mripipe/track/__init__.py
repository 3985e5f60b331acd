"""MLflow tracking: the store, the search's parent run, trial runs, the evaluation run and the
tracking server. Imports ``core`` only.

Modules:

- ``dataset``: the data a search saw, as an MLflow dataset input.
- ``eval_run``: the MLflow evaluation run: test metrics, tables and plots, linked to the trial.
- ``server``: ``mripipe tracking-server``: one MLflow server for many concurrent trials.
- ``tracking``: ``mripipe search-init`` and the store, parent and trial run helpers.
"""
