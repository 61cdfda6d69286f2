"""The built-in synthetic two-camera dataset (ours), for tests and for training without data.

    python -m data_tools.make_synthetic --out /tmp/synth --identities 400 --seed 0

It lives in the library because it is the embedded default: `python -m reid_tf.train` with no
prepared dataset generates it under the data root on first use (`data_tools.make_synthetic` is the
command that calls `make_synthetic` below). Protocol (ours): a quarter of the identities test, an
eighth validation, the rest training; single-shot CMC like VIPeR and CUHK01.

Writes `OUT/cam_a/IIII_K.png` and `OUT/cam_b/IIII_K.png` (160 × 60 RGB; identity IIII, image K of
that camera) and then, last, `OUT/manifest.json` through `reid_tf.datasets.write_manifest`
(camera 0 = cam_a, 1 = cam_b), so the folder loads like any prepared dataset.

The pictures (what makes an identity, what the cameras change, why the task is hard by design)
are drawn by reid_tf.datasets.synthetic_render.

Determinism: every random draw comes from a numpy Generator seeded by (seed, purpose, identity,
camera, image), so a rerun is byte-identical and the dataset for N identities is a prefix of the one
for N' > N with the same seed. `make_synthetic` is idempotent: a folder whose manifest already
records the same (identities, seed, images_per_camera) is returned untouched, and a folder holding
the set of other settings is refused (`check_setting`), never regenerated under the runs that use it.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import time

import numpy as np
from absl import logging
from PIL import Image

from reid_tf import config
from reid_tf.datasets.base import (IDENTITY_FIRST, MANIFEST, SINGLE_SHOT, DatasetSpec, read_manifest,
                                   write_manifest)
from reid_tf.datasets.synthetic_render import render  # noqa: F401  (re-exported for data_tools)

CAMERA_DIRS = ("cam_a", "cam_b")  # camera 0, camera 1
DATASET_NAME = "synthetic"
FILE_IDENTITY = IDENTITY_FIRST  # IIII_K (_relative_path): identity, image

SPEC = DatasetSpec(
    name=DATASET_NAME,
    subdir="synthetic",
    prepare="python -m data_tools.make_synthetic --out {root}",
    protocol=SINGLE_SHOT,
    split_sizes=lambda n: (max(1, round(n / 4)), max(1, round(n / 8))),  # ours: 1/4 test, 1/8 val
    batch_size=config.BATCH_SIZE["synthetic"],  # ours, sized for the 15-minute main job
    crops_per_image=config.CROPS_PER_IMAGE["synthetic"],
    trials=config.TRIALS["default"],
)

_OUR_FILE = re.compile(r"\d{4,}_\d+\.png")  # the names _relative_path writes
_CHUNK = 256  # images rendered at once: (256, 160, 60, 3) float32 ≈ 30 MB per array


# ----------------------------------------------------------------------------- dataset
def _relative_path(identity: int, camera: int, k: int) -> str:
    return f"{CAMERA_DIRS[camera]}/{identity:04d}_{k}.png"


def _write_chunk(out_dir: str, seed: int, keys: np.ndarray) -> list[dict]:
    """Render and save the images keys (n, 3); returns their manifest records."""
    records = []
    for key, image in zip(keys, render(seed, keys)):
        identity, camera, k = map(int, key)
        path = _relative_path(identity, camera, k)
        # compress_level=1: faster than the default for files a little larger, since noise barely
        # compresses (measured: docs/RESULTS.md).
        Image.fromarray(image).save(os.path.join(out_dir, path), format="PNG", compress_level=1)
        records.append({"path": path, "identity": identity, "camera": camera})
    return records


def setting_of(body: dict) -> str:
    """A synthetic manifest's generator settings, in words (for messages)."""
    return (f"{body.get('identities')} identities, seed {body.get('seed')}, "
            f"{body.get('images_per_camera')} images per camera")


def check_setting(out_dir: str, identities: int, seed: int, images_per_camera: int = 2) -> bool:
    """Whether out_dir already holds the synthetic set of these settings (True) or none (False).

    A complete set of other settings is refused (ValueError), never regenerated: runs that trained
    on it read it again to evaluate, and would then score other images without a word. The settings
    live in its manifest; the set of other settings belongs in another folder.
    """
    if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
        return False
    body = read_manifest(out_dir)
    if body.get("dataset") != DATASET_NAME:
        raise ValueError(f"{out_dir} holds the prepared dataset {body.get('dataset')!r}; "
                         "refusing to overwrite it with synthetic data")
    if (body.get("identities"), body.get("seed"), body.get("images_per_camera")) == (
            identities, seed, images_per_camera):
        return True
    raise ValueError(
        f"{out_dir} holds the synthetic set of {setting_of(body)}, which runs trained on it read "
        f"again; the set of {identities} identities, seed {seed} goes in another folder: pass another "
        f"--data_dir (e.g. {os.path.join(os.path.dirname(os.path.abspath(out_dir)), f'seed{seed}_n{identities}')}"
        f"), or delete {out_dir} if no run uses it")


def _clear_camera_dirs(out_dir: str) -> None:
    """Empty (or create) out_dir/cam_a, cam_b, refusing to delete anything this module did not write
    (a raw VIPeR folder also has cam_a/ and cam_b/)."""
    for name in CAMERA_DIRS:
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        entries = os.listdir(folder)
        foreign = [e for e in entries if not _OUR_FILE.fullmatch(e)]
        if foreign:
            raise ValueError(f"{folder} holds files make_synthetic did not write (e.g. {foreign[0]!r}); "
                             "choose another --out")
        for entry in entries:
            os.remove(os.path.join(folder, entry))


def make_synthetic(out_dir: str, identities: int, seed: int, images_per_camera: int = 2) -> str:
    """Generate (or find already generated) the synthetic dataset in out_dir; returns out_dir.
    A folder holding the set of other settings is refused (check_setting: ValueError).

    identities × 2 cameras × images_per_camera PNGs, then the manifest (written last, atomically).
    """
    if identities < 1 or images_per_camera < 1:
        raise ValueError(f"need identities >= 1 and images_per_camera >= 1, got {identities}, "
                         f"{images_per_camera}")
    if check_setting(out_dir, identities, seed, images_per_camera):
        logging.info("synthetic dataset already complete in %s", out_dir)
        return out_dir
    start = time.perf_counter()
    _clear_camera_dirs(out_dir)  # no manifest: the images of an interrupted generation, if any
    keys = np.array([(i, camera, k) for camera in range(len(CAMERA_DIRS))
                     for i in range(identities) for k in range(images_per_camera)])
    # Chunks never mix cameras (render() takes one); numpy and PNG encoding release the GIL, so
    # two threads use both cores. Every pixel depends only on its own key: order is irrelevant.
    chunks = [keys[lo:lo + _CHUNK][keys[lo:lo + _CHUNK, 1] == camera]
              for lo in range(0, len(keys), _CHUNK) for camera in range(len(CAMERA_DIRS))]
    chunks = [c for c in chunks if len(c)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        records = [r for rs in pool.map(lambda c: _write_chunk(out_dir, seed, c), chunks) for r in rs]
    records.sort(key=lambda r: (r["identity"], r["camera"], r["path"]))
    write_manifest(out_dir, DATASET_NAME, records, seed=seed, identities=identities,
                   images_per_camera=images_per_camera)
    logging.info("wrote %d synthetic images (%d identities) to %s in %.1f s", len(records),
                 identities, out_dir, time.perf_counter() - start)
    return out_dir
