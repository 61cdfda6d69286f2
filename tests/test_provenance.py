"""Provenance of result files (reid_tf.provenance) and the sources Table 2's lines name
(experiments.reproduce)."""
import json
import os
import subprocess

import numpy as np
import pytest

from experiments import make_card, reproduce
from reid_tf import provenance
from tests import fixtures


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_code_version_names_the_commit_and_a_changed_tree(tmp_path):
    """Would fail if a tracked change were not reported dirty, or the commit were another."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "a.py").write_text("x = 1\n")
    git("add", "a.py", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert provenance.code_version(str(repo)) == {"commit": head, "dirty": False}
    (repo / "untracked.txt").write_text("not code")  # untracked files do not change what the commit ran
    assert provenance.code_version(str(repo))["dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.code_version(str(repo)) == {"commit": head, "dirty": True}
    assert provenance.code_version(str(tmp_path)) == {"commit": "unknown", "dirty": "unknown"}


def test_a_record_has_every_field_and_its_end():
    record = provenance.start(run_id="abc", gallery_seed=3, measure=False)
    assert record["finished"] is None
    for field in ("commit", "dirty", "run_id", "command", "machine", "started", "gallery_seed"):
        assert record[field] not in (None, ""), field
    assert record["run_id"] == "abc" and record["gallery_seed"] == 3
    assert provenance.start(measure=False)["run_id"] == "unknown"  # never guessed
    assert provenance.finish(record)["finished"] >= record["started"]
    assert record["machine"]["cores"] == os.cpu_count() and record["machine"]["cpu"]


def test_matmul_gauge_is_a_plausible_rate():
    assert 0.1 < provenance.matmul_gflops(256, repeats=2) < 1e5


def test_table2_lines_name_the_file_and_step_behind_them():
    """Every from-results line of Table 2 lists the curve files and steps it averages, and those
    points give its figures back (would fail if a source named another step or file)."""
    curves = reproduce.read_curves(os.path.join(fixtures.REPO, "results"))
    lines = reproduce.from_results(2, curves)
    assert lines
    for line in lines:
        assert len(line["sources"]) == line["trials"]
        values = []
        for source in line["sources"]:
            with open(os.path.join(fixtures.REPO, source["file"]) if not os.path.isabs(source["file"])
                      else source["file"]) as f:
                body = json.load(f)
            (point,) = [p for p in body["points"] if p["step"] == source["step"]]
            assert body["run"]["trial"] == source["trial"]
            values.append(point["results"][line["protocol"]]["rank1"])
        assert np.mean(values) == pytest.approx(line["summary"]["rank1"]["mean"])


def test_committed_result_files_carry_provenance():
    """Every curve, eval and table file in results/ has a provenance record (the old ones with what
    could be recovered and "unknown" for the rest)."""
    folder = os.path.join(fixtures.REPO, "results")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json") and not name.endswith("_run.json"):
            with open(os.path.join(folder, name)) as f:
                body = json.load(f)
            assert body.get("provenance"), name
            records = body["provenance"] if isinstance(body["provenance"], list) else [body["provenance"]]
            for record in records:
                for field in ("commit", "run_id", "command", "machine", "started", "finished", "gallery_seed"):
                    assert field in record, (name, field)


def test_log_summary_reads_dates_and_the_median_rate(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(
        "I0000 00:00:1796216612.213051    2404 port.cc:153] oneDNN custom operations are on.\n"
        "I1202 13:03:34.241609 1 train.py:324] --resume: starting a fresh run\n"
        "I1202 13:04:07.741516 1 callbacks.py:180] step 6/38280  25.1 pairs/s  loss=1.1  ETA 54:39:41\n"
        "I1202 13:04:39.200993 1 callbacks.py:180] step 26/38280  82.0 pairs/s  loss=1.0  ETA 25:27:54\n"
        "I1203 01:05:10.353389 1 callbacks.py:180] step 46/38280  82.8 pairs/s  loss=0.9  ETA 21:34:42\n")
    os.utime(log, (1796400000, 1796400000))  # 2026-12-04: the log's year
    summary = make_card.log_summary(str(log))
    assert summary["started"] == "2026-12-02T13:03:34" and summary["ended"] == "2026-12-03T01:05:10"
    assert summary["rate_pairs_per_s"] == 82.0 and summary["rate_lines"] == 3
    assert make_card.log_summary(str(tmp_path / "none.log"))["rate_pairs_per_s"] == "unknown"
