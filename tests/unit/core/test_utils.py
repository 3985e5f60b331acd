from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mripipe.core.utils import (
    atomic_path,
    derive_seed,
    read_json,
    rng,
    sha256_file,
    sha256_text,
    write_json,
)


def test_derive_seed_is_stable_across_processes() -> None:
    here = derive_seed(42, "phantom", "sub-003")
    code = "from mripipe.core.utils import derive_seed; print(derive_seed(42, 'phantom', 'sub-003'))"
    there = int(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert here == there
    assert 0 <= here < 2**32


def test_derive_seed_depends_on_every_part() -> None:
    seeds = {
        derive_seed(42, "phantom", "sub-003"),
        derive_seed(43, "phantom", "sub-003"),
        derive_seed(42, "split", "sub-003"),
        derive_seed(42, "phantom", "sub-004"),
    }
    assert len(seeds) == 4
    a, b = rng(1, "x").random(5), rng(1, "x").random(5)
    np.testing.assert_array_equal(a, b)


def test_sha256() -> None:
    # echo -n abc | sha256sum
    assert sha256_text("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_suffixes_and_replaces_dirs(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "img.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")
    assert (tmp_path / "img.nii.gz").read_bytes() == b"x"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("old")
    with atomic_path(tmp_path / "d") as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new"]


def test_json_roundtrip_with_numpy(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": np.float32(0.5), "y": np.arange(3), "p": tmp_path})
    data = read_json(tmp_path / "a.json")
    assert data["x"] == 0.5 and data["y"] == [0, 1, 2]
    assert sha256_file(tmp_path / "a.json") == sha256_text((tmp_path / "a.json").read_text())


def test_read_json_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    json.loads((tmp_path / "bad.json").read_text().replace("{not json", "{}"))
