"""Data in: the built-in phantom and the dataset adapters, indexed into one manifest
(``results/manifest.tsv``, one row per scan) and validated up front. Only the phantom generator
ever writes under ``data/``, and only into an empty folder. Imports ``core`` only.

Modules:

- ``bids``: the BIDS adapter (sessions, entities, derivatives labels, participants.tsv).
- ``dicom``: the DICOM adapter: series converted with dcm2niix into a cache under ``results/``.
- ``dicom_studies``: DICOM studies: sessions numbered by date, the label table matched to them.
- ``index``: what every adapter produces: manifest columns, rows, problems, declared labels.
- ``inspect``: open one image file and report what is wrong with it.
- ``manifest``: ``mripipe manifest``: index a dataset (``data.source``) into ``results/manifest.tsv``.
- ``msd``: the Medical Segmentation Decathlon adapter (4-D multimodal images).
- ``nnunet``: the nnU-Net v2 raw dataset adapter.
- ``phantom``: ``mripipe phantom``: the built-in phantom cohort generator (a subpackage).
- ``table``: the table adapter: a CSV/TSV with one row per scan.
- ``validate``: ``mripipe validate``: every file of the manifest checked, every problem listed.
"""
