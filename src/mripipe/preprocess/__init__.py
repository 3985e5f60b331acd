"""Per-scan preprocessing: the dataset fingerprint (``fingerprint``, reads the manifest, writes
``results/fingerprint.json``), reorientation, N4 and denoising (``intensity``), co-registration and
template registration (``registration``), the per-scan driver (``pipeline``, writes
``results/preprocessed/{scan}/``) and QC against the phantom's truth (``qc``, writes ``qc.json``,
``qc.png`` and ``results/preprocessed/qc.tsv``). Imports ``core`` and ``data``.
"""
