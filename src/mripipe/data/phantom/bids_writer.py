"""Writing the phantom as BIDS: raw images, lesion masks, ground truth, participants.tsv."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from mripipe.core.imageio import from_array, write_image
from mripipe.core.utils import atomic_path, write_json
from mripipe.data.phantom.geometry import Grid, to_sitk_affine

log = logging.getLogger(__name__)

BIDS_VERSION = "1.9.0"
LESION_DERIVATIVE = "lesions"
TRUTH_DERIVATIVE = "truth"


@dataclass(frozen=True)
class ScanPaths:
    """Every file of one scan (``sub-XXX_ses-YY``) under a BIDS root."""

    root: Path
    subject: str
    session: str

    @property
    def scan(self) -> str:
        return f"{self.subject}_{self.session}"

    def image(self, channel: str) -> Path:
        """Raw image ``sub-XXX/ses-YY/anat/sub-XXX_ses-YY_<channel>.nii.gz``."""
        return self.root / self.subject / self.session / "anat" / f"{self.scan}_{channel}.nii.gz"

    def lesions(self) -> Path:
        """Lesion instance mask (derivatives/lesions/...)."""
        return self.root / "derivatives" / LESION_DERIVATIVE / self.subject / self.session / "anat" / f"{self.scan}_desc-lesions_mask.nii.gz"

    @property
    def truth_dir(self) -> Path:
        return self.root / "derivatives" / TRUTH_DERIVATIVE / self.subject / self.session

    def truth_json(self) -> Path:
        return self.truth_dir / f"{self.scan}_truth.json"

    def clean(self, channel: str) -> Path:
        return self.truth_dir / f"{self.scan}_desc-clean_{channel}.nii.gz"

    def bias(self, channel: str) -> Path:
        return self.truth_dir / f"{self.scan}_desc-bias_{channel}.nii.gz"

    def to_template(self, channel: str) -> Path:
        """ITK transform, template point -> native point of ``channel`` (resampling convention)."""
        return self.truth_dir / f"{self.scan}_from-{channel}_to-template_mode-image_xfm.tfm"

    def deformation(self) -> Path:
        """Displacement field (template space) of the subject's anatomy, shared by its sessions."""
        return self.truth_dir.parent / f"{self.subject}_desc-deformation_xfm.nii.gz"


def write_volume(arr: np.ndarray, grid: Grid, path: Path) -> None:
    """Write an (X, Y, Z) or (C, X, Y, Z) array on ``grid`` as compressed NIfTI."""
    img = from_array(arr)
    grid.apply_to(img)
    write_image(img, path)


def write_transform(matrix: np.ndarray, path: Path) -> None:
    """Write a (4, 4) affine as an ITK text transform file (atomically)."""
    with atomic_path(path) as tmp:
        sitk.WriteTransform(to_sitk_affine(matrix), str(tmp))


def write_description(root: Path, name: str, derivative: bool) -> None:
    """``dataset_description.json`` of the raw dataset or of a derivatives folder."""
    desc: dict[str, Any] = {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative" if derivative else "raw"}
    desc["GeneratedBy"] = [{"Name": "mripipe phantom", "Description": "ICBM152 2009a-based phantom with simulated lesions"}]
    write_json(root / "dataset_description.json", desc)


def write_participants(root: Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``participants.tsv`` (participant_id, age, sex, class, n_sessions) and its JSON sidecar."""
    table = pd.DataFrame(rows, columns=["participant_id", "age", "sex", "class", "n_sessions"])
    table = table.sort_values("participant_id").reset_index(drop=True)
    with atomic_path(root / "participants.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    sidecar = {
        "age": {"Description": "age at the first session", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
        "class": {
            "Description": "lesion burden class (balanced across the cohort by construction)",
            "Levels": {"none": "no lesion", "low": "few lesions", "high": "many lesions"},
        },
        "n_sessions": {"Description": "number of sessions (lesions change between them)"},
    }
    write_json(root / "participants.json", sidecar)
    return table


def relative(path: Path, start: Path) -> str:
    """``path`` relative to the folder ``start`` (may climb with ``..``), POSIX style."""
    return Path(os.path.relpath(path, start)).as_posix()

