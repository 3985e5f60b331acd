"""The two-class phantom in MSD layout (``mripipe phantom --layout msd``), read back through the
MSD adapter and validation (real generation: 3 subjects at 3 mm)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mripipe.core.imageio import load_channels, read_label, to_array
from mripipe.data.manifest import build, read_meta
from mripipe.data.phantom import OutputExistsError, generate_dataset
from mripipe.data.phantom.msd_writer import core_and_rim
from mripipe.data.validate import validate

PARAMS = {"n_subjects": 3, "snr": 20.0, "t1w_spacing": [3.0, 3.0, 3.0], "flair_spacing": [3.0, 3.0, 6.0],
          "lesion_counts": {"none": [0, 0], "low": [2, 3], "high": [4, 6]}}


@pytest.fixture(scope="module")
def msd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "Task99_Phantom"
    generate_dataset(out, 7, PARAMS, workers=1, layout="msd")
    return out


def test_core_and_rim_of_a_cube() -> None:
    inst = np.zeros((9, 9, 9), np.int32)
    inst[2:7, 2:7, 2:7] = 4  # a 5-voxel cube: its outer layer is rim, the inner 3x3x3 core
    inst[0:2, 0:2, 8] = 2  # a thin lesion touching the border: all rim
    lab = core_and_rim(inst)
    assert (lab[2:7, 2:7, 2:7] == 2).sum() == 27 and (lab[2:7, 2:7, 2:7] == 1).sum() == 125 - 27
    assert lab[4, 4, 4] == 2 and lab[2, 4, 4] == 1 and not lab[inst == 0].any()
    assert (lab[0:2, 0:2, 8] == 1).all()


def test_msd_layout_files_and_dataset_json(msd: Path) -> None:
    meta = json.loads((msd / "dataset.json").read_text())
    assert meta["modality"] == {"0": "T1w", "1": "FLAIR"}
    assert meta["labels"] == {"0": "background", "1": "rim", "2": "core"}
    assert meta["numTraining"] == len(meta["training"]) == 3  # one case per subject
    assert not (msd / "sub-001").exists() and not list(msd.parent.glob(".*tmp*"))
    seen: set[int] = set()
    for case in meta["training"]:
        img = sitk.ReadImage(str(msd / case["image"]))
        lab = read_label(msd / case["label"], img)  # on the image's grid, or an error
        assert img.GetDimension() == 4 and img.GetSize()[3] == 2
        assert img.GetSize()[:3] == lab.GetSize()
        np.testing.assert_allclose(img.GetSpacing()[:3], lab.GetSpacing())
        seen |= {int(v) for v in np.unique(to_array(lab))}
    assert seen == {0, 1, 2}


def test_the_msd_adapter_reads_it_with_label_names(msd: Path, tmp_path: Path) -> None:
    out = tmp_path / "results" / "manifest.tsv"
    table = build({"source": "msd", "root": str(msd)}, out)
    assert list(table["scan"]) == ["phantom001", "phantom002", "phantom003"]
    assert read_meta(out)["labels"] == {"0": "background", "1": "rim", "2": "core"}
    chans = load_channels({"T1w": Path(table.loc[0, "T1w"]), "FLAIR": Path(table.loc[0, "FLAIR"])})
    t1, flair = (to_array(c) for c in chans.values())
    head = t1 > 0.2 * t1.max()
    assert np.corrcoef(head.ravel(), (flair > 0.2 * flair.max()).ravel())[0, 1] > 0.8  # same grid, aligned
    found = validate(out, {}, tmp_path / "results" / "v.tsv", tmp_path / "results" / "valid.tsv", ["label"])
    assert found.empty


def test_refuses_a_non_empty_folder(msd: Path) -> None:
    with pytest.raises(OutputExistsError):
        generate_dataset(msd, 7, PARAMS, workers=1, layout="msd")
