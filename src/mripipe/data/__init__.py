"""Data in: the built-in phantom generator (``phantom``, writes ``data/phantom/`` as BIDS with its
ground truth) and the dataset index (``manifest``, reads a dataset root and writes
``results/manifest.tsv``, one row per scan). Only the phantom generator ever writes under
``data/``, and only into an empty folder. Imports ``core`` only.
"""
