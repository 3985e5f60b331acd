"""Per-scan preprocessing into template space (or native space), with measured QC. Imports
``core`` and ``data``.

Modules:

- ``fingerprint``: ``mripipe fingerprint``: native spacings and the target spacing (``results/fingerprint.json``).
- ``intensity``: head mask, N4 bias correction, denoising and z-scoring.
- ``memory``: a scan's peak memory estimated from its headers (the rule's mem_mb) and the job's own limit.
- ``montage``: the per-scan QC picture, drawn with numpy and Pillow.
- ``native``: the anatomy-agnostic path: a scan stays in its own space, cropped to its foreground.
- ``pipeline``: the per-scan chain (reorient, N4, denoise, co-register, register, resample) and its outputs.
- ``preprocess_scan``: ``mripipe preprocess``: one scan, its outcome recorded in ``status.json``.
- ``qc``: ``mripipe qc-table``: QC against the phantom's truth and the QC table.
- ``ready``: ``mripipe ready``: the scans that made it through preprocessing, and those that did not.
- ``registration``: rigid co-registration and rigid -> affine template registration (SimpleITK).
"""
