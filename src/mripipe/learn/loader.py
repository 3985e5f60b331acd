"""Training data loaders over the cached scans and classification volumes.

``mripipe patches`` caches compact arrays (see :mod:`mripipe.learn.patches`); this module serves
them to training with on-the-fly augmentation (:mod:`mripipe.learn.augment`):

- :func:`segmentation_loader`: fresh patches every epoch, drawn online from the cached scans with
  foreground oversampling (:mod:`mripipe.learn.sampling`); batches ``{"image": float32
  (B, C, px, py, pz), "label": float32 (B, 1, px, py, pz) in {0, 1}}`` (multi-class, K >= 2
  classes in ``patches.json``'s ``labels``: the class indices 0..K).
- :func:`classification_loader`: batches ``{"image": float32 (B, C, x, y, z),
  "label": int64 (B,)}`` (class ids index :func:`mripipe.learn.patches.class_names`).
- :func:`class_weights`: inverse-frequency weights for a cross-entropy loss.

Arrays are opened memory-mapped (``np.load(..., mmap_mode="r")``) lazily in each process, so
DataLoader workers share the page cache instead of copying whole files.

Reproducibility: a loader is built per ``(seed, epoch)``. Segmentation item ``i`` is drawn from
``(seed, "sample", epoch, i)``; classification shuffling uses a ``torch.Generator`` seeded from
``(seed, "shuffle", epoch)``; each item's augmentation draws from one random stream
(:class:`mripipe.learn.augment.SeededAugmentation`, the MONAI recipe) re-seeded from
``(seed, "augment", epoch, item index)``, so an epoch replays identically whatever the number of
workers (workers are seeded too, through ``worker_init_fn``, for any other randomness).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from mripipe.core.errors import InputError
from mripipe.core.labels import foreground
from mripipe.core.utils import derive_seed, read_json
from mripipe.learn import sampling
from mripipe.learn.augment import SeededAugmentation
from mripipe.learn.patches import INDEX, META, VOLUMES, class_names

log = logging.getLogger(__name__)

def _read_table(patches_dir: Path, name: str) -> pd.DataFrame:
    path = patches_dir / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found (run `mripipe patches` first)")
    return pd.read_csv(path, sep="\t", dtype={"scan": str, "subject": str, "class": str})


def _select(table: pd.DataFrame, subjects: Sequence[str], path: Path) -> pd.DataFrame:
    wanted = set(subjects)
    missing = sorted(wanted - set(table["subject"]))
    if missing:
        raise InputError(f"{path}: no items for subjects {missing[:5]} (not train/val subjects?)")
    out = table[table["subject"].isin(wanted)]
    return out.sort_values(["scan", "row"] if "row" in out else ["scan"]).reset_index(drop=True)


class _ArrayCache:
    """Per-process cache of memory-mapped ``.npy`` files (opened lazily, never pickled open)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._maps: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray:
        arr = self._maps.get(name)
        if arr is None:
            arr = np.load(self.root / name, mmap_mode="r")
            self._maps[name] = arr
        return arr

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_maps": {}}


class _AugmentedDataset(Dataset[dict[str, torch.Tensor]]):
    """Items read from memory-mapped arrays, augmented with a per-item seed."""

    def __init__(self, root: Path, seed: int, epoch: int, augment: float, has_label: bool) -> None:
        self.cache = _ArrayCache(root)
        self.seed = seed
        self.epoch = epoch
        self.augmenter = SeededAugmentation(augment, "label" if has_label else None)
        # One random stream for the whole recipe, re-seeded per item (the MONAI transforms share
        # it through set_random_state(state=...)).
        self.state = np.random.RandomState(derive_seed(seed, "augment", epoch))

    def _augment(self, item: dict[str, Any], index: int) -> dict[str, Any]:
        if self.augmenter.augment == 0.0:
            return item
        self.state.seed(derive_seed(self.seed, "augment", self.epoch, index))
        return self.augmenter(item, self.state)


_FOREGROUNDS: dict[tuple[str, int, int], sampling.Foreground] = {}


def _foreground(path: Path) -> sampling.Foreground:
    """The lesion voxels of one cached label file, grouped once per process and file version.

    A loader is built per epoch: without this, every epoch (and every worker of it) regrouped
    every scan's lesion voxels, 0.36 s per epoch on the phantom's 22 training scans (cProfile).
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    fg = _FOREGROUNDS.get(key)
    if fg is None:
        fg = _FOREGROUNDS[key] = sampling.foreground(np.load(path, mmap_mode="r"))
    return fg


class PatchDataset(_AugmentedDataset):
    """``n_samples`` patches drawn online from the cached scans listed in ``index.tsv``.

    Item ``i`` of epoch ``e`` is drawn by :func:`mripipe.learn.sampling.draw` from
    ``(seed, e, i)`` and augmented from the same, so an epoch is identical for any worker count
    and any order of access.
    """

    def __init__(
        self, root: Path, table: pd.DataFrame, seed: int, epoch: int, augment: float,
        n_samples: int, size: Sequence[int], pos_fraction: float, n_classes: int = 1,
    ) -> None:
        super().__init__(root, seed, epoch, augment, has_label=True)
        self.files = table["file"].to_numpy(dtype=str)
        self.label_files = table["label_file"].to_numpy(dtype=str)
        self.shapes = [tuple(int(v) for v in r) for r in
                       table[["size_x", "size_y", "size_z"]].to_numpy(dtype=np.int64)]
        self.n_samples, self.size, self.pos_fraction = n_samples, [int(s) for s in size], pos_fraction
        self.n_classes = n_classes  # foreground classes: 1 = binary lesion (instance ids cached)
        self._fgs: list[sampling.Foreground] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_fgs": None}  # workers rebuild the lesion lists from the cache

    def foregrounds(self) -> list[sampling.Foreground]:
        """Lesion voxels of every cached scan, grouped by instance (built once per process)."""
        if self._fgs is None:
            self._fgs = [_foreground(self.cache.root / f) for f in self.label_files]
        return self._fgs

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        d = sampling.draw(index, self.seed, self.epoch, self.shapes, self.foregrounds(),
                          self.size, self.pos_fraction, self.n_classes)
        image = sampling.crop(self.cache.get(self.files[d.scan]), d.start, self.size)
        label = sampling.crop(self.cache.get(self.label_files[d.scan])[None], d.start, self.size)
        target = label > 0 if self.n_classes < 2 else label
        item = self._augment({"image": torch.from_numpy(image.astype(np.float32)),
                              "label": torch.from_numpy(target.astype(np.float32))}, index)
        return {
            "image": torch.as_tensor(item["image"], dtype=torch.float32).as_subclass(torch.Tensor),
            "label": torch.as_tensor(item["label"], dtype=torch.float32).as_subclass(torch.Tensor),
        }


class VolumeDataset(_AugmentedDataset):
    """Whole downsampled volumes listed in ``volumes.tsv`` (one row per scan)."""

    def __init__(
        self, root: Path, table: pd.DataFrame, seed: int, epoch: int, augment: float
    ) -> None:
        super().__init__(root, seed, epoch, augment, has_label=False)
        self.files = table["file"].to_numpy(dtype=str)
        self.class_ids = table["class_id"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = np.asarray(self.cache.get(self.files[index]), dtype=np.float32)
        item = self._augment({"image": torch.from_numpy(image)}, index)
        return {
            "image": torch.as_tensor(item["image"], dtype=torch.float32).as_subclass(torch.Tensor),
            "label": torch.tensor(self.class_ids[index], dtype=torch.int64),
        }


def _worker_init(seed: int, epoch: int) -> Any:
    def init(worker_id: int) -> None:
        s = derive_seed(seed, "worker", epoch, worker_id)
        np.random.seed(s)
        torch.manual_seed(s)
        torch.set_num_threads(1)

    return init


def _make_loader(
    dataset: Dataset[dict[str, torch.Tensor]],
    batch_size: int,
    seed: int,
    epoch: int,
    num_workers: int,
    shuffle: bool,
) -> DataLoader[dict[str, torch.Tensor]]:
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, "shuffle", epoch))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=_worker_init(seed, epoch) if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def segmentation_loader(
    patches_dir: str | Path,
    subjects: list[str],
    batch_size: int,
    seed: int,
    epoch: int,
    augment: float = 1.0,
    num_workers: int = 0,
    n_samples: int | None = None,
) -> DataLoader[dict[str, torch.Tensor]]:
    """A loader of patches drawn online from the cached scans of ``subjects``.

    Patch size and foreground share come from ``patches.json`` (the ``patches`` config).

    Args:
        patches_dir: ``results/patches``.
        subjects: subjects whose scans to sample (e.g. a fold's ``train`` list).
        batch_size: patches per batch.
        seed: master seed; with ``epoch`` it fixes every sample and its augmentation.
        epoch: epoch number (a new loader per epoch replays that epoch identically).
        augment: augmentation strength in [0, 1]; 0 for none.
        num_workers: DataLoader worker processes (the batches do not depend on it).
        n_samples: patches in the epoch; None = ``per_scan`` per scan of ``subjects``.

    Returns:
        DataLoader of ``{"image": float32 (B, C, px, py, pz), "label": float32 (B, 1, px, py, pz)}``.
    """
    root = Path(patches_dir)
    table = _select(_read_table(root, INDEX), subjects, root / INDEX)
    meta = read_json(root / META)
    n = int(n_samples) if n_samples is not None else int(meta["per_scan"]) * len(table)
    dataset = PatchDataset(root, table, seed, epoch, augment, n, meta["size"],
                           float(meta["pos_fraction"]), len(foreground(meta.get("labels"))))
    log.debug("segmentation loader: %d patches from %d scans of %d subjects", n, len(table),
              len(set(subjects)))
    dataset.foregrounds()  # here, so that forked workers inherit them instead of each rebuilding
    return _make_loader(dataset, batch_size, seed, epoch, num_workers, shuffle=False)


def _class_table(root: Path, subjects: Sequence[str]) -> pd.DataFrame:
    table = _select(_read_table(root, VOLUMES), subjects, root / VOLUMES)
    unknown = table[table["class_id"] < 0]
    if len(unknown):
        raise InputError(
            f"{root / VOLUMES}: subjects without a class: {sorted(set(unknown['subject']))[:5]}"
        )
    return table


def classification_loader(
    patches_dir: str | Path,
    subjects: list[str],
    batch_size: int,
    seed: int,
    epoch: int,
    augment: float = 1.0,
    num_workers: int = 0,
    shuffle: bool = True,
) -> DataLoader[dict[str, torch.Tensor]]:
    """A loader over the whole downsampled volumes of ``subjects`` (one item per scan).

    Args:
        patches_dir: ``results/patches``.
        subjects: subjects whose scans to serve; each scan carries its subject's class.
        batch_size: volumes per batch.
        seed: master seed; with ``epoch`` it fixes shuffling and augmentation.
        epoch: epoch number.
        augment: augmentation strength in [0, 1]; 0 for none.
        num_workers: DataLoader worker processes.
        shuffle: shuffle the volumes (seeded).

    Returns:
        DataLoader of ``{"image": float32 (B, C, x, y, z), "label": int64 (B,)}``.
    """
    root = Path(patches_dir)
    dataset = VolumeDataset(root, _class_table(root, subjects), seed, epoch, augment)
    return _make_loader(dataset, batch_size, seed, epoch, num_workers, shuffle)


def class_weights(patches_dir: str | Path, subjects: list[str]) -> torch.Tensor:
    """Inverse-frequency class weights over the scans of ``subjects``, for cross-entropy.

    ``w_k = N / (K * n_k)`` with ``N`` scans, ``K`` classes (all classes of
    :func:`mripipe.learn.patches.class_names`) and ``n_k`` scans of class ``k``; a class absent from
    ``subjects`` gets weight 0 (it never occurs as a target).

    Returns:
        float32 tensor of shape ``(K,)``.
    """
    root = Path(patches_dir)
    n_classes = len(class_names(root))
    ids = _class_table(root, subjects)["class_id"].to_numpy(dtype=np.int64)
    counts = np.bincount(ids, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = counts.sum() / (n_classes * counts[present])
    return torch.tensor(weights, dtype=torch.float32)
