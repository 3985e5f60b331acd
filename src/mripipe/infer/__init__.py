"""Inference: the only reader of the test split (``predict``). Reads ``selected.json``, the
selected trial's checkpoint and ``results/preprocessed/``; writes ``results/{experiment}/
predictions/`` (probability maps on the native reference grid, or class scores). Imports
``core``, ``data``, ``preprocess`` and ``learn``.
"""
