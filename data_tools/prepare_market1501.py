"""Prepare Market-1501 (Zheng et al., ICCV 2015) for reid_tf; the dataset: reid_tf.datasets.market1501.

    python -m data_tools.prepare_market1501 --src Market-1501-v15.09.15/ --out data/market1501

Reads `bounding_box_train/`, `query/` and `bounding_box_test/` (data_tools.bounding_boxes), checks
every name (`PPPP_cCsS_FFFFFF_BB.jpg`) and image, logs identities, images and cameras per folder
(the release: 751 / 12,936 training; 750 / 3,368 queries; 19,732 gallery images with 3,819 junk and
2,798 distractors) and writes the manifest, which references the original images. Re-running is
idempotent.
"""

from data_tools import bounding_boxes
from reid_tf.datasets import market1501

if __name__ == "__main__":
    bounding_boxes.command(market1501.SPEC.name, market1501.NAME, market1501.EXPECTED,
                           "Market-1501", "data/market1501")
