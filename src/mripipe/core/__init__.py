"""The ground floor every stage stands on. It reads only what it is handed, writes nothing on its
own and imports no other mripipe package.

Modules:

- ``codegraph``: the import graph of the package, behind each rule's code inputs.
- ``components``: lesion components of binary masks (26-connectivity) and small-lesion removal.
- ``config``: the configuration schema, the single source of every config default.
- ``devices``: GPU-slot allocation for concurrent trials and deterministic torch settings.
- ``errors``: ``InputError``, the one exception for bad input.
- ``froc``: lesion-level aggregation over scans: FROC, sensitivity at k FP, AP, AUROC.
- ``grid``: the one rule for "the same grid" of a label and its image, up to axis order and flips.
- ``imageio``: image I/O with SimpleITK, channels, label maps read onto their image's grid, the
  preprocessed-scan reader.
- ``labels``: the segmentation label map (class name -> value) and its resolution.
- ``matching``: lesion candidates and one-to-one matching, shared by evaluation and validation.
- ``numerics``: pinned CPU numerics: the kernel-dispatch cap of every job, the CPU flags.
- ``package_format``: the model package's file format, shared by its writer and readers.
- ``roc``: ROC AUC, average precision and the confusion matrix in numpy (bit-identical to scikit-learn).
- ``split_guard``: the leakage-guarded reader of ``results/splits.json``.
- ``subjects``: scan-level class scores aggregated to subjects.
- ``template``: the ICBM152 2009a template shipped in nilearn's wheel, as SimpleITK images.
- ``utils``: seeds, atomic writes, JSON, logging and hashing.
"""
