"""Reproduction check: crafted summaries against a published one, and the runner on a tiny
Snakemake workflow in a temporary git repository."""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from mripipe.cli import main
from mripipe.evaluate import reproduce as rerun
from mripipe.evaluate.compare import (
    CI95,
    IDENTICAL,
    compare,
    format_table,
    platform_info,
    published_doc,
    tolerance_mode,
)

SUMMARY = {
    "lesion_seg": {"task": "segmentation", "space": "native", "dice": 0.6125,
                   "dice_ci95_low": 0.55, "dice_ci95_high": 0.67, "froc_score": 0.4,
                   "froc_score_ci95_low": 0.3, "froc_score_ci95_high": 0.5, "auroc": None,
                   "n_scans": 12},
    "burden_cls": {"task": "classification", "accuracy": 0.75, "accuracy_ci95_low": 0.5,
                   "accuracy_ci95_high": 1.0, "n_scans": 12},
    "excluded": {"n_scans": 1, "by_stage": {"validate": 1}, "scans": {"sub-001_ses-01": "bad"}},
}
HERE = {"platform": "Linux-x86_64", "torch": "2.13.0", "device": "cpu"}


def test_identical_summary_passes_every_metric() -> None:
    rows = compare(SUMMARY, copy.deepcopy(SUMMARY), IDENTICAL)
    # metrics, not CI bounds: 6 lesion_seg + 3 burden_cls + excluded/n_scans
    assert [r.metric for r in rows] == [
        "lesion_seg/task", "lesion_seg/space", "lesion_seg/dice", "lesion_seg/froc_score",
        "lesion_seg/auroc", "lesion_seg/n_scans", "burden_cls/task", "burden_cls/accuracy",
        "burden_cls/n_scans", "excluded/n_scans"]
    assert all(r.ok for r in rows)
    assert next(r for r in rows if r.metric == "lesion_seg/dice").tolerance == IDENTICAL


def test_one_edited_number_fails_naming_the_metric() -> None:
    got = copy.deepcopy(SUMMARY)
    got["lesion_seg"]["dice"] = 0.6125000001  # identical means identical: 1e-10 is a mismatch
    rows = compare(SUMMARY, got, IDENTICAL)
    bad = [r for r in rows if not r.ok]
    assert [r.metric for r in bad] == ["lesion_seg/dice"]
    assert bad[0].difference == pytest.approx(1e-10)
    text = format_table(rows, IDENTICAL, HERE, HERE)
    assert "MISMATCH in 1 of 10 metrics: lesion_seg/dice" in text
    assert text.startswith("tolerance: identical")


def test_ci_tolerance_applies_on_another_platform() -> None:
    published = {"platform": "Darwin-arm64", "torch": "2.13.0", "device": "cpu"}
    mode = tolerance_mode(published, HERE)
    assert mode == CI95
    got = copy.deepcopy(SUMMARY)
    got["lesion_seg"]["dice"] = 0.66      # inside [0.55, 0.67]
    got["lesion_seg"]["froc_score"] = 0.51  # outside [0.3, 0.5]
    got["burden_cls"]["accuracy"] = 0.5   # on the lower bound: inside
    rows = {r.metric: r for r in compare(SUMMARY, got, mode)}
    assert rows["lesion_seg/dice"].ok and rows["lesion_seg/dice"].tolerance == "95% CI [0.55, 0.67]"
    assert not rows["lesion_seg/froc_score"].ok
    assert rows["burden_cls/accuracy"].ok
    # a number without a CI (a count) must still be equal
    got["lesion_seg"]["n_scans"] = 11
    rows = {r.metric: r for r in compare(SUMMARY, got, mode)}
    assert not rows["lesion_seg/n_scans"].ok and rows["lesion_seg/n_scans"].tolerance == "equal"
    assert "published on Darwin-arm64" in format_table(list(rows.values()), mode, published, HERE)


@pytest.mark.parametrize(("published", "here", "mode"), [
    (HERE, HERE, IDENTICAL),
    (HERE, HERE | {"device": "cuda"}, CI95),             # a GPU here
    (HERE | {"device": "cuda"}, HERE, CI95),             # published from a GPU
    (HERE | {"torch": "2.12.0"}, HERE, CI95),            # another torch
    ({}, HERE, CI95),                                    # provenance unknown (a recipe)
])
def test_tolerance_mode(published: dict, here: dict, mode: str) -> None:
    assert tolerance_mode(published, here) == mode


def test_missing_metric_and_recipe_reference_shapes() -> None:
    # a recipe's reference: [value, low, high] or {value, ci95}; provenance unknown -> CI
    reference = {"lesion_seg": {"dice": [0.80, 0.75, 0.85], "hd95_mm": {"value": 5.0, "ci95": [4.0, 6.0]}}}
    got = {"lesion_seg": {"dice": 0.77}}
    rows = {r.metric: r for r in compare(reference, got, CI95)}
    assert rows["lesion_seg/dice"].ok
    assert not rows["lesion_seg/hd95_mm"].ok and rows["lesion_seg/hd95_mm"].note == "missing from the reproduction"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _tiny_repo(root: Path, dice: float) -> Path:
    """A git repository whose "pipeline" writes results/summary.json (dice from a committed file)."""
    repo = root / "repo"
    repo.mkdir()
    (repo / "value.txt").write_text(f"{dice}\n")
    (repo / "Snakefile").write_text(
        "import json\n"
        "rule all:\n"
        "    input: 'value.txt'\n"
        "    output: 'results/summary.json'\n"
        "    run:\n"
        "        v = float(open(input[0]).read())\n"
        "        json.dump({'lesion_seg': {'task': 'segmentation', 'dice': v, 'dice_ci95_low': 0.5,\n"
        "                   'dice_ci95_high': 0.7}}, open(output[0], 'w'))\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "value.txt", "Snakefile")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    return repo


def test_reproduce_runs_head_in_a_fresh_copy_and_writes_only_the_table(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    repo = _tiny_repo(tmp_path, 0.6)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.chdir(repo)
    assert main(["publish"]) == 0
    published = json.loads((repo / rerun.PUBLISHED).read_text())
    assert published["lesion_seg"]["dice"] == 0.6
    assert published["produced"]["commit"] == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert set(published["produced"]) >= {"platform", "torch", "device", "date", "python"}
    _git(repo, "add", str(rerun.PUBLISHED))
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "publish")
    # an uncommitted edit is not part of the reproduction: HEAD is what runs
    (repo / "value.txt").write_text("0.9\n")
    capsys.readouterr()
    assert main(["reproduce"]) == 0
    out = capsys.readouterr().out
    assert "all 2 metrics reproduced" in out and "lesion_seg/dice" in out
    assert not (repo / "results" / "summary.json").exists()  # the run happened elsewhere
    assert (repo / rerun.TABLE).is_file()
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary copy is gone
    # one edited number in the published file: non-zero, naming the metric (compared with a
    # finished run's summary, --summary, to save a second run)
    reproduced = tmp_path / "summary.json"
    reproduced.write_text(json.dumps({k: v for k, v in published.items() if k != "produced"}))
    published["lesion_seg"]["dice"] = 0.61 if published["produced"]["device"] == "cpu" else 0.8
    (repo / rerun.PUBLISHED).write_text(json.dumps(published))
    assert main(["reproduce", "--summary", str(reproduced)]) == 1
    assert "MISMATCH in 1 of 2 metrics: lesion_seg/dice" in capsys.readouterr().out


def test_published_doc_keeps_the_summary_and_provenance() -> None:
    doc = published_doc(SUMMARY, platform_info("cpu") | {"commit": "abc"})
    assert doc["lesion_seg"] == SUMMARY["lesion_seg"] and doc["produced"]["commit"] == "abc"
    assert compare(doc, SUMMARY, IDENTICAL)[0].ok  # "produced" is provenance, not a metric

