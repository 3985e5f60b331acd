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
    COMPARISON,
    IDENTICAL,
    SEED_RANGE,
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
HERE = {"platform": "Linux-x86_64", "cpu": "Intel(R) Xeon(R) Processor", "cpu_isa": "avx2",
        "torch": "2.13.0", "blas": "torch mkl, numpy scipy-openblas 0.3.31", "device": "cpu"}


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
    assert "platform: Darwin-arm64 -> Linux-x86_64" in format_table(list(rows.values()), mode, published, HERE)


@pytest.mark.parametrize(("published", "here", "mode"), [
    (HERE, HERE, IDENTICAL),
    (HERE, HERE | {"device": "cuda"}, CI95),             # a GPU here
    (HERE | {"device": "cuda"}, HERE, CI95),             # published from a GPU
    (HERE | {"torch": "2.12.0"}, HERE, CI95),            # another torch
    (HERE | {"cpu": "AMD EPYC"}, HERE, CI95),            # another CPU model
    (HERE | {"cpu_isa": "native"}, HERE, CI95),          # another ISA cap
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
    """A git repository whose "pipeline" writes results/summary.json (dice from a committed file,
    moved by the training seed) and results/stages.json (the trial's "weights" hash is the seed)."""
    repo = root / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "config" / "config.yaml").write_text("seed: 42\ntrain_seed: null\n")
    (repo / "value.txt").write_text(f"{dice}\n")
    (repo / "Snakefile").write_text(
        "import json\n"
        "configfile: 'config/config.yaml'\n"
        "SEED = config['seed'] if config.get('train_seed') is None else config['train_seed']\n"
        "rule all:\n"
        "    input: 'value.txt'\n"
        "    output: s='results/summary.json', h='results/stages.json'\n"
        "    params: seed=SEED\n"
        "    run:\n"
        "        v = float(open(input[0]).read()) + 0.01 * (params.seed - 42)\n"
        "        json.dump({'lesion_seg': {'task': 'segmentation', 'dice': v, 'dice_ci95_low': 0.5,\n"
        "                   'dice_ci95_high': 0.7, 'n_scans': 3}}, open(output.s, 'w'))\n"
        "        json.dump({'cpu_isa': 'avx2', 'dispatch': {'torch_blas': 'mkl'}, 'stages': [\n"
        "            {'stage': 'preprocess', 'items': {'sub-1': 'aa', 'sub-2': 'bb'}},\n"
        "            {'stage': 'lesion_seg rung 0', 'items': {'trial-000': str(params.seed)}}]},\n"
        "            open(output.h, 'w'))\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "value.txt", "Snakefile", "config/config.yaml")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")
    return repo


def test_publish_runs_seeds_and_reproduce_names_the_first_stage_that_differs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _tiny_repo(tmp_path, 0.6)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.chdir(repo)
    assert main(["publish", "--seeds", "3"]) == 0
    published = json.loads((repo / rerun.PUBLISHED).read_text())
    assert published["produced"]["train_seeds"] == [42, 43, 44]
    assert published["lesion_seg"]["dice"] == 0.6  # the first seed's summary is the headline
    assert published["spread"]["lesion_seg"]["dice"]["values"] == pytest.approx([0.6, 0.61, 0.62])
    assert published["spread"]["lesion_seg"]["dice"]["sd"] == pytest.approx(0.01)
    assert published["stages"]["43"][1]["items"] == {"trial-000": "43"}
    assert published["produced"]["commit"] == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert set(published["produced"]) >= {"platform", "cpu", "cpu_flags", "cpu_isa", "blas", "torch",
                                          "device", "date", "python"}
    _git(repo, "add", str(rerun.PUBLISHED))
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "publish")
    (repo / "value.txt").write_text("0.9\n")  # uncommitted: not part of the reproduction
    capsys.readouterr()
    assert main(["reproduce"]) == 0  # the first seed only, on the same fingerprint: identical
    out = capsys.readouterr().out
    assert "tolerance: identical" in out and "all 3 metrics reproduced" in out, out
    assert "every stage's outputs identical" in out and "training seed(s) 42" in out
    assert not (repo / "results" / "summary.json").exists()  # the run happened elsewhere
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary copy is gone
    # another seed's weights in the published file: identical metrics, but the stage is named
    published["stages"]["42"][1]["items"]["trial-000"] = "other"
    (repo / rerun.PUBLISHED).write_text(json.dumps(published))
    given = tmp_path / "given"
    given.mkdir()
    (given / "summary.json").write_text(json.dumps({"lesion_seg": published["seeds"]["42"]["lesion_seg"]}))
    (given / "stages.json").write_text(json.dumps({"cpu_isa": "avx2", "dispatch": {"torch_blas": "mkl"},
                                                   "stages": published["stages"]["43"]}))
    assert main(["reproduce", "--summary", str(given / "summary.json")]) == 1
    out = capsys.readouterr().out
    assert "preprocess: identical (2/2)" in out
    assert "first stage whose outputs differ: lesion_seg rung 0" in out


def test_seed_range_on_another_fingerprint(tmp_path: Path) -> None:
    per_seed = {str(42 + i): {"lesion_seg": {"task": "segmentation", "dice": d, "n_scans": 11}}
                for i, d in enumerate([0.70, 0.74, 0.78, 0.72, 0.76])}
    doc = published_doc(per_seed, {}, HERE | {"commit": "abc"})
    stats = doc["spread"]["lesion_seg"]["dice"]
    assert stats["mean"] == pytest.approx(0.74) and stats["sd"] == pytest.approx(0.0316, abs=1e-4)
    mode = tolerance_mode(doc["produced"], HERE | {"cpu": "AMD EPYC 9654"}, spread=True)
    assert mode == SEED_RANGE
    inside = {"lesion_seg": {"task": "segmentation", "dice": 0.66, "n_scans": 11}}  # mean - 2.5 SD
    rows = {r.metric: r for r in compare(doc, inside, mode, doc["spread"])}
    assert all(r.ok for r in rows.values()), rows
    assert rows["lesion_seg/dice"].tolerance == "seeds [0.6451, 0.8349]"
    assert rows["lesion_seg/n_scans"].tolerance == "equal"  # every seed alike: must be equal
    outside = {"lesion_seg": {"task": "segmentation", "dice": 0.62, "n_scans": 11}}
    rows = {r.metric: r for r in compare(doc, outside, mode, doc["spread"])}
    assert [m for m, r in rows.items() if not r.ok] == ["lesion_seg/dice"]
    assert rows["lesion_seg/dice"].note == "outside the published seed range"
    text = format_table(list(rows.values()), mode, doc["produced"], HERE | {"cpu": "AMD EPYC 9654"})
    assert text.startswith("tolerance: within the published seed range")
    assert "cpu: Intel(R) Xeon(R) Processor -> AMD EPYC 9654" in text


def test_recipe_reference_is_a_comparison_with_a_stated_rule() -> None:
    theirs = {"prostate_seg": {"dice_PZ": {"value": 0.668}, "dice_TZ": {"value": 0.841},
                               "hd95_mm": {"value": 5.0}}}
    ours = {"prostate_seg": {"dice_PZ": 0.60, "dice_PZ_ci95_low": 0.50, "dice_PZ_ci95_high": 0.70,
                             "dice_TZ": 0.70, "dice_TZ_ci95_low": 0.65, "dice_TZ_ci95_high": 0.80,
                             "hd95_mm": 4.0}}
    rows = {r.metric: r for r in compare(theirs, ours, COMPARISON)}
    assert rows["prostate_seg/dice_PZ"].ok        # theirs inside our CI
    assert not rows["prostate_seg/dice_TZ"].ok    # theirs above our CI: they are better
    assert rows["prostate_seg/dice_TZ"].note == "theirs outside our CI and better"
    assert rows["prostate_seg/hd95_mm"].ok        # lower is better, no CI: ours at least as good
    text = format_table(list(rows.values()), COMPARISON, {}, HERE)
    assert text.startswith("tolerance: comparison, not reproduction")
    assert "MISMATCH in 1 of 3 metrics: prostate_seg/dice_TZ" in text


def test_published_doc_keeps_the_summary_and_provenance() -> None:
    doc = published_doc({"42": SUMMARY}, {"42": []}, platform_info("cpu") | {"commit": "abc"})
    assert doc["lesion_seg"] == SUMMARY["lesion_seg"] and doc["produced"]["commit"] == "abc"
    assert doc["produced"]["train_seeds"] == [42] and doc["spread"]["lesion_seg"]["dice"]["sd"] is None
    rows = compare(doc, SUMMARY, IDENTICAL)
    assert all(r.ok for r in rows)  # produced, seeds, spread and stages are not metrics
    assert len(rows) == 10
