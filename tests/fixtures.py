"""Writers of small datasets in the exact original formats, for tests (nothing is stored in the repo).

- write_viper: VIPeR/cam_a, cam_b with the real 632 + 632 file names (from the shared filelists),
  tiny BMPs.
- write_cuhk01: CUHK01/campus/PPPPNNN.png, 4 images per identity.
- write_cuhk03_mat: a MATLAB v7.3-style cuhk-03.mat (HDF5 with a MATLAB header, `#refs#` group,
  cell arrays of object references stored transposed, empty cells, transposed image datasets and
  the `testsets` cell), with few identities per camera pair.
"""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Read-only shared data (real CUHK01 images, real file-name lists); never copied into the repo.
SHARED_DATA = os.environ.get("REID_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))

VIPER_ANGLES = (0, 45, 90, 135, 180)


def require_shared_data(path: str) -> str:
    """`path` under SHARED_DATA for a test on real files: skipped where it is absent, except under
    CI=true, where ../shared/data is part of the set-up and its absence must fail, not pass quietly."""
    if os.path.exists(path):
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{path} not found: CI needs the shared data beside the repository (../shared/data) "
                    "or REID_SHARED_DATA naming it")
    pytest.skip(f"{path} not found (shared data absent)")


def viper_names(camera: str) -> list[str]:
    """The real VIPeR file names of cam_a / cam_b; the same format if the filelists are absent."""
    path = os.path.join(SHARED_DATA, "filelists", f"VIPeR_cam_{camera}.txt")
    if os.path.isfile(path):
        with open(path) as f:
            return [os.path.basename(line) for line in f.read().split()]
    return [f"{i:03d}_{VIPER_ANGLES[(i + (camera == 'b')) % 5]}.bmp" for i in range(632)]


def _image(h: int, w: int, *key: int) -> np.ndarray:
    """A small deterministic RGB image that differs per key."""
    return np.random.default_rng(list(key)).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_viper(root: str, size: tuple[int, int] = (16, 6)) -> str:
    """Write root/VIPeR/cam_a, cam_b (632 BMPs each, H×W = size; the real ones are 128×48)."""
    src = os.path.join(root, "VIPeR")
    for camera_index, camera in enumerate("ab"):
        folder = os.path.join(src, f"cam_{camera}")
        os.makedirs(folder, exist_ok=True)
        for name in viper_names(camera):
            Image.fromarray(_image(*size, int(name[:3]), camera_index)).save(os.path.join(folder, name))
    return src


def write_cuhk01(root: str, identities: int = 971, size: tuple[int, int] = (16, 6)) -> str:
    """Write root/CUHK01/campus/PPPPNNN.png, 4 images per identity (the real ones are 160×60)."""
    src = os.path.join(root, "CUHK01")
    folder = os.path.join(src, "campus")
    os.makedirs(folder, exist_ok=True)
    for identity in range(1, identities + 1):
        for image in range(1, 5):
            Image.fromarray(_image(*size, identity, image)).save(
                os.path.join(folder, f"{identity:04d}{image:03d}.png"), compress_level=1)
    return src


# cuhk-03.mat fixture ---------------------------------------------------------------------------
CUHK03_KINDS = ("detected", "labeled")


def cuhk03_cell_is_empty(kind: str, pair: int, identity: int, column: int) -> bool:
    """Which cells of the fixture are empty (1-based pair, identity, column), as in the real file
    some are: the last column of every 2nd identity (detected) / 3rd identity (labeled), and in
    detected all of camera 1 for identity 1 of pair 2 (an identity only one camera saw)."""
    if kind == "detected" and pair == 2 and identity == 1 and column > 5:
        return True
    return column == 10 and identity % (2 if kind == "detected" else 3) == 0


def cuhk03_image(kind: str, pair: int, identity: int, column: int,
                 shape: tuple[int, int] = (12, 5)) -> np.ndarray:
    """The H×W×3 image the fixture stores in one cell."""
    return _image(*shape, CUHK03_KINDS.index(kind), pair, identity, column)


def write_cuhk03_mat(path: str, identities: tuple[int, ...] = (6, 5, 4, 3, 2), testsets: int = 20,
                     test_size: int = 3, shape: tuple[int, int] = (12, 5), seed: int = 0,
                     testset_rows: list[list[tuple[int, int]]] | None = None) -> str:
    """Write a v7.3-style cuhk-03.mat with `identities[p]` identities in camera pair p + 1.

    The testsets are `testsets` random draws of `test_size` kept identities, or exactly
    `testset_rows` (1-based [camera pair, identity] rows, one list per testset) when given.

    Layout as MATLAB writes it (DESIGN "cuhk-03.mat layout"): a 512-byte MATLAB header (HDF5
    user block), data in `#refs#`, every cell an object reference, everything stored transposed.
    The outer 1×5 / 1×20 cells have h5py shape (1, 5) / (1, 20), as readers of the real file expect
    (`f["detected"][0]`); the reader must not depend on that orientation.
    """
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        refs = f.create_group("#refs#")
        counter = iter(range(10**9))

        def store(data: np.ndarray, matlab_class: str, empty: bool = False) -> h5py.Reference:
            ds = refs.create_dataset(f"r{next(counter)}", data=data)
            ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            if empty:
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds.ref

        def cell_dataset(group, name, refs_array: np.ndarray) -> h5py.Dataset:
            ds = group.create_dataset(name, data=refs_array, dtype=h5py.ref_dtype)
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
            return ds

        empty_cell = np.zeros(2, dtype=np.uint64)  # MATLAB stores an empty [] as its dims (0, 0)
        for kind in CUHK03_KINDS:
            pair_refs = []
            for pair, n in enumerate(identities, start=1):
                cells = np.empty((n, 10), dtype=object)  # MATLAB view: identities × 10
                for i in range(1, n + 1):
                    for c in range(1, 11):
                        cells[i - 1, c - 1] = (
                            store(empty_cell, "double", empty=True) if cuhk03_cell_is_empty(kind, pair, i, c)
                            else store(cuhk03_image(kind, pair, i, c, shape).T, "uint8")  # stored (3, W, H)
                        )
                pair_refs.append(cell_dataset(refs, f"c{next(counter)}", cells.T).ref)  # stored (10, n)
            cell_dataset(f, kind, np.array([pair_refs], dtype=object))  # (1, 5)
        rng = np.random.default_rng(seed)
        kept = [(p, i) for p, n in enumerate(identities[:3], start=1) for i in range(1, n + 1)]
        sets = []
        for t in range(testsets if testset_rows is None else len(testset_rows)):
            chosen = ([kept[k] for k in rng.choice(len(kept), test_size, replace=False)] if testset_rows is None
                      else testset_rows[t])
            rows = np.array(chosen, dtype=float)
            sets.append(store(rows.T, "double"))  # MATLAB test_size × 2, stored (2, test_size)
        cell_dataset(f, "testsets", np.array([sets], dtype=object))  # (1, 20)
    # MATLAB's 128-byte header: 116 bytes of text, 8 of subsystem offset, version 0x0200, endianness.
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")
    return path


# Market-1501 ---------------------------------------------------------------------------------------
MARKET_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")


def market1501_names(folder: str) -> list[str]:
    """The real Market-1501 file names of one folder (shared filelists); a small list in the same
    format (with junk, distractors and a `.jpg.jpg` name) if the filelists are absent."""
    path = os.path.join(SHARED_DATA, "filelists", f"Market1501_{folder}.txt")
    if os.path.isfile(path):
        with open(path) as f:
            return [os.path.basename(line) for line in f.read().split()]
    ids = {"bounding_box_train": range(2, 40, 2), "query": range(1, 41, 2), "bounding_box_test": range(1, 41, 2)}[folder]
    names = [f"{i:04d}_c{c}s1_{100 * i + k:06d}_0{k}.jpg" for i in ids for c in (1, 2, 3) for k in (1, 2)
             if folder != "query" or k == 1]
    if folder == "bounding_box_test":
        names += [f"-1_c{c}s1_00000{c}_01.jpg" for c in (1, 2)] + ["0000_c4s2_000100_01.jpg", "0000_c5s1_000200_02.jpg.jpg"]
    return names


def market1501_identity(name: str) -> int:
    return int(name.split("_")[0])


def write_market1501(root: str, identities: int | None = None, size: tuple[int, int] = (16, 8),
                     distinct: bool = True) -> str:
    """Write root/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test} (+ an ignored
    gt_bbox/) with the real file names: all of them, or those of the first `identities` training
    and test identities (with every junk and distractor image of their cameras' first sequence,
    capped at 20 each). distinct=False writes one shared tiny JPEG everywhere (fast: 36,036 files)."""
    src = os.path.join(root, "Market-1501-v15.09.15")
    shared = None
    for folder in MARKET_FOLDERS:
        names = market1501_names(folder)
        if identities is not None:
            ids = sorted({market1501_identity(n) for n in market1501_names(folder if folder != "bounding_box_test" else "query")})
            keep = set(ids[:identities])
            real = [n for n in names if market1501_identity(n) in keep]
            others = [n for n in names if market1501_identity(n) in (-1, 0)]
            names = real + [n for n in others if market1501_identity(n) == -1][:20] + [
                n for n in others if market1501_identity(n) == 0][:20]
        out = os.path.join(src, folder)
        os.makedirs(out, exist_ok=True)
        for k, name in enumerate(names):
            path = os.path.join(out, name)
            if distinct:
                Image.fromarray(_image(*size, market1501_identity(name) + 1, k, MARKET_FOLDERS.index(folder))).save(
                    path, format="JPEG", quality=90)
            else:
                if shared is None:
                    Image.fromarray(_image(*size, 0)).save(path, format="JPEG")
                    with open(path, "rb") as f:
                        shared = f.read()
                with open(path, "wb") as f:
                    f.write(shared)
    os.makedirs(os.path.join(src, "gt_bbox"), exist_ok=True)  # ignored by the reader
    return src
