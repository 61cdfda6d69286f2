"""Shared helpers of the `data_tools.prepare_*` commands: checks, atomic writes, summaries, CLI.

Every problem with the input data raises `DatasetError` with a one-line message that names the
file or folder and says what is wrong; `run_cli` turns it into a non-zero exit without traceback.

A re-run never loses a good preparation to a bad one: an --out holding another dataset's manifest
is refused before anything is read (`claim_output`), and the manifest of a preparation that
references the original images is replaced (atomically) only after every image has been decoded
(`finish_referenced`), so a re-run that fails leaves the old manifest as it was.
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


def claim_output(out_dir: str, dataset: str) -> None:
    """Refuse an `out_dir` whose manifest is another dataset's (preparing CUHK01 into VIPeR's folder
    would replace it without a word); DatasetError naming both. A damaged manifest is not refused:
    it is the output of an interrupted preparation, replaced at the end."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DatasetError(f"--out={out_dir} is a file, not a folder")
    try:
        held = datasets.read_manifest(out_dir).get("dataset")
    except (OSError, ValueError):
        return
    if held != dataset:
        raise DatasetError(f"--out={out_dir} holds the prepared dataset {held!r} (its manifest.json); prepare "
                           f"{dataset} into another folder (e.g. {os.path.join(os.path.dirname(out_dir.rstrip(os.sep)), dataset)}), "
                           f"or delete {os.path.join(out_dir, datasets.MANIFEST)} if {held} is no longer wanted there")


def start_output(out_dir: str) -> None:
    """Create `out_dir` and delete any old manifest and temp files first, so that a re-run that is
    interrupted leaves a folder that does not load (the manifest is what marks completeness). For
    a preparation that rewrites the images the manifest lists (CUHK03's extraction)."""
    os.makedirs(out_dir, exist_ok=True)
    remove_temp_files(out_dir)
    manifest = os.path.join(out_dir, datasets.MANIFEST)
    if os.path.exists(manifest):
        os.remove(manifest)


def remove_temp_files(out_dir: str) -> None:
    """Delete the hidden temporary files (reid_tf.fileio) an interrupted write left in out_dir."""
    for stale in glob.glob(os.path.join(glob.escape(out_dir), ".*.tmp")):
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


def finish(out_dir: str, dataset: str, records: list[dict], **extra) -> dict:
    """The shared ending of every preparation: log what was found, write the manifest (last, so a
    folder that loads is complete), say where; returns the summary. `extra` goes into the manifest."""
    summary = summarize(dataset, records)
    datasets.write_manifest(out_dir, dataset, records, **extra)
    logging.info("wrote %s", os.path.join(out_dir, datasets.MANIFEST))
    return summary


def finish_referenced(out_dir: str, dataset: str, records: list[dict], **extra) -> dict:
    """`finish` for preparations whose manifest references the original images: decode every image
    (listed in `records` and in any list of records in `extra`), and only then replace the manifest
    (atomically: the old one stays until the new one is complete)."""
    claim_output(out_dir, dataset)
    lists = [records, *(v for v in extra.values() if isinstance(v, list) and v and isinstance(v[0], dict))]
    verify_images(r["path"] for rs in lists for r in rs)
    os.makedirs(out_dir, exist_ok=True)
    remove_temp_files(out_dir)
    return finish(out_dir, dataset, records, **extra)


def run_cli(prepare: Callable[[], object]) -> None:
    """Run a preparation; a DatasetError or OSError (e.g. an --out that cannot be written) becomes a
    one-line message and exit status 1."""
    try:
        prepare()
    except (DatasetError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
