"""Load a model package (a folder, or an MLflow ``models:/`` / ``runs:/`` URI) and apply it.

The same functions serve ``predict`` (test scans already preprocessed by the pipeline) and
``mripipe infer`` (new raw scans, preprocessed here by :func:`mripipe.preprocess.pipeline.
preprocess_scan` with the package's parameters): sliding-window probabilities on the template
grid, resampled through the inverse of ``transform.tfm`` onto the raw reference image's exact
grid, then thresholded. A multi-class package (K >= 2 classes in ``labels``) gives the K + 1
softmax probabilities as a vector image (background first), resampled channel by channel; its
mask is their argmax on the native grid (uint8 0..K).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from mripipe.core.components import remove_small
from mripipe.core.errors import InputError
from mripipe.core.imageio import from_array, read_image, to_array
from mripipe.core.labels import DEFAULT_LABELS, foreground
from mripipe.core.package_format import find_package, read_meta
from mripipe.infer.ensemble import load_network
from mripipe.learn.networks import classify, segment_probability, segment_softmax

log = logging.getLogger(__name__)

URI_SCHEMES = ("models:/", "runs:/")


@dataclass
class Package:
    """A loaded model package.

    Attributes:
        root: the package folder.
        meta: its ``model.json``.
        model: the network in eval mode on ``device``.
        device: torch device name.
    """

    root: Path
    meta: dict[str, Any]
    model: nn.Module
    device: str

    @property
    def task(self) -> str:
        """``segmentation`` or ``classification``."""
        return str(self.meta["task"])

    @property
    def channels(self) -> list[str]:
        """Input channel names, in the order the network takes them."""
        return [str(c) for c in self.meta["channels"]]


def fetch(source: str | Path, tracking_uri: str | None = None) -> Path:
    """The local package folder of a path or an MLflow model URI (downloaded from the store).

    Args:
        source: a folder (``results/lesion_seg/model``) or ``models:/lesion_seg@champion``.
        tracking_uri: MLflow tracking/registry URI for a URI source (default: MLflow's).
    """
    text = str(source)
    if not text.startswith(URI_SCHEMES):
        return find_package(text)
    import mlflow
    from mlflow.exceptions import MlflowException

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=text)
    except MlflowException as exc:
        raise InputError(f"{text}: cannot be fetched from MLflow ({str(exc).splitlines()[0]})") from None
    return find_package(local)


def load_package(source: str | Path, device: str = "cpu", tracking_uri: str | None = None) -> Package:
    """Rebuild the network of a package and load its weights (``weights_only=True``); a fold
    ensemble's members are averaged (:mod:`mripipe.infer.ensemble`).

    Raises:
        InputError: not a package, or weights that do not fit the network (naming the file).
    """
    root = fetch(source, tracking_uri)
    meta = read_meta(root)
    model = load_network(root, meta, device)  # a fold ensemble: the mean of its members
    return Package(root=root, meta=meta, model=model, device=device)


def to_native(prob: sitk.Image, transform_path: Path, native_path: Path) -> sitk.Image:
    """Resample a template-space map onto a scan's native grid.

    Args:
        prob: map on the template grid, (X, Y, Z).
        transform_path: ``transform.tfm`` (template point -> native point).
        native_path: the native reference image; only its header (grid) is read.

    Returns:
        float32 image on the native grid: the native image's size, origin, spacing and direction
        (linear interpolation, 0 outside the template grid); a vector image stays one.
    """
    try:
        forward = sitk.ReadTransform(str(transform_path))
    except RuntimeError as exc:
        raise InputError(f"{transform_path}: cannot be read as an ITK transform ({exc})") from None
    try:
        inverse = forward.GetInverse()
    except RuntimeError:
        raise InputError(f"{transform_path}: transform is not invertible") from None
    if not Path(native_path).exists():
        raise FileNotFoundError(f"{native_path}: file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(native_path))
    reader.ReadImageInformation()
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(list(reader.GetSize())[:3])
    resampler.SetOutputOrigin(reader.GetOrigin()[:3])
    resampler.SetOutputSpacing(reader.GetSpacing()[:3])
    direction = np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3]
    resampler.SetOutputDirection(tuple(float(v) for v in direction.ravel()))
    resampler.SetTransform(inverse)  # output (native) point -> input (template) point
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    vector = prob.GetNumberOfComponentsPerPixel() > 1
    resampler.SetOutputPixelType(sitk.sitkVectorFloat32 if vector else sitk.sitkFloat32)
    return resampler.Execute(prob)


def segment_folder(pkg: Package, folder: Path, sw_batch_size: int | None = None) -> sitk.Image:
    """Lesion probability of a preprocessed scan on its template grid.

    Args:
        pkg: a segmentation package.
        folder: ``image.nii.gz`` (C, X, Y, Z) and ``brainmask.nii.gz`` of one scan.
        sw_batch_size: windows per forward pass (speed only); default the package's.

    Returns:
        float32 probability image (X, Y, Z) with the template grid's geometry.
    """
    img = read_image(Path(folder) / "image.nii.gz")
    image = to_array(img)
    image = image[None] if image.ndim == 3 else image
    if image.shape[0] != int(pkg.meta["in_channels"]):
        raise InputError(f"{folder}/image.nii.gz: {image.shape[0]} channels, the model takes "
                         f"{pkg.meta['in_channels']}")
    window = pkg.meta["window"]
    if is_multiclass_package(pkg):
        return _segment_multiclass(pkg, img, image, folder, sw_batch_size)
    prob = segment_probability(pkg.model, torch.from_numpy(image), window["roi_size"],
                               sw_batch_size=int(sw_batch_size or window["batch_size"]),
                               overlap=float(window["overlap"])).numpy()
    if pkg.meta["postprocess"].get("mask_outside_brain", True):
        prob = prob * (to_array(read_image(Path(folder) / "brainmask.nii.gz")) > 0)
    return from_array(prob.astype(np.float32), img)


def is_multiclass_package(pkg: Package) -> bool:
    """A segmentation package of K >= 2 foreground classes (K + 1 output channels)."""
    return pkg.task == "segmentation" and int(pkg.meta["n_classes"]) > 2


def _segment_multiclass(pkg: Package, img: sitk.Image, image: np.ndarray, folder: Path,
                        sw_batch_size: int | None) -> sitk.Image:
    """The K + 1 softmax probabilities of a preprocessed scan on its grid, as a vector image
    ``(K + 1, X, Y, Z)`` (background first); outside the brain mask background is 1 unless
    ``mask_outside_brain`` is false."""
    window = pkg.meta["window"]
    prob = segment_softmax(pkg.model, torch.from_numpy(image), window["roi_size"],
                           sw_batch_size=int(sw_batch_size or window["batch_size"]),
                           overlap=float(window["overlap"])).numpy()
    if pkg.meta["postprocess"].get("mask_outside_brain", True):
        outside = to_array(read_image(Path(folder) / "brainmask.nii.gz")) == 0
        prob[:, outside] = 0.0
        prob[0, outside] = 1.0
    return from_array(prob.astype(np.float32), img)


def native_outputs(pkg: Package, prob: sitk.Image, folder: Path, native: Path
                   ) -> tuple[sitk.Image, sitk.Image]:
    """Probability and thresholded mask of a template-space map on the raw reference grid.

    Returns:
        ``(prob, seg)``: float32 probabilities and the uint8 mask ``prob >= threshold`` without
        its lesions under ``min_lesion_mm3`` (both chosen on validation), both on exactly the raw
        reference image's grid. Multi-class: the K + 1 channel probabilities (vector image) and
        their argmax (uint8 0..K).
    """
    prob_native = to_native(prob, Path(folder) / "transform.tfm", Path(native))
    if is_multiclass_package(pkg):  # argmax of the resampled K + 1 channels (0 off the grid)
        return prob_native, from_array(to_array(prob_native).argmax(0).astype(np.uint8), prob_native)
    post = pkg.meta["postprocess"]
    mask = to_array(prob_native) >= float(post["threshold"])
    voxel_mm3 = float(np.prod(prob_native.GetSpacing()))
    mask = remove_small(mask, float(post.get("min_lesion_mm3", 0.0)) / voxel_mm3)
    seg = from_array(mask.astype(np.uint8), prob_native)
    return prob_native, seg


def package_labels(pkg: Package) -> dict[str, int]:
    """A segmentation package's label map (name -> value); ``{"lesion": 1}`` for a package
    written before ``labels`` was a map (a list of output names)."""
    labels = pkg.meta.get("labels")
    return foreground(labels) if isinstance(labels, dict) else dict(DEFAULT_LABELS)


def class_volumes_ml(seg: sitk.Image, labels: dict[str, int]) -> dict[str, float]:
    """Volume (ml) of each class of an argmax mask (values 1..K = the classes by label value)."""
    counts = np.bincount(to_array(seg).ravel(), minlength=len(labels) + 1)
    voxel_ml = float(np.prod(seg.GetSpacing())) / 1000.0
    names = sorted(labels, key=lambda n: labels[n])
    return {n: float(counts[k]) * voxel_ml for k, n in enumerate(names, start=1)}


def classify_folder(pkg: Package, folder: Path) -> dict[str, float]:
    """Class probabilities of a preprocessed scan: ``{label: probability}`` in label order."""
    from mripipe.learn.patches import classification_volume

    image = to_array(read_image(Path(folder) / "image.nii.gz"))
    image = image[None] if image.ndim == 3 else image
    mask = to_array(read_image(Path(folder) / "brainmask.nii.gz"))
    volume = classification_volume(image, mask, dict(pkg.meta["volume"]))
    proba = classify(pkg.model, torch.from_numpy(volume)[None])[0].numpy()
    labels = [str(c) for c in pkg.meta["labels"]]
    if len(proba) != len(labels):
        raise InputError(f"{pkg.root}: model gives {len(proba)} classes, labels {labels}")
    return {c: float(p) for c, p in zip(labels, proba, strict=True)}
