"""`make reproduce-table2` machinery: the smoke run end to end, skipped rows, the experiment files."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from experiments.common import rows
from experiments.reproduce import PALETTE, PANEL, write_from_results
from reid_tf import config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def reproduce(tmp_path, *extra):
    cmd = [sys.executable, "-m", "experiments.reproduce", f"--data_dir={tmp_path / 'data'}",
           f"--out_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_experiment_files_cover_tables_2_to_4():
    assert [(r.model, r.dataset) for r in rows(2)] == [
        (m, d) for d in ("cuhk03_detected", "cuhk03_labeled", "cuhk01", "viper") for m in ("l23", "l234")]
    assert [r.model for r in rows(3)] == ["cls", "l2", "l3", "l4", "l23", "l234"]
    assert [r.model for r in rows(4)] == ["c1", "c2", "c3", "c4"]
    for table in (2, 3, 4):
        for row in rows(table):
            assert row.model in config.PRESETS and len(row.paper) == 3
    assert rows(2)[4].paper == (86.55, 97.70, 98.70)  # Ours-(L2,L3) on CUHK01, the row run here


def test_rows_without_data_are_skipped_with_the_prepare_command(tmp_path):
    reproduce(tmp_path, "--table=4")
    body = json.loads((tmp_path / "results" / "table4.json").read_text())
    assert body["rows"] == [] and len(body["skipped"]) == 4
    text = (tmp_path / "results" / "table4.md").read_text()
    assert "prepare_cuhk03 --mat" in text and text.count("skipped") == 4


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_smoke_table2_runs_the_whole_path(tmp_path):
    proc = reproduce(tmp_path, "--table=2", "--smoke")
    text = (tmp_path / "results" / "table2_smoke.md").read_text()
    assert "SMOKE RUN" in text
    body = json.loads((tmp_path / "results" / "table2_smoke.json").read_text())
    assert len(body["rows"]) == 8 and body["skipped"] == []
    for row in body["rows"]:
        top1 = row["summary"]["rank"]["1"]["mean"]
        assert 0.0 <= top1 <= 100.0 and row["trials"] == 1
        assert (row["recipe"], row["pairing"]) == ("cross_camera", "per_pair")  # the synthetic set's
        assert f"/ {row['paper'][0]:.2f} /" in text  # measured beside the paper's number
    assert "Hardware:" in text and "min |" in text
    assert proc.stdout.count("| Ours-") == 8 and text.count("| cross_camera | per_pair |") == 8
    assert sorted(os.listdir(tmp_path / "runs" / "smoke" / "table2")) == [
        "l234_synthetic_cross_camera_per_pair", "l23_synthetic_cross_camera_per_pair"]


@pytest.mark.slow
@pytest.mark.parametrize("table,n_rows", [(3, 6), (4, 4)])
def test_smoke_ablation_tables(tmp_path, table, n_rows):
    """Tables 3–4 end to end on synthetic data: every ablation preset trains, evaluates, tabulates."""
    reproduce(tmp_path, f"--table={table}", "--smoke")
    body = json.loads((tmp_path / "results" / f"table{table}_smoke.json").read_text())
    assert len(body["rows"]) == n_rows and body["skipped"] == []
    assert all(0.0 <= r["summary"]["rank"]["1"]["mean"] <= 100.0 for r in body["rows"])


def _curve(tmp, name, trial, points, **run):
    body = {"run": {"dataset": "cuhk01", "model": "l23", "trial": trial, "seed": 0, "batch_size": 128,
                    "recipe": "cross_camera", "pairing": "shared", "shared_images_per_camera": 1,
                    "steps_per_epoch": 405, "total_steps": 2025, **run},
            "points": [{"step": int(e * 405), "epochs": e, "pairs_seen": int(e * 405 * 129),
                        "results": {"random_gallery": dict(zip(("rank1", "rank5", "rank10", "map"), r))}}
                       for e, r in points]}
    (tmp / f"{name}_curve.json").write_text(json.dumps(body))


def _chart_colours(path) -> set:
    with Image.open(path) as image:  # the charts only, not the legend
        charts = image.convert("RGB").crop((0, 0, 2 * PANEL[0], image.height))
        return {c for _, c in charts.getcolors(1 << 20)}


def test_table_from_committed_results_trains_nothing(tmp_path):
    """Two trials at 5 epochs (their later points ignored); on another recipe, two runs stopped at
    1 and 0.4 epochs: a two-trial line where they meet (0.4) and a one-trial line at 1. Hand-computed
    means and sample stds, the short runs labelled, the missing rows named."""
    res = tmp_path / "res"
    res.mkdir()
    _curve(res, "a", 0, [(1.0, (10, 20, 30, 15)), (5.0, (40, 60, 70, 50)), (6.0, (99, 99, 99, 99))])
    _curve(res, "b", 1, [(5.0, (50, 70, 80, 60))])
    _curve(res, "c", 0, [(0.4, (24, 40, 50, 30)), (1.0, (30, 50, 60, 40))], recipe="shifted_copies",
           pairing="per_pair")
    _curve(res, "d", 1, [(0.2, (1, 2, 3, 4)), (0.4, (20, 44, 50, 36))], recipe="shifted_copies", pairing="per_pair")
    proc = reproduce(tmp_path, "--table=2", f"--from_results={res}")
    body = json.loads((tmp_path / "results" / "table2.json").read_text())
    assert not (tmp_path / "runs").exists()
    lines = {(line["recipe"], line["pairing"], line["epochs"]): line for line in body["lines"]}
    assert set(lines) == {("cross_camera", "shared, K = 1", 5), ("shifted_copies", "per_pair", 1),
                          ("shifted_copies", "per_pair", 0.4)}  # not a's 1-epoch point: no run ends there
    both = lines["cross_camera", "shared, K = 1", 5]
    assert both["trials"] == 2
    assert both["summary"]["rank1"] == {"mean": 45.0, "std": pytest.approx(50 ** 0.5)}  # 40, 50: sd √50
    assert both["summary"]["map"]["mean"] == 55.0
    short = lines["shifted_copies", "per_pair", 1]
    assert short["trials"] == 1 and short["summary"]["rank1"]["std"] == 0
    met = lines["shifted_copies", "per_pair", 0.4]  # c's 0.4 point and d's last: 24, 20 → 22 ± √8
    assert met["trials"] == 2 and met["summary"]["rank1"] == {"mean": 22.0, "std": pytest.approx(8 ** 0.5)}
    assert met["summary"]["rank5"]["mean"] == 42.0 and met["summary"]["map"]["mean"] == 33.0
    text = (tmp_path / "results" / "table2.md").read_text()
    assert "45.00 ± 7.07 / 86.55 / -41.55" in text and "1 (not the paper's 5)" in text
    assert "22.00 ± 2.83 / 86.55 / -64.55" in text and "0.4 (not the paper's 5)" in text
    short_row = next(row for row in text.splitlines() if "| shifted_copies |" in row and "| 1 (not" in row)
    assert "| 30.00 / 86.55 / -56.55 |" in short_row and "±" not in short_row  # one trial: no spread shown
    assert "no training" in text and "Ours-(L2, L3, L4) on cuhk01" in text
    assert "45.00 ± 7.07" in proc.stdout
    # one figure for the one measured row, linked from the table; each (recipe, pairing, protocol)
    # has its own colour in it, and no figure for the rows without a curve
    figures = sorted(p.name for p in (tmp_path / "results").glob("*.png"))
    assert figures == ["table2_cuhk01_l23.png"] and "(table2_cuhk01_l23.png)" in text
    # the cross_camera and the shifted_copies runs (random-gallery protocol), in the charts, not only the legend
    assert {PALETTE[0], PALETTE[1]} <= _chart_colours(tmp_path / "results" / figures[0])


def test_row_figures_give_a_setting_one_colour_and_drop_figures_of_rows_without_curves(tmp_path):
    """Ours-(L2, L3) has two settings, Ours-(L2, L3, L4) only the second: it is drawn in the second's
    colour in both figures, not in the first colour of its own figure. A figure left from curves that
    are gone (VIPeR here) is removed, as it would show runs the table no longer has."""
    res, out = tmp_path / "res", tmp_path / "out"
    res.mkdir()
    out.mkdir()
    _curve(res, "a", 0, [(1.0, (10, 20, 30, 15))])  # cross_camera, shared
    _curve(res, "b", 0, [(1.0, (30, 50, 60, 40))], recipe="shifted_copies", pairing="per_pair")
    _curve(res, "c", 0, [(1.0, (35, 55, 65, 45))], recipe="shifted_copies", pairing="per_pair", model="l234")
    (out / "table2_viper_l23.png").write_bytes(b"stale")
    text = write_from_results(2, str(res), str(out))
    assert sorted(p.name for p in out.glob("*.png")) == ["table2_cuhk01_l23.png", "table2_cuhk01_l234.png"]
    assert "table2_viper_l23" not in text
    first, second = PALETTE[0], PALETTE[1]  # sorted settings: (cross_camera, …) then (shifted_copies, …)
    assert {first, second} <= _chart_colours(out / "table2_cuhk01_l23.png")
    l234 = _chart_colours(out / "table2_cuhk01_l234.png")
    assert second in l234 and first not in l234


def test_table_from_results_leaves_out_runs_off_the_protocol_and_refuses_a_run_twice(tmp_path):
    """A curve trained on another split, learning rate or batch, or from other weights is no
    measurement of the paper's row: left out, with one warning naming the file and the setting.
    The same run's curve in two files would count as two trials: one error line naming both."""
    res = tmp_path / "res"
    res.mkdir()
    _curve(res, "good", 0, [(5.0, (40, 60, 70, 50))])
    _curve(res, "small_test", 1, [(5.0, (90, 95, 99, 90))], test_identities=50)
    _curve(res, "finetuned", 2, [(5.0, (90, 95, 99, 90))], init_from="runs/cuhk03")
    _curve(res, "other_lr", 3, [(5.0, (90, 95, 99, 90))], learning_rate=1e-3)
    proc = reproduce(tmp_path, "--table=2", f"--from_results={res}")
    body = json.loads((tmp_path / "results" / "table2.json").read_text())
    assert [(line["trials"], line["summary"]["rank1"]["mean"]) for line in body["lines"]] == [(1, 40.0)]
    for name, setting in [("small_test", "test_identities=50"), ("finetuned", "init_from=runs/cuhk03"),
                          ("other_lr", "learning_rate=0.001")]:
        assert f"{name}_curve.json: left out of the table, not the paper's setting ({setting})" in proc.stderr
    for path in res.glob("*_curve.json"):
        if path.name != "good_curve.json":
            path.unlink()
    _curve(res, "again", 0, [(5.0, (41, 60, 70, 50))])
    cmd = [sys.executable, "-m", "experiments.reproduce", "--table=2", f"--from_results={res}",
           f"--out_dir={tmp_path / 'results2'}"]
    twice = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert twice.returncode != 0 and "Traceback" not in twice.stderr
    error = [line for line in twice.stderr.splitlines() if "are curves of the same run" in line]
    assert len(error) == 1 and "again_curve.json" in error[0] and "good_curve.json" in error[0], twice.stderr
