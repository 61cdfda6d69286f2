"""Shared helpers of the `data_tools.prepare_*` commands: checks, atomic writes, summaries, CLI.

Every problem with the input data raises `DatasetError` with a one-line message that names the
file or folder and says what is wrong; `run_cli` turns it into a non-zero exit without traceback.
"""
from __future__ import annotations

import collections
import concurrent.futures
import glob
import os
from typing import Callable, Iterable

import numpy as np
from absl import logging
from PIL import Image

from reid_tf import datasets, fileio, images


class DatasetError(ValueError):
    """The input data is missing, malformed or incomplete (message names the file and the fault)."""


def require_dir(path: str, what: str) -> str:
    """Return `path` if it is a folder, else raise DatasetError saying what was expected there."""
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: folder not found (expected {what})")
    return path


def list_files(folder: str, suffix: str) -> list[str]:
    """Sorted names of the non-hidden files in `folder` ending with `suffix` (case-insensitive)."""
    return sorted(
        name for name in os.listdir(folder)
        if name.lower().endswith(suffix) and not name.startswith(".")
        and os.path.isfile(os.path.join(folder, name))
    )


def require_some(names: list[str], folder: str, suffix: str, expected: str) -> list[str]:
    """`names` (the `suffix` files of `folder`) if there are any; else DatasetError saying what the
    folder holds instead, so that a preparation never writes a manifest without images."""
    if names:
        return names
    found = collections.Counter(os.path.splitext(n)[1].lower() or "(no extension)"
                                for n in os.listdir(folder) if not n.startswith("."))
    holds = ", ".join(f"{n} {ext}" for ext, n in found.most_common()) or "nothing"
    raise DatasetError(f"{folder}: no {suffix} images (expected {expected}); it holds {holds}")


def verify_image(path: str) -> None:
    """Decode `path` completely, with the decoder training and evaluation use (reid_tf.images), so
    an image that passes preparation is read the same way later."""
    try:
        images.decode(path)
    except images.ImageError as e:
        raise DatasetError(str(e)) from None


def verify_images(paths: Iterable[str]) -> None:
    """verify_image on every path; PIL releases the GIL while decoding, so two threads help."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for _ in pool.map(verify_image, paths):
            pass


def start_output(out_dir: str) -> None:
    """Create `out_dir` and delete any old manifest and temp files first, so that a re-run that is
    interrupted leaves a folder that does not load (the manifest is what marks completeness)."""
    os.makedirs(out_dir, exist_ok=True)
    for stale in [os.path.join(out_dir, datasets.MANIFEST), *glob.glob(os.path.join(out_dir, ".*.tmp"))]:
        if os.path.exists(stale):
            os.remove(stale)


def write_png(image: np.ndarray, path: str) -> None:
    """Write an H×W×3 uint8 image as PNG atomically (temporary name, then rename)."""
    with fileio.atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def summarize(dataset: str, records: list[dict]) -> dict:
    """Log and return what was found: identities and images per camera."""
    per_camera = collections.Counter(r["camera"] for r in records)
    summary = {
        "identities": len({r["identity"] for r in records}),
        "images": len(records),
        "images_per_camera": {c: per_camera[c] for c in sorted(per_camera)},
    }
    logging.info(
        "%s: %d identities, %d images (%s)", dataset, summary["identities"], summary["images"],
        ", ".join(f"camera {c}: {n}" for c, n in summary["images_per_camera"].items()),
    )
    return summary


def run_cli(prepare: Callable[[], object]) -> None:
    """Run a preparation; a DatasetError or OSError (e.g. an --out that cannot be written) becomes a
    one-line message and exit status 1."""
    try:
        prepare()
    except (DatasetError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
