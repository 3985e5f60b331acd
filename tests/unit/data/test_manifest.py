"""The manifest on tiny hand-written BIDS trees (with and without sessions)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from mripipe.data.manifest import build_manifest, read_manifest


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the manifest indexes paths; it never opens the images
    return path


def _session_tree(root: Path) -> None:
    for sub, sessions in (("sub-002", ["ses-01", "ses-02"]), ("sub-001", ["ses-01"])):
        for ses in sessions:
            scan = f"{sub}_{ses}"
            for ch in ("T1w", "FLAIR"):
                _touch(root / sub / ses / "anat" / f"{scan}_{ch}.nii.gz")
            _touch(root / "derivatives" / "lesions" / sub / ses / "anat" / f"{scan}_desc-lesions_mask.nii.gz")
    _touch(root / "derivatives" / "truth" / "sub-001" / "ses-01" / "sub-001_ses-01_truth.json")
    (root / "participants.tsv").write_text("participant_id\tage\tclass\nsub-001\t30\tlow\nsub-002\t40\tn/a\n")


def test_sessions_channels_labels_classes(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    _session_tree(root)
    out = tmp_path / "results" / "manifest.tsv"
    table = build_manifest(root, ["T1w", "FLAIR"], "lesions", out)
    assert list(table.columns) == ["subject", "session", "scan", "T1w", "FLAIR", "label", "class", "truth", "source"]
    assert list(table["scan"]) == ["sub-001_ses-01", "sub-002_ses-01", "sub-002_ses-02"]  # sorted
    row = table.iloc[0]
    assert row["T1w"] == str(root / "sub-001" / "ses-01" / "anat" / "sub-001_ses-01_T1w.nii.gz")
    assert row["label"].endswith("sub-001_ses-01_desc-lesions_mask.nii.gz")
    assert row["class"] == "low" and row["truth"].endswith("sub-001_ses-01_truth.json")
    assert list(table["class"]) == ["low", "", ""]  # n/a -> empty
    assert list(table["truth"])[1:] == ["", ""]
    back = read_manifest(out)
    pd.testing.assert_frame_equal(back, table)


def test_relative_root_gives_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _session_tree(tmp_path / "data" / "bids")
    monkeypatch.chdir(tmp_path)
    table = build_manifest("data/bids", ["T1w"], "lesions")
    assert table.loc[0, "T1w"] == "data/bids/sub-001/ses-01/anat/sub-001_ses-01_T1w.nii.gz"
    assert list(table.columns) == ["subject", "session", "scan", "T1w", "label", "class", "truth", "source"]


def test_without_sessions_and_without_labels(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    for sub in ("sub-b", "sub-a"):
        _touch(root / sub / "anat" / f"{sub}_T1w.nii")
        _touch(root / sub / "anat" / f"{sub}_acq-fast_FLAIR.nii.gz")  # extra entity, one match
    table = build_manifest(root, ["T1w", "FLAIR"], "lesions")
    assert list(table["scan"]) == ["sub-a", "sub-b"]
    assert list(table["session"]) == ["", ""]
    assert table.loc[0, "FLAIR"].endswith("sub-a_acq-fast_FLAIR.nii.gz")
    assert list(table["label"]) == ["", ""] and list(table["class"]) == ["", ""]


def test_missing_root_and_no_subjects(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="^" + re.escape(f"{tmp_path / 'nope'}: BIDS root not found")):
        build_manifest(tmp_path / "nope", ["T1w"], "lesions")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="^" + re.escape(f"{tmp_path / 'empty'}: no subject folders")):
        build_manifest(tmp_path / "empty", ["T1w"], "lesions")


def test_missing_channel_names_scan_and_channel(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    _session_tree(root)
    (root / "sub-002" / "ses-02" / "anat" / "sub-002_ses-02_FLAIR.nii.gz").unlink()
    anat = root / "sub-002" / "ses-02" / "anat"
    with pytest.raises(ValueError, match="^" + re.escape(f"{anat}: scan sub-002_ses-02 has no FLAIR image")):
        build_manifest(root, ["T1w", "FLAIR"], "lesions")


def test_ambiguous_images_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    _touch(root / "sub-01" / "anat" / "sub-01_acq-a_T1w.nii.gz")
    _touch(root / "sub-01" / "anat" / "sub-01_acq-b_T1w.nii.gz")
    with pytest.raises(ValueError, match="several T1w images"):
        build_manifest(root, ["T1w"], "lesions")


def test_unreadable_participants(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    _session_tree(root)
    (root / "participants.tsv").write_text("subject\tclass\nsub-001\tlow\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{root / 'participants.tsv'}: no participant_id column")):
        build_manifest(root, ["T1w"], "lesions")
    (root / "participants.tsv").write_bytes(b"participant_id\tclass\n\"sub-001\tlow\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{root / 'participants.tsv'}")):
        build_manifest(root, ["T1w"], "lesions")
