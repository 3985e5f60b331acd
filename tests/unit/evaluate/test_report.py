"""Report pages: the search comparison, the model card and the data page, on crafted files."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mripipe.evaluate.report import (
    data_page,
    latest_values,
    model_card,
    search_table,
    write_training_pages,
)

# trial: (lr, network, val_dice); trial-001 is the best on validation
TRIALS = {"trial-000": (0.001, "unet", 0.50), "trial-001": (0.004, "segresnet", 0.71),
          "trial-002": (0.0007, "unet", 0.42)}


def _trials(root: Path) -> list[Path]:
    dirs = []
    for name, (lr, net, dice) in TRIALS.items():
        d = root / "trials" / name
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps({"optimizer": {"name": "adam", "lr": lr},
                                                   "network": {"name": net, "channels": [4, 8]}}))
        (d / "val_metrics.json").write_text(json.dumps({"val_dice": dice, "epoch": 3}))
        (d / "history.tsv").write_text(f"epoch\tval_dice\n3\t{dice}\n")
        dirs.append(d)
    return dirs


def test_search_plot_and_card(tmp_path: Path) -> None:
    dirs = _trials(tmp_path)
    selected = {"trial": "trial-001", "metric": "val_dice", "value": 0.71, "epoch": 3,
                "ranking": [{}, {}, {}], "model_dir": "results/lesion_seg/model",
                "champion_uri": "models:/lesion_seg@champion"}
    (tmp_path / "selected.json").write_text(json.dumps(selected))
    metrics = {"task": "segmentation", "dice": 0.63, "hd95_mm": 7.5, "ci95": {"dice": [0.55, 0.7]}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    params = {"search": {"space": {"optimizer.lr": {"loguniform": [5e-4, 5e-3]},
                                   "network.name": {"choice": ["unet", "segresnet"]}}}}
    write_training_pages("lesion_seg", dirs, tmp_path / "selected.json", tmp_path / "metrics.json",
                         params, tmp_path / "training")
    table = search_table(dirs, "val_dice", "trial-001")
    assert table.loc[table["selected"], "trial"].tolist() == ["trial-001"]
    assert table["optimizer.lr"].tolist() == [0.001, 0.004, 0.0007]
    width, height = Image.open(tmp_path / "training" / "search.png").size
    assert width > height  # two panels side by side, one per searched parameter
    card = (tmp_path / "training" / "card.html").read_text()
    assert "trial-001" in card and "val_dice = 0.71" in card
    assert "<td>dice</td><td>0.63</td><td>[0.55, 0.7]</td>" in card
    assert "<td>hd95_mm</td><td>7.5</td><td>-</td>" in card  # no CI: said so, not invented
    assert "models:/lesion_seg@champion" in card and "results/lesion_seg/model" in card
    assert "<td>optimizer.lr</td><td>0.004</td>" in card  # the selected trial's parameters
    assert (tmp_path / "training" / "history.tsv").read_text().endswith("3\t0.71\n")


def test_data_page_lists_excluded_scans_and_problems(tmp_path: Path) -> None:
    (tmp_path / "validation.tsv").write_text(
        "scan\tfile\tcheck\tdetail\tseverity\n"
        "sub-002_ses-01\tdata/x/sub-002_FLAIR.nii.gz\treadable\tcannot be read\terror\n"
        "sub-003_ses-01\tdata/x/sub-003_T1w.nii.gz\tspacing\tanisotropic 1x1x5 mm\twarning\n")
    (tmp_path / "excluded.tsv").write_text("scan\tstage\tcheck\treason\n"
                                           "sub-002_ses-01\tvalidate\treadable\tcannot be read\n")
    page = data_page(tmp_path / "validation.tsv", tmp_path / "excluded.tsv")
    assert "1 scan(s) excluded" in page and "2 problem(s) in 2 scan(s)" in page
    assert "<td>sub-002_ses-01</td><td>validate</td>" in page and "anisotropic 1x1x5 mm" in page
    (tmp_path / "validation.tsv").write_text("scan\tfile\tcheck\tdetail\tseverity\n")
    (tmp_path / "excluded.tsv").write_text("scan\tstage\tcheck\treason\n")
    empty = data_page(tmp_path / "validation.tsv", tmp_path / "excluded.tsv")
    assert "0 scan(s) excluded" in empty and "<p>None.</p>" in empty


def test_search_plot_takes_list_valued_parameters(tmp_path: Path) -> None:
    """A searched list (network.channels) is a category, labelled by its text (it crashed the
    report job of the e2e run with 'unhashable type: list')."""
    dirs = _trials(tmp_path)
    params = {"search": {"space": {"network.channels": {"choice": [[4, 8], [8, 16]]}}}}
    (tmp_path / "selected.json").write_text(json.dumps({"trial": "trial-001", "metric": "val_dice",
                                                        "value": 0.71, "epoch": 3}))
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "segmentation", "dice": 0.6}))
    write_training_pages("lesion_seg", dirs, tmp_path / "selected.json", tmp_path / "metrics.json",
                         params, tmp_path / "training")
    assert (tmp_path / "training" / "search.png").stat().st_size > 0


def test_successive_halving_shows_each_trial_at_the_last_rung_it_reached(tmp_path: Path) -> None:
    """Rung 0 ranked all three at a short budget; trial-001 and trial-000 went on, and the final
    rung's values (not their rung-0 ones) are what the table and the card show."""
    dirs = _trials(tmp_path)
    selected = {"trial": "trial-000", "metric": "val_dice", "value": 0.83, "epoch": 24,
                "rungs": [{"rung": 0, "budget": 4, "metric": "val_dice", "survivors": ["trial-001", "trial-000"],
                           "ranking": [{"trial": "trial-001", "value": 0.71}, {"trial": "trial-000", "value": 0.50},
                                       {"trial": "trial-002", "value": 0.42}]}],
                "ranking": [{"trial": "trial-000", "value": 0.83, "epoch": 24},
                            {"trial": "trial-001", "value": 0.80, "epoch": 20}]}
    table = search_table(dirs, "val_dice", "trial-000", latest_values(selected))
    assert table.set_index("trial")["val_dice"].to_dict() == {"trial-000": 0.83, "trial-001": 0.80,
                                                               "trial-002": 0.42}
    assert table.set_index("trial")["rung"].to_dict() == {"trial-000": 1, "trial-001": 1, "trial-002": 0}
    card = model_card("lesion_seg", selected, {}, table)
    assert "the best of 3 trials (successive halving: 3 / 2 trials trained to 4 / full epochs)" in card
