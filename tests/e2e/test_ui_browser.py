"""``mripipe ui`` in a real browser, on the shared tiny run (tests/e2e/conftest.py).

Headless Chromium, Debian's ``chromium`` package (installed here when missing, as the SLURM test
installs Slurm; skipped with the reason where it cannot be), loads each link that ``mripipe ui``
prints, in a fresh profile as a newcomer would, through the functions ``make screenshots`` uses
(docs/screenshots.py). The rendered DOM must hold every trial's run name and its selection-metric
value: on the runs page (no row folded away under its search, the metric a column) and on the
compare page.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from mripipe.track.tracking import client

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def screenshots() -> ModuleType:
    """docs/screenshots.py, with Chromium installed (or the test skipped, saying why)."""
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "docs" / "screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.chromium(install=True)
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"browser test: Chromium cannot be installed here: {exc}")
    return module


def _trials(run_dir: Path) -> dict[str, dict[str, float]]:
    """``{experiment: {trial run name: selection-metric value}}`` read from the store itself."""
    c = client(f"sqlite:///{run_dir}/mlflow.db")
    out: dict[str, dict[str, float]] = {}
    for exp in c.search_experiments():
        runs = c.search_runs([exp.experiment_id])
        searches = {r.info.run_id: r.data.params["metric"] for r in runs
                    if r.data.tags.get("mripipe.role") == "search"}
        for r in runs:
            metric = searches.get(r.data.tags.get("mlflow.parentRunId", ""))
            if metric and "-fold-" not in r.data.tags.get("trial", "-fold-"):
                out.setdefault(exp.name, {})[r.info.run_name] = r.data.metrics[metric]
    return out


def _text(dom: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def _shown(value: float, text: str) -> bool:
    """The value as MLflow writes it: in full in the runs table, rounded elsewhere."""
    return any(f"{value:.{d}f}".rstrip("0").rstrip(".") in text for d in (16, 6, 5, 4, 3))


def test_each_printed_link_shows_every_trial_and_its_metric(
    run_dir: Path, run_environ: Callable[[Path], dict[str, str]], screenshots: ModuleType, tmp_path: Path
) -> None:
    expected = _trials(run_dir)
    assert expected and all(expected.values())
    with screenshots.mripipe_ui(run_dir, env=run_environ(run_dir)) as links:
        assert set(links) == set(expected)
        for experiment, urls in links.items():
            assert set(urls) == {"trials", "compare"}
            for kind, url in urls.items():
                profile = tmp_path / f"{experiment}-{kind}"
                text = _text(screenshots.browse(url, profile, dom=True))
                missing = {n: v for n, v in expected[experiment].items()
                           if n not in text or not _shown(v, text)}
                assert not missing, f"{experiment} {kind} page ({url}) lacks {missing}"
                if experiment == "lesion_seg":  # what the test saw, as PNG
                    shot = tmp_path / f"{experiment}-{kind}.png"
                    screenshots.browse(url, tmp_path / f"{experiment}-{kind}-shot", shot=shot)
                    log.info("screenshot %s", shot)
