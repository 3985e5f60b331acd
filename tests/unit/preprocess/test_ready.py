"""The ready step: statuses gathered, and registration judged against the dataset's own NCC."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mripipe.core.errors import InputError
from mripipe.core.utils import write_json
from mripipe.preprocess.ready import ready

COLUMNS = ["subject", "session", "scan", "T1w", "FLAIR", "label", "class", "truth", "source"]


def _dataset(root: Path, ncc: list[float], failed: int = 0) -> tuple[Path, Path, Path]:
    """A manifest of len(ncc) + failed scans, their validation table and preprocessed folders."""
    rows, pre = [], root / "preprocessed"
    for i in range(len(ncc) + failed):
        scan = f"sub-{i:03d}_ses-01"
        rows.append([f"sub-{i:03d}", "ses-01", scan, f"raw/{scan}_T1w.nii.gz",
                     f"raw/{scan}_FLAIR.nii.gz", "", "none", "", ""])
        if i < len(ncc):
            write_json(pre / scan / "status.json", {"scan": scan, "ok": True, "check": "", "reason": ""})
            write_json(pre / scan / "qc.json", {"scan": scan, "reference": "T1w", "registration_ncc": ncc[i]})
        else:
            write_json(pre / scan / "status.json",
                       {"scan": scan, "ok": False, "check": "registration", "reason": "NCC 0.2 < 0.5"})
    manifest, validation = root / "manifest.valid.tsv", root / "validation.tsv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(manifest, sep="\t", index=False)
    pd.DataFrame(columns=["scan", "file", "check", "detail", "severity"]).to_csv(validation, sep="\t", index=False)
    return manifest, validation, pre


def test_a_registration_outlier_is_excluded_with_both_figures(tmp_path: Path) -> None:
    # 11 scans near 0.66 (real T1 scores) and one at 0.55, above the 0.5 floor; median 0.66, MAD
    # 0.005 (1.4826 MAD 0.0074, floored at 0.01): z = -11; one more scan failed its own check
    ncc = [0.655, 0.66, 0.665, 0.66, 0.67, 0.65, 0.66, 0.662, 0.658, 0.668, 0.652, 0.55]
    manifest, validation, pre = _dataset(tmp_path, ncc, failed=1)
    kept = ready(manifest, validation, pre, tmp_path / "ready.tsv", tmp_path / "excluded.tsv")
    gone = pd.read_csv(tmp_path / "excluded.tsv", sep="\t")
    assert len(kept) == 11 and "sub-011_ses-01" not in set(kept["scan"])
    assert gone["scan"].tolist() == ["sub-012_ses-01", "sub-011_ses-01"]
    assert gone["check"].tolist() == ["registration", "registration_outlier"]
    reason = gone["reason"].iloc[1]
    assert reason.startswith("raw/sub-011_ses-01_T1w.nii.gz: ")
    assert "0.550" in reason and "median 0.660" in reason and "robust z -11.0" in reason


def test_the_outlier_test_follows_the_config_and_needs_enough_scans(tmp_path: Path) -> None:
    ncc = [0.80, 0.81, 0.80, 0.79, 0.80, 0.81, 0.80, 0.79, 0.80, 0.81, 0.74]
    manifest, validation, pre = _dataset(tmp_path, ncc)
    out, excl = tmp_path / "ready.tsv", tmp_path / "excluded.tsv"
    # default max z 5: 0.74 is (0.74 - 0.80) / 0.01483 = -4.0 sd: kept
    assert len(ready(manifest, validation, pre, out, excl)) == 11
    assert len(ready(manifest, validation, pre, out, excl, {"registration_ncc_max_z": 3.0})) == 10
    assert pd.read_csv(excl, sep="\t")["check"].tolist() == ["registration_outlier"]
    # too few scans for a dataset test: nothing excluded
    few = {"registration_ncc_max_z": 3.0, "registration_outlier_min_scans": 12}
    assert len(ready(manifest, validation, pre, out, excl, few)) == 11


@pytest.mark.parametrize(
    "key", ["registration_ncc_max_z", "registration_ncc_min_sd", "registration_outlier_min_scans"]
)
def test_a_wrong_setting_is_an_input_error_naming_it(tmp_path: Path, key: str) -> None:
    manifest, validation, pre = _dataset(tmp_path, [0.8] * 10)
    with pytest.raises(InputError, match=key):
        ready(manifest, validation, pre, tmp_path / "r.tsv", tmp_path / "e.tsv", {key: -1})
