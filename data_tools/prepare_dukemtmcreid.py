"""Prepare DukeMTMC-reID for reid_tf; the dataset: reid_tf.datasets.dukemtmcreid.

    python -m data_tools.prepare_dukemtmcreid --src DukeMTMC-reID/ --out data/dukemtmcreid

Same layout and reader as Market-1501 (data_tools.bounding_boxes); names `PPPP_cC_fFFFFFFF.jpg`.
"""

from data_tools import bounding_boxes
from reid_tf.datasets import dukemtmcreid

if __name__ == "__main__":
    bounding_boxes.command(dukemtmcreid.SPEC.name, dukemtmcreid.NAME, dukemtmcreid.EXPECTED,
                           "DukeMTMC-reID", "data/dukemtmcreid")
