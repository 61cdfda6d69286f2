"""Prepare CUHK01 (Li, Zhao, Wang, ACCV 2012) for reid_tf.

    python -m data_tools.prepare_cuhk01 --src CUHK01/ --out data/cuhk01

Input: `CUHK01/campus/PPPPNNN.png`, PPPP the identity (0001–0971), NNN 001–004: 001–002 camera A
(camera 0), 003–004 camera B (camera 1); 971 identities × 4 = 3,884 images (DESIGN.md "Protocols":
871 train / 100 test identities). Every identity must have all four images.

The manifest references the original images by absolute path (nothing is copied: the data stays
where it is, read-only); every image is decoded fully during preparation. Moving the source folder
means re-running this command. Re-running is idempotent.
"""
from __future__ import annotations

import collections
import os
import re

from absl import flags, logging

from data_tools import common
from data_tools.common import DatasetError
from reid_tf import cli, datasets

IDENTITIES = 971  # CUHK01: 971 identities (§4.1)
IMAGE_CAMERA = {1: 0, 2: 0, 3: 1, 4: 1}  # NNN -> camera: 001–002 camera A, 003–004 camera B
NAME = re.compile(r"^(\d{4})(\d{3})\.png$")


def read_campus(folder: str) -> list[dict]:
    """Records of `campus/`, after checking every name and that each identity has NNN 001–004."""
    common.require_dir(folder, "CUHK01 images named PPPPNNN.png")
    records, seen = [], collections.defaultdict(set)
    names = common.require_some(common.list_files(folder, ".png"), folder, ".png",
                                "CUHK01 images named PPPPNNN.png")
    for name in names:
        match = NAME.match(name)
        image = int(match.group(2)) if match else None
        if image not in IMAGE_CAMERA:
            raise DatasetError(f"{os.path.join(folder, name)}: unparseable name "
                               "(expected PPPPNNN.png, NNN 001–004)")
        identity = int(match.group(1))
        seen[identity].add(image)
        records.append({"path": os.path.abspath(os.path.join(folder, name)), "identity": identity,
                        "camera": IMAGE_CAMERA[image]})
    for identity, images in sorted(seen.items()):
        if images != set(IMAGE_CAMERA):
            raise DatasetError(f"{folder}: identity {identity:04d} has images {sorted(images)}, "
                               "expected 1–4")
    return records


def prepare(src: str, out: str, expect_identities: int = IDENTITIES) -> dict:
    """Check CUHK01 at `src`, verify every image, write `out/manifest.json`; returns the summary.

    `expect_identities`: the identity count to insist on (0 = accept any, e.g. for a subset).
    """
    folder = os.path.join(common.require_dir(src, "the CUHK01 folder holding campus/"), "campus")
    records = read_campus(folder)
    identities = len({r["identity"] for r in records})
    if expect_identities and identities != expect_identities:
        raise DatasetError(
            f"{folder}: {identities} identities ({len(records)} images), expected "
            f"{expect_identities} ({4 * expect_identities} images)"
        )
    common.start_output(out)
    common.verify_images(r["path"] for r in records)
    summary = common.summarize("cuhk01", records)
    datasets.write_manifest(out, "cuhk01", records, source=os.path.abspath(src))
    logging.info("wrote %s", os.path.join(out, datasets.MANIFEST))
    return summary


def main(argv: list[str]) -> None:
    del argv
    f = flags.FLAGS
    common.run_cli(lambda: prepare(f.src, f.out, f.expect_identities))


if __name__ == "__main__":
    flags.DEFINE_string("src", None, "CUHK01 folder holding campus/", required=True)
    flags.DEFINE_string("out", None, "output folder for manifest.json (e.g. data/cuhk01)", required=True)
    flags.DEFINE_integer("expect_identities", IDENTITIES, "identity count to insist on; 0 = any")
    cli.run(main)
