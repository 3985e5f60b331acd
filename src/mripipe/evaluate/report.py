"""Pages of the Snakemake report that tell the story around the metrics.

- ``mripipe report-training``: the search comparison (the validation metric against each searched
  parameter, one panel per parameter, the selected trial marked) and the selected model's card
  (its parameters, validation metric, test metrics with 95 % CIs, where the package is).
- ``mripipe report-data``: the data validation table (every problem found) and the scans left
  out, with the stage and the reason.

These read the files of ``learn`` and ``validate`` (never their code) and write plain HTML and PNG
files that the report embeds and a browser opens as they are.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mripipe.core.utils import atomic_path, read_json  # noqa: E402

log = logging.getLogger(__name__)

STYLE = ("<style>body{font-family:sans-serif;margin:1.5em;max-width:60em}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
         "padding:.25em .6em;text-align:left}th{background:#f3f3f3}.sel{font-weight:bold}</style>")


def latest_values(selected: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each trial's last validation value under successive halving: ``{trial: {"rung", "value",
    "epoch"}}`` from selected.json's ``rungs`` (ranked rungs) and ``ranking`` (the last rung)."""
    rungs = list(selected.get("rungs") or [])
    latest: dict[str, dict[str, Any]] = {}
    for rung in rungs:
        for row in rung["ranking"]:
            latest[row["trial"]] = {"rung": int(rung["rung"]), "value": row["value"], "epoch": row.get("epoch")}
    for row in (r for r in selected.get("ranking") or [] if "trial" in r and "value" in r):
        latest[row["trial"]] = {"rung": len(rungs), "value": row["value"], "epoch": row.get("epoch")}
    return latest


def search_table(trial_dirs: Sequence[str | Path], metric: str, selected: str | None,
                 latest: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per trial: its flat parameters, its validation ``metric``, best epoch and the rung
    it reached (0 without successive halving).

    Args:
        trial_dirs: ``results/{experiment}/trials/{trial}`` (``params.json``, ``val_metrics.json``).
        metric: the selection metric (e.g. ``val_dice``).
        selected: the selected trial's name (marked in the ``selected`` column).
        latest: :func:`latest_values`: a promoted trial's value at the last rung it trained in
            replaces its rung-0 value.
    """
    rows = []
    for d in map(Path, trial_dirs):
        flat = pd.json_normalize(read_json(d / "params.json"), sep=".").iloc[0].to_dict()
        val = read_json(d / "val_metrics.json")
        last = dict((latest or {}).get(d.name) or {})
        rows.append({"trial": d.name, metric: last.get("value", val.get(metric)),
                     "epoch": last.get("epoch") or val.get("epoch"), "rung": last.get("rung", 0),
                     "selected": d.name == selected, **flat})
    return pd.DataFrame(rows)


def _panel(ax: Any, table: pd.DataFrame, key: str, metric: str) -> None:
    y = table[metric].astype(float)
    x = table[key]
    numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
    if not numeric:  # categories; list values (e.g. network.channels) are labelled as text
        labels = x.map(str)
        cats = sorted(labels.unique())
        x = labels.map({c: i for i, c in enumerate(cats)})
        ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
    elif (x > 0).all() and x.max() / max(x.min(), 1e-300) > 20:
        ax.set_xscale("log")
    ax.scatter(x, y, color="tab:blue", s=30)
    sel = table["selected"].astype(bool)
    ax.scatter(x[sel], y[sel], facecolor="none", edgecolor="tab:red", s=160, linewidth=2,
               label="selected")
    for xi, yi, name in zip(x, y, table["trial"], strict=True):
        ax.annotate(name.replace("trial-", ""), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(key)
    ax.set_ylabel(metric)


def plot_search(table: pd.DataFrame, metric: str, keys: Sequence[str], path: str | Path) -> None:
    """Validation ``metric`` against each searched parameter (one panel each); the selected
    trial ringed in red. With nothing searched, one panel of the metric per trial."""
    keys = [k for k in keys if k in table.columns] or ["trial"]
    cols = min(len(keys), 4)
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        _panel(ax, table, key, metric)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"search: {metric} of {len(table)} trials against each searched parameter")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """``(metric, value, "[low, high]")`` for every scalar test metric, CI where one exists."""
    ci = metrics.get("ci95") or {}
    out = []
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            lo, hi = ci.get(key) or (None, None)
            band = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "-"
            out.append((key, value, band))
    return out


def _halving(selected: Mapping[str, Any]) -> str:
    rungs = selected.get("rungs") or []
    if not rungs:
        return ""
    sizes = [len(r["ranking"]) for r in rungs] + [len(selected.get("ranking") or [])]
    return (f" (successive halving: {' / '.join(map(str, sizes))} trials trained to "
            f"{' / '.join(str(r['budget']) for r in rungs)} / full epochs)")


def model_card(experiment: str, selected: Mapping[str, Any], metrics: Mapping[str, Any],
               table: pd.DataFrame) -> str:
    """The selected model's card as an HTML page."""
    row = table[table["trial"] == selected.get("trial")]
    params = row.drop(columns=["trial", "selected"]).iloc[0].to_dict() if len(row) else {}
    where = [("model package", selected.get("model_dir")), ("MLflow model", selected.get("model_uri")),
             ("registered", selected.get("champion_uri")), ("trial run", selected.get("mlflow_run_id")),
             ("search run", selected.get("parent_run_id")), ("tracking URI", selected.get("tracking_uri"))]
    parts = [
        f"<html><head><meta charset='utf-8'><title>{experiment}: selected model</title>{STYLE}</head><body>",
        f"<h2>{html.escape(experiment)}: {html.escape(str(selected.get('trial')))}</h2>",
        f"<p>Selected on the validation fold only: <b>{html.escape(str(selected.get('metric')))} = "
        f"{_fmt(selected.get('value'))}</b> (best epoch {_fmt(selected.get('epoch'))}), the best of "
        f"{len(table)} trials{_halving(selected)}. The test set was read once, after selection.</p>",
        "<h3>Test metrics (95 % bootstrap CIs over subjects)</h3>",
        _table(metric_rows(metrics), ["metric", "value", "95 % CI"]),
        "<h3>Where it is</h3>", _table([(k, v) for k, v in where if v], ["what", "where"]),
        "<h3>Parameters</h3>", _table(sorted(params.items()), ["parameter", "value"]),
        "<h3>All trials</h3>",
        _table([(r["trial"], r.get(selected.get("metric", ""), ""), r.get("epoch", ""), r.get("rung", 0))
                for r in table.to_dict("records")],
               ["trial", f"{selected.get('metric')} (at the last rung it reached)", "epoch", "rung"]),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_training_pages(experiment: str, trial_dirs: Sequence[str | Path], selected_path: str | Path,
                         metrics_path: str | Path, params: Mapping[str, Any], out_dir: str | Path) -> None:
    """``search.png``, ``search.tsv``, ``card.html`` and ``history.tsv`` (the selected trial's
    per-epoch curves at a stable path, DVC's plot) of an experiment in ``out_dir``.

    Args:
        experiment: the experiment name.
        trial_dirs: its trial folders.
        selected_path: ``results/{experiment}/selected.json``.
        metrics_path: ``results/{experiment}/eval/metrics.json`` (test metrics with CIs).
        params: the experiment's config section (its ``search.space`` keys are the panels).
        out_dir: ``results/{experiment}/training``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    selected = read_json(selected_path)
    metric = str(selected["metric"])
    table = search_table(trial_dirs, metric, selected.get("trial"), latest_values(selected))
    keys = list((params.get("search") or {}).get("space") or {})
    plot_search(table, metric, keys, out / "search.png")
    with atomic_path(out / "search.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    best = Path(selected.get("trial_dir") or Path(trial_dirs[0]).parent / str(selected["trial"]))
    with atomic_path(out / "history.tsv") as tmp:
        tmp.write_bytes((best / "history.tsv").read_bytes())
    with atomic_path(out / "card.html") as tmp:
        tmp.write_text(model_card(experiment, selected, read_json(metrics_path), table))
    log.info("%s: search comparison of %d trials and the model card -> %s", experiment, len(table), out)


def data_page(validation: str | Path, excluded: str | Path) -> str:
    """The validation problems and the excluded scans as one HTML page."""
    problems = pd.read_csv(validation, sep="\t", dtype=str, keep_default_na=False)
    left_out = pd.read_csv(excluded, sep="\t", dtype=str, keep_default_na=False)
    parts = [f"<html><head><meta charset='utf-8'><title>data validation</title>{STYLE}</head><body>",
             "<h2>Scans left out</h2>",
             f"<p>{left_out['scan'].nunique() if len(left_out) else 0} scan(s) excluded before training "
             "and evaluation (by validation, or because preprocessing failed).</p>",
             _table(left_out.values.tolist(), list(left_out.columns)) if len(left_out) else "<p>None.</p>",
             "<h2>Every problem validation found</h2>",
             f"<p>{len(problems)} problem(s) in {problems['scan'].nunique() if len(problems) else 0} scan(s); "
             "severity <i>error</i> excludes the scan, <i>warning</i> does not.</p>",
             _table(problems.values.tolist(), list(problems.columns)) if len(problems) else "<p>None.</p>",
             "</body></html>"]
    return "\n".join(parts)


def write_data_page(validation: Path, excluded: Path, out: Path) -> None:
    """``mripipe report-data``: :func:`data_page`, written to ``out`` (``results/data.html``)."""
    with atomic_path(out) as tmp:
        tmp.write_text(data_page(validation, excluded))
