"""The reader of the Market-1501 folder layout, shared by Market-1501, DukeMTMC-reID and CUHK03-NP.

    SRC/bounding_box_train/  training images
    SRC/query/               the queries
    SRC/bounding_box_test/   the gallery (Market-1501: with junk, identity -1, and distractors, 0000;
                             DukeMTMC-reID: 408 distractor identities with ordinary numbers, which
                             no query has)
    (SRC/gt_bbox/, gt_query/ and anything else are ignored)

Every image name starts with its identity and camera, `PPPP_cC...` (the dataset module's NAME
pattern checks the whole name). The manifest holds the training images as "records" and the other
two folders as "query" and "gallery" (reid_tf.datasets.base); cameras are stored 0-based (c1 -> 0).
Junk images in the training folder (none in the three releases) are left out, and logged.
Images are referenced by absolute path (nothing is copied) and decoded once to check them.
"""
from __future__ import annotations

import collections
import os
import re

from absl import flags, logging

from data_tools import common
from data_tools.common import DatasetError
from reid_tf import cli
from reid_tf.datasets import DISTRACTOR, JUNK

FOLDERS = {"records": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def read_folder(folder: str, name: re.Pattern, suffix: str) -> list[dict]:
    """Records of one folder (sorted by name), after checking every name against `name`."""
    common.require_dir(folder, f"images named like {name.pattern}")
    records = []
    for file in common.list_files(folder, suffix):
        match = name.match(file)
        if not match:
            raise DatasetError(f"{os.path.join(folder, file)}: unparseable name (expected {name.pattern})")
        records.append({"path": os.path.abspath(os.path.join(folder, file)),
                        "identity": int(match.group(1)), "camera": int(match.group(2)) - 1})
    if not records:
        raise DatasetError(f"{folder}: no {suffix} images")
    return records


def describe(dataset: str, folder: str, records: list[dict], expected: tuple[int, int] | None,
             queries: set[int] | None = None) -> dict:
    """Log identities, images and images per camera of one folder, and what in it can never match
    a query: images labelled junk (-1) or distractor (0000), Market-1501's labels, and for the
    gallery (`queries`: the query identities) the identities no query has, DukeMTMC-reID's
    distractors, which have ordinary numbers. Warn if the counts differ from the release's.
    Returns the counts."""
    ids = collections.Counter(r["identity"] for r in records)
    cameras = collections.Counter(r["camera"] for r in records)
    counts = {"identities": len(ids), "images": len(records), "junk": ids[JUNK], "distractors": ids[DISTRACTOR],
              "images_per_camera": {c + 1: cameras[c] for c in sorted(cameras)}}
    if queries is not None:  # the gallery
        counts["gallery_only"] = len(set(ids) - queries - {JUNK, DISTRACTOR})
    never_match = ((counts["junk"], "junk"), (counts["distractors"], "distractors"),
                   (counts.get("gallery_only", 0), "gallery-only distractor identities"))
    notes = [f"{n} {what}" for n, what in never_match if n]
    logging.info("%s %s: %d identities, %d images%s; per camera %s", dataset, folder, counts["identities"],
                 counts["images"], f" ({', '.join(notes)})" if notes else "",
                 ", ".join(f"c{c}: {n}" for c, n in counts["images_per_camera"].items()))
    if expected and expected != (counts["identities"], counts["images"]):
        logging.warning("%s %s: %d identities / %d images, the release has %d / %d", dataset, folder,
                        counts["identities"], counts["images"], *expected)
    return counts


def prepare(dataset: str, name: re.Pattern, src: str, out: str, expected: dict | None = None,
            suffix: str = ".jpg") -> dict:
    """Read SRC's three folders (every file name must match `name`), verify every image, write
    out/manifest.json for `dataset`; returns the counts per folder. `expected`: the release's
    (identities, images) per folder, warned about when they differ."""
    expected = expected or {}
    common.require_dir(src, "the dataset folder holding " + ", ".join(f"{f}/" for f in FOLDERS.values()))
    parts = {key: read_folder(os.path.join(src, folder), name, suffix) for key, folder in FOLDERS.items()}
    junk = [r for r in parts["records"] if r["identity"] in (JUNK, DISTRACTOR)]
    if junk:
        logging.info("%s: %d junk / distractor images in %s left out of training", dataset, len(junk),
                     FOLDERS["records"])
        parts["records"] = [r for r in parts["records"] if r["identity"] not in (JUNK, DISTRACTOR)]
    queries = {r["identity"] for r in parts["query"]}
    summary = {folder: describe(dataset, folder, parts[key], expected.get(folder),
                                queries if key == "gallery" else None) for key, folder in FOLDERS.items()}
    unmatched = sorted(queries - {r["identity"] for r in parts["gallery"]})
    if unmatched:
        logging.warning("%s: %d query identities have no gallery image (e.g. %s)", dataset, len(unmatched),
                        unmatched[:5])
    common.finish_referenced(out, dataset, parts["records"], query=parts["query"], gallery=parts["gallery"],
                             source=os.path.abspath(src))
    return summary


def define_flags(what: str, example_out: str) -> None:
    flags.DEFINE_string("src", None, f"{what} folder holding bounding_box_train/, query/, bounding_box_test/",
                        required=True)
    flags.DEFINE_string("out", None, f"output folder for manifest.json (e.g. {example_out})", required=True)


def run(dataset: str, name: re.Pattern, expected: dict, suffix: str = ".jpg") -> None:
    """The body of a prepare_* command: --src, --out from the flags, errors as one line."""
    common.run_cli(lambda: prepare(dataset, name, flags.FLAGS.src, flags.FLAGS.out, expected, suffix))


def command(dataset: str, name: re.Pattern, expected: dict, what: str, example_out: str) -> None:
    """The whole `python -m data_tools.prepare_*` command of a one-variant dataset in this layout
    (Market-1501, DukeMTMC-reID): define --src and --out, then prepare, errors as one line."""
    define_flags(what, example_out)
    cli.run(lambda argv: run(dataset, name, expected))
