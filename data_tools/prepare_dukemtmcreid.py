"""Prepare DukeMTMC-reID for reid_tf; the dataset: reid_tf.datasets.dukemtmcreid.

    python -m data_tools.prepare_dukemtmcreid --src DukeMTMC-reID/ --out data/dukemtmcreid

Same layout and reader as Market-1501 (data_tools.bounding_boxes); names `PPPP_cC_fFFFFFFF.jpg`.
"""

from data_tools import bounding_boxes
from reid_tf import cli
from reid_tf.datasets import dukemtmcreid


def main(argv: list[str]) -> None:
    del argv
    bounding_boxes.run(dukemtmcreid.SPEC.name, dukemtmcreid.NAME, dukemtmcreid.EXPECTED)


if __name__ == "__main__":
    bounding_boxes.define_flags("DukeMTMC-reID", "data/dukemtmcreid")
    cli.run(main)
