"""Prepare VIPeR (Gray & Tao, ECCV 2008) for reid_tf.

    python -m data_tools.prepare_viper --src VIPeR/ --out data/viper

Input: `VIPeR/cam_a/` and `VIPeR/cam_b/`, 632 `.bmp` images each, named `PPP_AAA.bmp` (identity,
viewpoint angle in degrees), one image per identity and camera; the same 632 identities in both.
Camera 0 = cam_a (queries), camera 1 = cam_b (gallery); DESIGN.md "Protocols": 316 / 316 split.

The manifest references the original images by absolute path (nothing is copied: the data stays
where it is, read-only); every image is decoded fully during preparation. Moving the source folder
means re-running this command. Re-running is idempotent.
"""
from __future__ import annotations

import os
import re

from absl import flags, logging

from data_tools import common
from data_tools.common import DatasetError
from reid_tf import cli, datasets

IMAGES_PER_CAMERA = 632  # VIPeR: 632 identities, one image in each camera
CAMERAS = {"cam_a": 0, "cam_b": 1}
NAME = re.compile(r"^(\d{3})_(\d+)\.bmp$")


def read_camera(folder: str) -> dict[int, str]:
    """identity -> absolute image path for one camera folder, after checking names and count."""
    common.require_dir(folder, "632 VIPeR images named PPP_AAA.bmp")
    names = common.require_some(common.list_files(folder, ".bmp"), folder, ".bmp",
                                "632 VIPeR images named PPP_AAA.bmp")
    paths: dict[int, str] = {}
    for name in names:
        match = NAME.match(name)
        if not match:
            raise DatasetError(f"{os.path.join(folder, name)}: unparseable name (expected PPP_AAA.bmp)")
        identity = int(match.group(1))
        if identity in paths:
            raise DatasetError(f"{folder}: identity {identity:03d} appears twice "
                               f"({os.path.basename(paths[identity])}, {name})")
        paths[identity] = os.path.abspath(os.path.join(folder, name))
    if len(paths) != IMAGES_PER_CAMERA:
        raise DatasetError(f"{folder}: {len(paths)} .bmp images, expected {IMAGES_PER_CAMERA}")
    return paths


def prepare(src: str, out: str) -> dict:
    """Check VIPeR at `src`, verify every image, write `out/manifest.json`; returns the summary."""
    common.require_dir(src, "the VIPeR folder holding cam_a/ and cam_b/")
    cameras = {CAMERAS[c]: read_camera(os.path.join(src, c)) for c in CAMERAS}
    only_a, only_b = set(cameras[0]) - set(cameras[1]), set(cameras[1]) - set(cameras[0])
    if only_a or only_b:
        raise DatasetError(
            f"{src}: cam_a and cam_b hold different identities (only in cam_a: "
            f"{sorted(only_a)[:5]}, only in cam_b: {sorted(only_b)[:5]})"
        )
    records = [
        {"path": path, "identity": identity, "camera": camera}
        for camera, paths in sorted(cameras.items()) for identity, path in sorted(paths.items())
    ]
    common.start_output(out)
    common.verify_images(r["path"] for r in records)
    summary = common.summarize("viper", records)
    datasets.write_manifest(out, "viper", records, source=os.path.abspath(src))
    logging.info("wrote %s", os.path.join(out, datasets.MANIFEST))
    return summary


def main(argv: list[str]) -> None:
    del argv
    common.run_cli(lambda: prepare(flags.FLAGS.src, flags.FLAGS.out))


if __name__ == "__main__":
    flags.DEFINE_string("src", None, "VIPeR folder holding cam_a/ and cam_b/", required=True)
    flags.DEFINE_string("out", None, "output folder for manifest.json (e.g. data/viper)", required=True)
    cli.run(main)
