"""data_tools.prepare_market1501 (and the same reader for DukeMTMC-reID / CUHK03-NP) on fixtures with
the real Market-1501 file names (tests/fixtures.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from data_tools import bounding_boxes
from data_tools.common import DatasetError
from reid_tf import datasets
from reid_tf.datasets import cuhk03_np, dukemtmcreid, market1501
from tests import fixtures



def prepare(src, out):
    return bounding_boxes.prepare("market1501", market1501.NAME, src, out, market1501.EXPECTED)


def test_full_release_counts(tmp_path):
    """All 36,036 real names (one shared tiny JPEG): the counts of the release, cameras 0-based."""
    fixtures.require_shared_data(os.path.join(fixtures.SHARED_DATA, "filelists", "Market1501_query.txt"))
    src = fixtures.write_market1501(str(tmp_path), distinct=False)
    summary = prepare(src, str(tmp_path / "market1501"))
    train, query, gallery = (summary[f] for f in fixtures.MARKET_FOLDERS)
    assert (train["identities"], train["images"], train["junk"]) == (751, 12936, 0)
    assert (query["identities"], query["images"]) == (750, 3368)
    assert (gallery["identities"], gallery["images"]) == (752, 19732)  # 750 + distractors (0) + junk (-1)
    assert (gallery["junk"], gallery["distractors"]) == (3819, 2798)
    assert gallery["images"] - gallery["junk"] == 15913  # the gallery every query is ranked against
    assert sorted(train["images_per_camera"]) == [1, 2, 3, 4, 5, 6]
    ds = datasets.load_dataset("market1501", str(tmp_path / "market1501"))
    assert len(ds.records) == 12936 and len(ds.query) == 3368 and len(ds.gallery) == 19732
    assert {r.camera for r in ds.gallery} == set(range(6))
    assert sum(r.path.endswith(".jpg.jpg") for r in ds.gallery + ds.query) == 24  # as in the release
    split = ds.split(trial=0, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (751, 0, 750)
    assert len(ds.split(0, 0, val_identities=50).train) == 701


def test_names_identities_and_cameras(tmp_path):
    src = fixtures.write_market1501(str(tmp_path), identities=3)
    prepare(src, str(tmp_path / "out"))
    ds = datasets.load_dataset("market1501", str(tmp_path / "out"))
    for records, folder in ((ds.records, "bounding_box_train"), (ds.query, "query"), (ds.gallery, "bounding_box_test")):
        for r in records:
            name = os.path.basename(r.path)
            assert os.path.basename(os.path.dirname(r.path)) == folder and os.path.isabs(r.path)
            assert r.identity == int(name.split("_")[0]) and r.camera == int(name.split("_")[1][1]) - 1
    assert {r.identity for r in ds.gallery} >= {-1, 0}  # junk and distractors kept in the gallery
    assert len(ds.identities) == 3 and len({r.identity for r in ds.query}) == 3
    with pytest.raises(ValueError, match="test_identities is not allowed"):
        ds.split(0, 0, test_identities=2)


def test_errors_name_the_file(tmp_path):
    src = fixtures.write_market1501(str(tmp_path), identities=2)
    first = sorted(os.listdir(os.path.join(src, "query")))[0]
    os.rename(os.path.join(src, "query", first), os.path.join(src, "query", "person.jpg"))
    with pytest.raises(DatasetError, match=r"query/person\.jpg: unparseable name"):
        prepare(src, str(tmp_path / "out"))
    os.remove(os.path.join(src, "query", "person.jpg"))
    victim = os.path.join(src, "bounding_box_test", sorted(os.listdir(os.path.join(src, "bounding_box_test")))[3])
    with open(victim, "r+b") as f:
        f.truncate(10)
    with pytest.raises(DatasetError, match=rf"{os.path.basename(victim)}: unreadable or truncated"):
        prepare(src, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / datasets.MANIFEST)
    with pytest.raises(DatasetError, match=r"nowhere: folder not found"):
        prepare(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_command_line_logs_per_folder_and_fails_in_one_line(tmp_path):
    src = fixtures.write_market1501(str(tmp_path), identities=2)
    cmd = [sys.executable, "-m", "data_tools.prepare_market1501", f"--src={src}", f"--out={tmp_path}/out"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=fixtures.REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "market1501 query: 2 identities" in done.stderr and "bounding_box_test:" in done.stderr
    assert re.search(r"bounding_box_test: \d+ identities, \d+ images \(\d+ junk, \d+ distractors\); ", done.stderr)
    assert datasets.is_prepared("market1501", str(tmp_path)) is False  # out is not under data_dir/market1501
    assert datasets.load_dataset("market1501", str(tmp_path / "out")).query
    cmd[3] = f"--src={tmp_path}/missing"
    failed = subprocess.run(cmd, capture_output=True, text=True, cwd=fixtures.REPO, timeout=120)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines() == [f"error: {tmp_path}/missing: folder not found (expected the "
                                                  "dataset folder holding bounding_box_train/, query/, bounding_box_test/)"]


DUKE_NAMES = ["0001_c2_f0046182.jpg", "0001_c8_f0000001.jpg", "0005_c5_f0111111.jpg"]


def _write_folders(src, names: dict[str, list[str]]) -> None:
    for folder, files in names.items():
        os.makedirs(src / folder)
        for k, name in enumerate(files):
            Image.fromarray(fixtures._image(8, 4, k)).save(src / folder / name)


@pytest.mark.parametrize("module, spec, names, suffix", [
    (dukemtmcreid, dukemtmcreid.SPEC, DUKE_NAMES, ".jpg"),
    (cuhk03_np, cuhk03_np.DETECTED, ["0001_c1_1.png", "0001_c2_7.png", "0003_c1_2.png"], ".png"),
])
def test_same_reader_for_duke_and_cuhk03_np(tmp_path, module, spec, names, suffix):
    src = tmp_path / "src"
    _write_folders(src, {folder: names for folder in fixtures.MARKET_FOLDERS})
    out = str(tmp_path / spec.name)
    bounding_boxes.prepare(spec.name, module.NAME, str(src), out, suffix=suffix)
    ds = datasets.load_dataset(spec.name, out)
    assert sorted({r.camera for r in ds.gallery}) == sorted({int(n.split("_")[1][1:]) - 1 for n in names})
    assert ds.spec.protocol == datasets.STANDARD and ds.identities == sorted({int(n[:4]) for n in names})
    assert datasets.prepare_command(spec.name, "/d").startswith(f"python -m data_tools.prepare_{module.__name__.split('.')[-1]}")


def test_duke_log_counts_its_distractor_identities(tmp_path, caplog):
    """Duke's 408 distractor identities have ordinary numbers and are in the gallery only: the
    gallery's line counts them (it said "0 distractors", counting identity 0000 alone)."""
    distractors = ["0007_c3_f0000002.jpg", "0009_c1_f0000003.jpg", "0009_c6_f0000004.jpg"]
    _write_folders(tmp_path / "src", {"bounding_box_train": ["0002_c1_f0000005.jpg"], "query": DUKE_NAMES,
                                      "bounding_box_test": DUKE_NAMES + distractors})
    with caplog.at_level("INFO"):
        summary = bounding_boxes.prepare("dukemtmcreid", dukemtmcreid.NAME, str(tmp_path / "src"),
                                         str(tmp_path / "out"))
    lines = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records}
    assert lines["dukemtmcreid bounding_box_test"].startswith(
        "dukemtmcreid bounding_box_test: 4 identities, 6 images (2 gallery-only distractor identities); ")
    assert "distractor" not in lines["dukemtmcreid query"] and "junk" not in lines["dukemtmcreid query"]
    assert summary["bounding_box_test"]["gallery_only"] == 2 and summary["bounding_box_test"]["distractors"] == 0


# CUHK03-NP as downloaded: cuhk03-np/{detected,labeled}/ each with Market-1501's three folders and
# names PPPP_cC_N.png (identity, camera, image number), one query per camera of a test identity.
CUHK03_NP_NAMES = {
    "bounding_box_train": ["0001_c1_1.png", "0001_c2_6.png", "0002_c1_11.png", "0002_c2_16.png"],
    "query": ["0003_c1_22.png", "0003_c2_27.png", "0004_c1_31.png", "0004_c2_36.png"],
    "bounding_box_test": ["0003_c1_21.png", "0003_c1_23.png", "0003_c2_26.png", "0004_c1_32.png", "0004_c2_35.png"],
}


def test_cuhk03_np_in_its_download_layout(tmp_path):
    for kind in ("detected", "labeled"):
        for folder, names in CUHK03_NP_NAMES.items():
            os.makedirs(tmp_path / "cuhk03-np" / kind / folder)
            for k, name in enumerate(names):
                Image.fromarray(fixtures._image(8, 4, k)).save(tmp_path / "cuhk03-np" / kind / folder / name)
    for kind, spec in (("detected", cuhk03_np.DETECTED), ("labeled", cuhk03_np.LABELED)):
        out = str(tmp_path / spec.name)
        summary = bounding_boxes.prepare(spec.name, cuhk03_np.NAME, str(tmp_path / "cuhk03-np" / kind), out,
                                         suffix=".png")
        assert [summary[f]["images"] for f in fixtures.MARKET_FOLDERS] == [4, 4, 5]
        assert all(summary[f]["junk"] == summary[f]["distractors"] == 0 for f in fixtures.MARKET_FOLDERS)
        ds = datasets.load_dataset(spec.name, out)
        assert ds.identities == [1, 2] and {r.identity for r in ds.query} == {3, 4}
        assert [(r.identity, r.camera) for r in ds.query] == [(3, 0), (3, 1), (4, 0), (4, 1)]
    # Names are checked whole: a tail that is not the image number is not the release's.
    gallery = tmp_path / "cuhk03-np" / "detected" / "bounding_box_test"
    os.rename(gallery / "0004_c2_35.png", gallery / "0004_c2_35a.png")
    with pytest.raises(DatasetError, match=r"0004_c2_35a\.png: unparseable name"):
        bounding_boxes.prepare("cuhk03_np_detected", cuhk03_np.NAME, str(gallery.parent), str(tmp_path / "x"),
                               suffix=".png")
