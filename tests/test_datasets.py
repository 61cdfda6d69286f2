"""reid_tf.datasets: folders, loading, the split protocols of §4.1 (DESIGN "Protocols"), identities
from file names."""
from __future__ import annotations

import importlib
import json
import os
import pkgutil

import pytest

from reid_tf import datasets
from reid_tf.datasets import Dataset, Record, file_names
from reid_tf.datasets.file_names import identity_from_name


def fake(name: str, identities: int, per_camera: int = 1, testsets: int = 0) -> Dataset:
    """An in-memory dataset (no files): `per_camera` images per identity and camera."""
    ids = [1000 * (1 + i % 3) + i for i in range(identities)] if name.startswith("cuhk03") else list(range(identities))
    records = [Record(f"/x/{i}_{c}_{k}.png", i, c) for i in ids for c in (0, 1) for k in range(per_camera)]
    sets = [ids[t::max(1, identities // 100)][:100] for t in range(testsets)] if testsets else None
    return Dataset(datasets.get_spec(name), "/x", records, sets)


def write_dataset(root: str, name: str, identities: int = 8, per_camera: int = 2) -> str:
    """A prepared folder: empty image files (load_dataset only checks that they exist)."""
    os.makedirs(root, exist_ok=True)
    records = []
    for i in range(identities):
        for c in (0, 1):
            for k in range(per_camera):
                path = f"{i}_{c}_{k}.png"
                open(os.path.join(root, path), "w").close()
                records.append({"path": path, "identity": i, "camera": c})
    extra = {"testsets": [[0, 1]]} if name.startswith("cuhk03") else {}
    datasets.write_manifest(root, name, records, **extra)
    return root


def test_dataset_dirs_and_commands(tmp_path):
    data = str(tmp_path)
    assert datasets.DATASETS == ("viper", "cuhk01", "cuhk03_detected", "cuhk03_labeled", "synthetic",
                                 "market1501", "dukemtmcreid", "cuhk03_np_detected", "cuhk03_np_labeled")
    assert datasets.dataset_dir("cuhk03_labeled", data) == os.path.join(data, "cuhk03", "labeled")
    assert datasets.dataset_dir("viper", data) == os.path.join(data, "viper")
    assert datasets.prepare_command("cuhk03_detected", data) == (
        f"python -m data_tools.prepare_cuhk03 --mat /path/to/cuhk-03.mat --out {data}/cuhk03")
    assert datasets.prepare_command("cuhk01", data).endswith(f"--src /path/to/CUHK01 --out {data}/cuhk01")
    with pytest.raises(ValueError, match="unknown dataset 'market'; valid datasets: viper, cuhk01"):
        datasets.dataset_dir("market", data)


def test_load_and_is_prepared(tmp_path):
    data = str(tmp_path)
    assert not datasets.is_prepared("synthetic", data)
    root = write_dataset(datasets.dataset_dir("synthetic", data), "synthetic")
    assert datasets.is_prepared("synthetic", data) and not datasets.is_prepared("viper", data)
    ds = datasets.load_dataset("synthetic", root)
    assert ds.identities == list(range(8)) and len(ds.records) == 32 and ds.testsets is None
    assert all(os.path.isabs(r.path) for r in ds.records)
    with pytest.raises(ValueError, match=r"holds dataset 'synthetic', not 'viper'"):
        datasets.load_dataset("viper", root)
    with pytest.raises(ValueError, match="valid datasets"):
        datasets.load_dataset("viper2", root)
    os.remove(os.path.join(root, "3_1_0.png"))
    with pytest.raises(FileNotFoundError, match=r"3_1_0\.png \(listed in .*manifest\.json\) not found"):
        datasets.load_dataset("synthetic", root)


def test_unprepared_folder_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest\.json not found.*prepare_viper --src /path/to/VIPeR"):
        datasets.load_dataset("viper", str(tmp_path / "viper"))



def _edit_manifest(root: str, edit) -> None:
    path = os.path.join(root, datasets.MANIFEST)
    with open(path) as f:
        body = json.load(f)
    edit(body)
    with open(path, "w") as f:
        json.dump(body, f)


def test_broken_manifests_fail_naming_the_problem(tmp_path):
    root = write_dataset(str(tmp_path / "synthetic"), "synthetic")
    with open(os.path.join(root, datasets.MANIFEST), "w") as f:
        f.write('{"format": ')  # a preparation cut short while writing (not atomically)
    with pytest.raises(ValueError, match=r"manifest\.json is not valid JSON .*re-run the preparation"):
        datasets.load_dataset("synthetic", root)
    root = write_dataset(str(tmp_path / "old"), "synthetic")
    _edit_manifest(root, lambda body: body.update(format="reid_tf/0"))
    with pytest.raises(ValueError, match=r"format 'reid_tf/0', expected"):
        datasets.load_dataset("synthetic", root)
    root = write_dataset(str(tmp_path / "camera"), "synthetic")
    _edit_manifest(root, lambda body: body["records"][5].update(camera=2))
    with pytest.raises(ValueError, match=r"camera must be 0 or 1, got Record\(.*camera=2\)"):
        datasets.load_dataset("synthetic", root)


def test_cuhk03_manifest_without_testsets_fails(tmp_path):
    root = write_dataset(str(tmp_path / "cuhk03"), "cuhk03_labeled")
    assert datasets.load_dataset("cuhk03_labeled", root).testsets == [[0, 1]]
    _edit_manifest(root, lambda body: body.pop("testsets"))
    with pytest.raises(ValueError, match="CUHK03 manifest without testsets"):
        datasets.load_dataset("cuhk03_labeled", root)

@pytest.mark.parametrize("name, n, sets, sizes", [
    ("cuhk03_detected", 1360, 20, (1160, 100, 100)),  # §4.1: 1,160 / 100 / 100
    ("cuhk01", 971, 0, (871, 0, 100)),                # §4.1: 871 / 100
    ("viper", 632, 0, (316, 0, 316)),                 # §4.1: 316 / 316
    ("synthetic", 40, 0, (25, 5, 10)),                # ours: 1/4 test, 1/8 validation
])
def test_split_sizes(name, n, sets, sizes):
    ds = fake(name, n, testsets=sets)
    split = ds.split(trial=1, seed=0)
    assert tuple(map(len, split)) == sizes
    assert sorted(split.train + split.val + split.test) == ds.identities  # disjoint and complete
    assert all(part == sorted(part) for part in split)


def test_split_deterministic_and_varies():
    for name, sets in [("cuhk01", 0), ("viper", 0), ("cuhk03_labeled", 20)]:
        ds = fake(name, 971 if name == "cuhk01" else 632, testsets=sets)
        assert ds.split(3, 7) == ds.split(3, 7)
        assert ds.split(3, 7).test != ds.split(4, 7).test
        assert ds.split(3, 7) != ds.split(3, 8)


def test_cuhk03_split_uses_testsets():
    ds = fake("cuhk03_detected", 1360, testsets=20)
    split = ds.split(trial=5, seed=0)
    assert split.test == sorted(ds.testsets[5]) and not set(split.val) & set(split.test)
    assert tuple(map(len, ds.split(5, 0, val_identities=50))) == (1210, 50, 100)
    with pytest.raises(ValueError, match="20 testsets; no trial 20"):
        ds.split(trial=20, seed=0)
    with pytest.raises(ValueError, match="test_identities is not allowed"):
        ds.split(0, 0, test_identities=50)


def test_split_overrides_and_limits():
    ds = fake("viper", 632)
    assert tuple(map(len, ds.split(0, 0, val_identities=16))) == (300, 16, 316)
    assert tuple(map(len, ds.split(0, 0, test_identities=50))) == (582, 0, 50)
    with pytest.raises(ValueError, match="cuhk01 has 30 identities; cannot take 100 test identities"):
        fake("cuhk01", 30).split(0, 0)
    with pytest.raises(ValueError, match="cannot take 316 for validation"):
        ds.split(0, 0, val_identities=316)


def test_records_of():
    ds = fake("viper", 10, per_camera=2)
    assert {r.identity for r in datasets.records_of(ds, [2, 5])} == {2, 5}
    assert len(datasets.records_of(ds, [2, 5])) == 8


def test_identities_from_the_datasets_file_names():
    assert identity_from_name("x/cam_a/0012_1.png") == 12  # synthetic
    assert identity_from_name("VIPeR/cam_b/607_90.bmp") == 607
    assert identity_from_name("campus/0042003.png") == 42  # CUHK01 NNNNIII
    assert identity_from_name("cuhk03/2_017_1_06.png") == 2017  # CUHK03 as prepared: 1000 · pair + id
    assert identity_from_name("bounding_box_test/0002_c1s1_000451_03.jpg") == 2  # Market-1501
    assert identity_from_name("holiday.jpg") is None
    assert identity_from_name("p17-cam3.png", r"^p(\d+)") == 17
    assert identity_from_name("bounding_box_test/-1_c3s1_000551_00.jpg") == -1  # Market-1501 junk
    assert identity_from_name("query/0005_c2_f0046985.jpg") == 5  # DukeMTMC-reID
    assert identity_from_name("query/0003_c2_27.png") == 3  # CUHK03-NP


def test_every_datasets_file_naming_is_asked():
    """Each dataset module says how its files are named, and identity_from_name asks that convention."""
    for info in pkgutil.iter_modules(datasets.__path__):
        module = importlib.import_module(f"reid_tf.datasets.{info.name}")
        if any(isinstance(v, datasets.DatasetSpec) for v in vars(module).values()):
            assert module.FILE_IDENTITY in file_names.CONVENTIONS, info.name
