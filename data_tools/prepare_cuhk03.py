"""Prepare CUHK03 (Li, Zhao, Xiao, Wang, CVPR 2014) from `cuhk-03.mat` for reid_tf.

    python -m data_tools.prepare_cuhk03 --mat cuhk-03.mat --out data/cuhk03

`cuhk-03.mat` is MATLAB v7.3 (HDF5), read with h5py (DESIGN.md "cuhk-03.mat layout"):
  detected, labeled: 1×5 cell of object references, one per camera pair; each an (identities × 10)
    cell of images, stored transposed (h5py shape (10, identities)); columns 1–5 are one camera
    (camera 0), 6–10 the other (camera 1); an empty cell is a tiny non-3-D array (skipped); an image
    is stored transposed too: `f[ref][()].T` is H × W × 3 uint8.
  testsets: 1×20 cell, each a 100×2 matrix (stored transposed) of 1-based [camera pair, identity].

Only camera pairs 1–3 are kept: the paper's 1,360 identities / 13,164 detected images (§4.1, DESIGN
"Protocols"); the command logs what it kept and dropped. Images are written as PNG, named like the
usual extraction `P_III_V_CC.png` (camera pair, identity, view 1/2, column 01–10), into
`out/detected/` and `out/labeled/`, each with its own manifest (dataset "cuhk03_detected" /
"cuhk03_labeled"). Identity label = pair * 1000 + identity (so 1_017_* is identity 1017). Both
manifests hold the 20 testsets as lists of these labels under "testsets".

Re-running is idempotent: the old manifest is deleted first, images are written under temporary names
and renamed, and the manifest is written last, so an interrupted run leaves a folder that does not load.
"""
from __future__ import annotations

import collections
import os

import h5py
import numpy as np
from absl import flags, logging

from data_tools import common
from data_tools.common import DatasetError
from reid_tf import cli

KEYS = ("detected", "labeled", "testsets")
KEEP_PAIRS = (1, 2, 3)  # §4.1 / DESIGN "Protocols": camera pairs 1–3 hold the paper's 1,360 identities
COLUMNS = 10  # images per identity row: columns 1–5 camera 0, 6–10 camera 1


def identity_label(pair: int, identity: int) -> int:
    """Stable integer label of (camera pair, identity), both 1-based: 1000 * pair + identity."""
    return 1000 * pair + identity


def open_mat(path: str) -> h5py.File:
    """Open `path` with h5py, checking that it is a v7.3 .mat holding detected/labeled/testsets."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: file not found (expected cuhk-03.mat)")
    if not h5py.is_hdf5(path):
        with open(path, "rb") as fh:
            head = fh.read(10)
        kind = "a MATLAB v5 .mat file" if head == b"MATLAB 5.0" else "not an HDF5 file"
        raise DatasetError(
            f"{path}: {kind}; cuhk-03.mat must be MATLAB v7.3 (HDF5) — re-save it in MATLAB with "
            "save(..., '-v7.3')"
        )
    f = h5py.File(path, "r")
    found = sorted(f.keys())
    missing = [k for k in KEYS if k not in found]
    if missing:
        f.close()
        raise DatasetError(f"{path}: no {', '.join(missing)} (found {', '.join(found) or 'nothing'}); "
                           "not the CUHK03 cuhk-03.mat")
    return f


def deref(f: h5py.File, node, where: str) -> h5py.Dataset:
    """`f[node]` (a key or an object reference), which must be a dataset."""
    try:
        ds = f[node]
    except (KeyError, ValueError, TypeError) as e:
        raise DatasetError(f"{f.filename}: {where}: bad object reference ({e})") from None
    if not isinstance(ds, h5py.Dataset):
        raise DatasetError(f"{f.filename}: {where}: expected a dataset, found a group")
    return ds


def read(ds: h5py.Dataset, where: str) -> np.ndarray:
    try:
        return ds[()]
    except (OSError, ValueError) as e:
        raise DatasetError(f"{ds.file.filename}: {where}: unreadable ({e})") from None


def cell(f: h5py.File, node, where: str) -> np.ndarray:
    """The object references of a cell array, in h5py's stored (transposed) layout."""
    ds = deref(f, node, where)
    if h5py.check_dtype(ref=ds.dtype) is None:
        raise DatasetError(f"{f.filename}: {where}: not a cell array of object references ({ds.dtype})")
    return read(ds, where)


def read_image(f: h5py.File, ref, where: str) -> np.ndarray | None:
    """H × W × 3 uint8 image of one cell, or None for an empty cell (anything not 3-D)."""
    ds = deref(f, ref, where)
    if ds.ndim != 3:
        return None
    image = read(ds, where).T  # stored transposed: (3, W, H) -> (H, W, 3)
    if image.shape[2] != 3 or image.dtype != np.uint8:
        raise DatasetError(f"{f.filename}: {where}: expected an H×W×3 uint8 image, got "
                           f"{image.shape} {image.dtype}")
    return image


def extract(f: h5py.File, kind: str, out_dir: str) -> tuple[list[dict], dict]:
    """Write the images of camera pairs KEEP_PAIRS to out_dir; returns (records, kept/dropped counts)."""
    pairs = cell(f, kind, kind).ravel()
    if len(pairs) < max(KEEP_PAIRS):
        raise DatasetError(f"{f.filename}: {kind} has {len(pairs)} camera pairs, expected 5")
    records, counts = [], collections.Counter()
    for pair, pair_ref in enumerate(pairs, start=1):
        where = f"{kind}{{{pair}}}"
        rows = cell(f, pair_ref, where).T  # stored (10, identities) -> (identities, 10)
        if rows.ndim != 2 or rows.shape[1] != COLUMNS:
            raise DatasetError(f"{f.filename}: {where} has HDF5 shape {rows.T.shape}, expected (10, identities)")
        status = "kept" if pair in KEEP_PAIRS else "dropped"
        for identity, row in enumerate(rows, start=1):
            found = 0
            for column, ref in enumerate(row, start=1):
                where = f"{kind}{{{pair}}}{{{identity},{column}}}"
                if status == "dropped":  # only count them: an empty cell is not 3-D
                    found += deref(f, ref, where).ndim == 3
                    continue
                image = read_image(f, ref, where)
                if image is None:
                    continue
                view = 1 if column <= COLUMNS // 2 else 2
                name = f"{pair}_{identity:03d}_{view}_{column:02d}.png"
                common.write_png(image, os.path.join(out_dir, name))
                records.append({"path": name, "identity": identity_label(pair, identity), "camera": view - 1})
                found += 1
            counts[f"{status}_identities"] += found > 0
            counts[f"{status}_images"] += found
        logging.info("%s camera pair %d (%s): %d identity rows", kind, pair, status, len(rows))
    return records, {k: counts[k] for k in ("kept_identities", "kept_images", "dropped_identities",
                                             "dropped_images")}


def read_testsets(f: h5py.File) -> list[list[int]]:
    """The 20 testsets as lists of identity labels; every entry must be in camera pairs 1–3."""
    testsets = []
    for t, ref in enumerate(cell(f, "testsets", "testsets").ravel(), start=1):
        where = f"testsets{{{t}}}"
        rows = np.asarray(read(deref(f, ref, where), where)).T  # stored (2, 100) -> (100, 2)
        if rows.ndim != 2 or rows.shape[1] != 2:
            raise DatasetError(f"{f.filename}: {where} has shape {rows.shape}, expected (100, 2)")
        rows = rows.astype(int)
        bad = [tuple(r) for r in rows if r[0] not in KEEP_PAIRS or r[1] < 1]
        if bad:
            raise DatasetError(f"{f.filename}: {where} lists [pair, identity] {bad[:3]}, outside camera "
                               "pairs 1–3")
        testsets.append([identity_label(int(p), int(i)) for p, i in rows])
    return testsets


def prepare(mat: str, out: str) -> dict:
    """Extract detected and labeled images of `mat` into out/detected, out/labeled; returns counts."""
    summary = {}
    for kind in ("detected", "labeled"):  # before anything is read or written
        common.claim_output(os.path.join(out, kind), f"cuhk03_{kind}")
    with open_mat(mat) as f:
        testsets = read_testsets(f)
        logging.info("%s: %d testsets of %s identities", mat, len(testsets),
                     sorted({len(t) for t in testsets}))
        for kind in ("detected", "labeled"):
            out_dir, dataset = os.path.join(out, kind), f"cuhk03_{kind}"
            common.start_output(out_dir)
            records, counts = extract(f, kind, out_dir)
            if not records:
                raise DatasetError(f"{mat}: {kind} holds no image in camera pairs {KEEP_PAIRS} "
                                   f"(dropped pairs: {counts['dropped_images']} images)")
            absent = sorted({i for t in testsets for i in t} - {r["identity"] for r in records})
            if absent:  # the split of such a trial will fail; the other trials stay usable
                logging.warning("%s: %d testset identities have no image: %s", dataset, len(absent), absent[:10])
            logging.info("%s: kept camera pairs %s: %d identities, %d images; dropped the other pairs: "
                         "%d identities, %d images", dataset, KEEP_PAIRS, counts["kept_identities"],
                         counts["kept_images"], counts["dropped_identities"], counts["dropped_images"])
            summary[kind] = {**common.finish(out_dir, dataset, records, testsets=testsets,
                                             source=os.path.abspath(mat), camera_pairs=list(KEEP_PAIRS)),
                             **counts}
    return summary


def main(argv: list[str]) -> None:
    del argv
    common.run_cli(lambda: prepare(flags.FLAGS.mat, flags.FLAGS.out))


if __name__ == "__main__":
    flags.DEFINE_string("mat", None, "path of cuhk-03.mat (MATLAB v7.3)", required=True)
    flags.DEFINE_string("out", None, "output folder; gets detected/ and labeled/ (e.g. data/cuhk03)",
                        required=True)
    cli.run(main)
