"""`make reproduce-market1501` in SMOKE mode on a fixture with the real Market-1501 file names:
prepare, train, evaluate with the standard protocol and two-stage scoring, the table beside the anchors."""
import json
import os
import subprocess
import sys

import pytest

from data_tools import bounding_boxes
from experiments.market1501 import ANCHORS
from reid_tf import datasets, evaluate
from reid_tf.datasets import market1501
from tests import fixtures


def test_smoke_on_market1501_fixture(tmp_path, monkeypatch):
    """The default run's one reproduce path end to end (2 training steps, 4 identities): the
    standard protocol through evaluate_workdir (query / gallery → eval_standard.json, not eval.json),
    which evaluate_workdirs then reuses as it is."""
    src = fixtures.write_market1501(str(tmp_path), identities=4)
    data = tmp_path / "data"
    bounding_boxes.prepare("market1501", market1501.NAME, src, datasets.dataset_dir("market1501", str(data)))
    cmd = [sys.executable, "-m", "experiments.market1501", "--smoke", f"--data_dir={data}",
           f"--out_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=fixtures.REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = (tmp_path / "results" / "market1501_smoke.md").read_text()
    body = json.loads((tmp_path / "results" / "market1501_smoke.json").read_text())
    assert "SMOKE RUN" in text and body["train"]["step"] == 2
    ds = datasets.load_dataset("market1501", datasets.dataset_dir("market1501", str(data)))
    st = body["standard"]
    assert (st["queries"], st["gallery"], st["k"]) == (len(ds.query), len(ds.gallery), 5)
    assert st["pairs"] == 5 * len(ds.query)
    for name in ("eq7", "p_match", "distance"):
        assert 0 <= body["summary"][name]["rank"]["1"]["mean"] <= 100
    for method, _, rank1, m_ap in ANCHORS:  # the published anchors beside the measured rows
        assert method in text and f"{rank1:.2f}" in text and f"{m_ap:.2f}" in text
    assert "Eq. 7 on" in proc.stderr and "ETA" in proc.stderr  # progress of the two-stage scoring
    workdir = tmp_path / "runs" / "l23_market1501_smoke"
    saved = json.loads((workdir / "eval_standard.json").read_text())
    assert saved["protocol"] == "standard" and saved["per_trial"]["standard"] == st
    assert saved["summary"] == body["summary"] and not (workdir / "eval.json").exists()
    monkeypatch.setattr(evaluate, "evaluate_workdir", lambda *a, **k: pytest.fail("evaluated again"))
    again = evaluate.evaluate_workdirs([str(workdir)], str(tmp_path / "trials"))
    assert again["summary"]["eq7"]["rank"]["1"] == pytest.approx(body["summary"]["eq7"]["rank"]["1"])


def test_unprepared_dataset_fails_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "experiments.market1501", f"--data_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=fixtures.REPO)
    assert proc.returncode == 1
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "market1501 is not prepared; run: python -m data_tools.prepare_market1501" in errors[0]
    assert "Traceback" not in proc.stderr
