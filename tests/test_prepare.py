"""data_tools.prepare_*: formats, counts, camera assignment, errors, idempotence (DESIGN "Protocols",
"cuhk-03.mat layout"). Fixtures are written at test time in the original formats (tests/fixtures.py)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from data_tools import common, prepare_cuhk01, prepare_cuhk03, prepare_viper
from data_tools.common import DatasetError
from reid_tf import datasets
from tests import fixtures

REAL_CUHK01 = os.path.join(fixtures.SHARED_DATA, "CUHK01")


@pytest.fixture(scope="module")
def viper_src(tmp_path_factory) -> str:
    return fixtures.write_viper(str(tmp_path_factory.mktemp("viper")))


@pytest.fixture
def viper_copy(viper_src, tmp_path) -> str:
    """A private copy of the VIPeR fixture that a test may damage."""
    return shutil.copytree(viper_src, str(tmp_path / "VIPeR"))


@pytest.fixture(scope="module")
def cuhk03_mat(tmp_path_factory) -> str:
    return fixtures.write_cuhk03_mat(str(tmp_path_factory.mktemp("cuhk03") / "cuhk-03.mat"))


def manifest(out: str) -> dict:
    with open(os.path.join(out, datasets.MANIFEST)) as f:
        return json.load(f)


def truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


# VIPeR -------------------------------------------------------------------------------------------
def test_viper_counts_and_cameras(viper_src, tmp_path):
    summary = prepare_viper.prepare(viper_src, str(tmp_path / "viper"))
    assert summary == {"identities": 632, "images": 1264, "images_per_camera": {0: 632, 1: 632}}
    ds = datasets.load_dataset("viper", str(tmp_path / "viper"))
    for r in ds.records:
        folder, name = os.path.split(r.path)
        assert os.path.isabs(r.path) and os.path.basename(folder) == ("cam_a", "cam_b")[r.camera]
        assert int(name[:3]) == r.identity
    last = int(fixtures.viper_names("a")[-1][:3])  # 873 with the real file list (gaps in the numbering)
    assert ds.identities[:3] == [0, 1, 2] and ds.identities[-1] == last


def test_viper_rerun_is_idempotent(viper_src, tmp_path):
    out = str(tmp_path / "viper")
    prepare_viper.prepare(viper_src, out)
    first = manifest(out)
    prepare_viper.prepare(viper_src, out)
    assert manifest(out) == first and sorted(os.listdir(out)) == [datasets.MANIFEST]


def test_viper_missing_folder(viper_copy, tmp_path):
    shutil.rmtree(os.path.join(viper_copy, "cam_b"))
    with pytest.raises(DatasetError, match=r"cam_b: folder not found"):
        prepare_viper.prepare(viper_copy, str(tmp_path / "out"))
    with pytest.raises(DatasetError, match="nowhere: folder not found"):
        prepare_viper.prepare(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_viper_wrong_count(viper_copy, tmp_path):
    os.remove(os.path.join(viper_copy, "cam_a", fixtures.viper_names("a")[0]))
    with pytest.raises(DatasetError, match=r"cam_a: 631 \.bmp images, expected 632"):
        prepare_viper.prepare(viper_copy, str(tmp_path / "out"))


def test_viper_bad_name(viper_copy, tmp_path):
    os.rename(os.path.join(viper_copy, "cam_b", fixtures.viper_names("b")[0]), os.path.join(viper_copy, "cam_b", "person0.bmp"))
    with pytest.raises(DatasetError, match=r"cam_b/person0\.bmp: unparseable name"):
        prepare_viper.prepare(viper_copy, str(tmp_path / "out"))


def test_viper_identities_must_pair(viper_copy, tmp_path):
    os.rename(os.path.join(viper_copy, "cam_b", fixtures.viper_names("b")[0]), os.path.join(viper_copy, "cam_b", "999_45.bmp"))
    with pytest.raises(DatasetError, match=r"only in cam_a: \[0\], only in cam_b: \[999\]"):
        prepare_viper.prepare(viper_copy, str(tmp_path / "out"))


def test_viper_truncated_image_is_named(viper_copy, tmp_path):
    name = fixtures.viper_names("b")[4]  # 004_90.bmp with the real file list
    truncate(os.path.join(viper_copy, "cam_b", name))
    with pytest.raises(DatasetError, match=rf"cam_b/{re.escape(name)}: unreadable or truncated"):
        prepare_viper.prepare(viper_copy, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / datasets.MANIFEST)


# CUHK01 ------------------------------------------------------------------------------------------
def test_cuhk01_counts_and_cameras(tmp_path):
    src = fixtures.write_cuhk01(str(tmp_path), identities=12)
    summary = prepare_cuhk01.prepare(src, str(tmp_path / "out"), expect_identities=12)
    assert summary == {"identities": 12, "images": 48, "images_per_camera": {0: 24, 1: 24}}
    for r in datasets.load_dataset("cuhk01", str(tmp_path / "out")).records:
        name = os.path.basename(r.path)
        assert int(name[:4]) == r.identity and r.camera == (0 if name[4:7] in ("001", "002") else 1)


def test_cuhk01_errors(tmp_path):
    src = fixtures.write_cuhk01(str(tmp_path), identities=5)
    campus, out = os.path.join(src, "campus"), str(tmp_path / "out")
    with pytest.raises(DatasetError, match=r"campus: 5 identities \(20 images\), expected 971 \(3884 images\)"):
        prepare_cuhk01.prepare(src, out)
    with pytest.raises(DatasetError, match=r"CUHK01x: folder not found"):
        prepare_cuhk01.prepare(src + "x", out, expect_identities=0)
    os.rename(os.path.join(campus, "0003004.png"), os.path.join(campus, "0003005.png"))
    with pytest.raises(DatasetError, match=r"0003005\.png: unparseable name"):
        prepare_cuhk01.prepare(src, out, expect_identities=5)
    os.remove(os.path.join(campus, "0003005.png"))
    with pytest.raises(DatasetError, match=r"identity 0003 has images \[1, 2, 3\], expected 1–4"):
        prepare_cuhk01.prepare(src, out, expect_identities=5)
    shutil.rmtree(campus)
    with pytest.raises(DatasetError, match=r"campus: folder not found"):
        prepare_cuhk01.prepare(src, out)


def test_cuhk01_truncated_image_is_named(tmp_path):
    src = fixtures.write_cuhk01(str(tmp_path), identities=3)
    truncate(os.path.join(src, "campus", "0002003.png"))
    with pytest.raises(DatasetError, match=r"0002003\.png: unreadable or truncated"):
        prepare_cuhk01.prepare(src, str(tmp_path / "out"), expect_identities=3)


def test_cuhk01_real_data(tmp_path):
    fixtures.require_shared_data(REAL_CUHK01)
    summary = prepare_cuhk01.prepare(REAL_CUHK01, str(tmp_path / "cuhk01"))
    assert summary == {"identities": 971, "images": 3884, "images_per_camera": {0: 1942, 1: 1942}}
    ds = datasets.load_dataset("cuhk01", str(tmp_path / "cuhk01"))
    assert all(r.path.startswith(os.path.abspath(REAL_CUHK01)) for r in ds.records)  # referenced, not copied
    split = ds.split(trial=0, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (871, 0, 100)


# CUHK03 ------------------------------------------------------------------------------------------
def expected_cuhk03(kind: str, identities=(6, 5, 4, 3, 2)) -> dict:
    """Counts the fixture should give: kept pairs 1–3, dropped 4–5."""
    counts = {"kept_identities": 0, "kept_images": 0, "dropped_identities": 0, "dropped_images": 0,
              "images_per_camera": {0: 0, 1: 0}}
    for pair, n in enumerate(identities, start=1):
        prefix = "kept" if pair <= 3 else "dropped"
        for i in range(1, n + 1):
            full = [c for c in range(1, 11) if not fixtures.cuhk03_cell_is_empty(kind, pair, i, c)]
            counts[f"{prefix}_identities"] += bool(full)
            counts[f"{prefix}_images"] += len(full)
            if pair <= 3:
                for c in full:
                    counts["images_per_camera"][int(c > 5)] += 1
    return counts


@pytest.fixture(scope="module")
def cuhk03_out(cuhk03_mat, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("cuhk03_out"))
    return out, prepare_cuhk03.prepare(cuhk03_mat, out)


@pytest.mark.parametrize("kind", ["detected", "labeled"])
def test_cuhk03_kept_and_dropped(cuhk03_out, kind):
    out, summary = cuhk03_out
    expected = expected_cuhk03(kind)
    assert {k: summary[kind][k] for k in expected} == expected
    assert expected["dropped_identities"] == 5 and expected["kept_identities"] == 15
    ds = datasets.load_dataset(f"cuhk03_{kind}", os.path.join(out, kind))
    assert len(ds.records) == expected["kept_images"]
    assert {i // 1000 for i in ds.identities} == {1, 2, 3}  # camera pairs 4–5 dropped


@pytest.mark.parametrize("kind", ["detected", "labeled"])
def test_cuhk03_names_cameras_and_pixels(cuhk03_out, kind):
    out, _ = cuhk03_out
    ds = datasets.load_dataset(f"cuhk03_{kind}", os.path.join(out, kind))
    for r in ds.records:
        pair, identity, view, column = map(int, os.path.basename(r.path)[:-4].split("_"))
        assert r.identity == 1000 * pair + identity and r.camera == view - 1 == int(column > 5)
        assert not fixtures.cuhk03_cell_is_empty(kind, pair, identity, column)
        expected = fixtures.cuhk03_image(kind, pair, identity, column)  # H×W×3: checks the transposes
        np.testing.assert_array_equal(np.asarray(Image.open(r.path)), expected)


def test_cuhk03_testsets(tmp_path):
    """Testsets written as MATLAB [camera pair, identity] rows; the labels (1000 · pair + identity)
    written out by hand. Pair ≠ identity in every row, so a swapped or untransposed read shows."""
    rows = [[(1, 2), (3, 1), (2, 5)], [(2, 1), (1, 6), (3, 4)]]
    mat = fixtures.write_cuhk03_mat(str(tmp_path / "cuhk-03.mat"), testset_rows=rows)
    prepare_cuhk03.prepare(mat, str(tmp_path / "out"))
    detected = datasets.load_dataset("cuhk03_detected", str(tmp_path / "out" / "detected"))
    labeled = datasets.load_dataset("cuhk03_labeled", str(tmp_path / "out" / "labeled"))
    assert detected.testsets == [[1002, 3001, 2005], [2001, 1006, 3004]]
    assert labeled.testsets == detected.testsets


def test_cuhk03_outer_cells_either_orientation(cuhk03_mat, cuhk03_out, tmp_path):
    """The 1×5 and 1×20 cells read the same whether h5py shows them as (1, n) or (n, 1)."""
    path = shutil.copy(cuhk03_mat, tmp_path / "cuhk-03.mat")
    with h5py.File(path, "r+") as f:
        for key in prepare_cuhk03.KEYS:
            refs = f[key][()]
            del f[key]
            f.create_dataset(key, data=refs.T, dtype=h5py.ref_dtype)
    assert prepare_cuhk03.prepare(str(path), str(tmp_path / "out")) == cuhk03_out[1]


def test_cuhk03_rerun_is_idempotent(cuhk03_mat, tmp_path):
    prepare_cuhk03.prepare(cuhk03_mat, str(tmp_path))
    first = {k: manifest(str(tmp_path / k)) for k in ("detected", "labeled")}
    files = sorted(os.listdir(tmp_path / "detected"))
    prepare_cuhk03.prepare(cuhk03_mat, str(tmp_path))
    assert {k: manifest(str(tmp_path / k)) for k in first} == first
    assert sorted(os.listdir(tmp_path / "detected")) == files  # no temporary files left behind


def test_cuhk03_interrupted_rerun_does_not_load(cuhk03_mat, tmp_path, monkeypatch):
    prepare_cuhk03.prepare(cuhk03_mat, str(tmp_path))
    original, calls = common.write_png, iter(range(10**6))

    def interrupted_write_png(image, path):
        if next(calls) == 7:
            raise KeyboardInterrupt
        original(image, path)

    monkeypatch.setattr(common, "write_png", interrupted_write_png)
    with pytest.raises(KeyboardInterrupt):
        prepare_cuhk03.prepare(cuhk03_mat, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"detected/manifest.json not found.*prepare_cuhk03 --mat"):
        datasets.load_dataset("cuhk03_detected", str(tmp_path / "detected"))


def test_cuhk03_not_hdf5(tmp_path):
    v5 = tmp_path / "cuhk-03.mat"
    v5.write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64".ljust(128, b" ") + b"\x00" * 64)
    with pytest.raises(DatasetError, match=r"cuhk-03\.mat: a MATLAB v5 \.mat file; .* must be MATLAB v7\.3"):
        prepare_cuhk03.prepare(str(v5), str(tmp_path / "out"))
    v5.write_bytes(b"hello")
    with pytest.raises(DatasetError, match=r"not an HDF5 file; .* must be MATLAB v7\.3"):
        prepare_cuhk03.prepare(str(v5), str(tmp_path / "out"))
    with pytest.raises(DatasetError, match=r"missing\.mat: file not found"):
        prepare_cuhk03.prepare(str(tmp_path / "missing.mat"), str(tmp_path / "out"))


def test_cuhk03_missing_keys(tmp_path):
    path = str(tmp_path / "other.mat")
    with h5py.File(path, "w") as f:
        f["detected"] = np.zeros(3)
    with pytest.raises(DatasetError, match=r"other\.mat: no labeled, testsets \(found detected\)"):
        prepare_cuhk03.prepare(path, str(tmp_path / "out"))


def test_cuhk03_bad_cell(tmp_path):
    path = fixtures.write_cuhk03_mat(str(tmp_path / "cuhk-03.mat"), identities=(2, 2, 2, 1, 1), test_size=2)
    with h5py.File(path, "r+") as f:
        del f["labeled"]
        f["labeled"] = np.zeros((1, 5))
    with pytest.raises(DatasetError, match=r"cuhk-03\.mat: labeled: not a cell array of object references"):
        prepare_cuhk03.prepare(path, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "labeled" / datasets.MANIFEST)


# Command line ------------------------------------------------------------------------------------
def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=fixtures.REPO, timeout=60)


def test_cli_error_is_one_line(tmp_path):
    result = run("data_tools.prepare_viper", f"--src={tmp_path}/VIPeR", f"--out={tmp_path}/out")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path}/VIPeR: folder not found "
                                                  "(expected the VIPeR folder holding cam_a/ and cam_b/)"]


def test_cli_logs_what_it_found(tmp_path):
    src = fixtures.write_cuhk01(str(tmp_path), identities=4)
    result = run("data_tools.prepare_cuhk01", f"--src={src}", f"--out={tmp_path}/out", "--expect_identities=4")
    assert result.returncode == 0, result.stderr
    assert "cuhk01: 4 identities, 16 images (camera 0: 8, camera 1: 8)" in result.stderr
    assert datasets.load_dataset("cuhk01", str(tmp_path / "out")).identities == [1, 2, 3, 4]
