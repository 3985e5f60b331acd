"""MLflow tracking: the store, the search's parent run, trial runs, the evaluation run, the
tracking server and the UI's links. Imports ``core`` only.

Modules:

- ``dataset``: the data a search saw, as an MLflow dataset input.
- ``eval_run``: the MLflow evaluation run: test metrics, tables and plots, linked to the trial.
- ``search_init``: ``mripipe search-init``: the MLflow experiment and the parent run of a search.
- ``server``: ``mripipe tracking-server``: one MLflow server for many concurrent trials.
- ``tracking``: the store, experiments and trial runs: the helpers every MLflow writer uses.
- ``ui``: ``mripipe ui``: the MLflow UI, with links to each experiment's trials compared.
"""
