"""Data in: the built-in phantom and the dataset adapters, indexed into one manifest
(``results/manifest.tsv``, one row per scan) and validated up front. Only the phantom generator
ever writes under ``data/``, and only into an empty folder. Imports ``core`` only.

Modules:

- ``bids``: the BIDS adapter (sessions, entities, derivatives labels, participants.tsv).
- ``contrast``: each channel's contrast signature against the dataset's median (a FLAIR filed as T1w).
- ``dicom``: the DICOM adapter: series converted with dcm2niix into a cache under ``results/``.
- ``dicom_studies``: DICOM studies: sessions numbered by date, the label table matched to them.
- ``header``: one file's header read without decompressing: size, type, geometry, header checks.
- ``index``: what every adapter produces: manifest columns, rows, problems, declared labels.
- ``inspect``: one file's voxels streamed in slabs and checked (finite, constant, overflow, labels).
- ``manifest``: ``mripipe manifest``: index a dataset (``data.source``) into ``results/manifest.tsv``.
- ``msd``: the Medical Segmentation Decathlon adapter (4-D multimodal images).
- ``nnunet``: the nnU-Net v2 raw dataset adapter.
- ``phantom``: ``mripipe phantom``: the built-in phantom cohort generator (a subpackage).
- ``plausible``: sizes against the dataset: voxel count and field of view (headers), spacing.
- ``table``: the table adapter: a CSV/TSV with one row per scan.
- ``validate``: ``mripipe validate``: every file of the manifest checked, every problem listed.
- ``voxels``: an image's voxels streamed in bounded z-slabs (NIfTI through zlib, others through ITK).
"""
