"""VIPeR: Viewpoint Invariant Pedestrian Recognition.

Gray, Brennan, Tao, "Evaluating appearance models for recognition, reacquisition, and tracking",
PETS 2007; Gray & Tao, ECCV 2008. https://vision.soe.ucsc.edu/node/178
Statistics: 632 identities × 2 cameras (cam_a, cam_b), one 128 × 48 image each (1,264 images),
named `PPP_AAA.bmp` (identity, viewpoint angle). Protocol (paper §4.1): 316 training / 316 test
identities at random, 10 trials, single-shot CMC (query cam_a, gallery cam_b); no validation set.
Prepared by `data_tools.prepare_viper` (the manifest references the original images).
"""
from reid_tf import config
from reid_tf.datasets.base import SINGLE_SHOT, DatasetSpec

SPEC = DatasetSpec(
    name="viper",
    subdir="viper",
    prepare="python -m data_tools.prepare_viper --src /path/to/VIPeR --out {root}",
    protocol=SINGLE_SHOT,
    split_sizes=lambda n: (n // 2, 0),  # §4.1: 316 test / 316 train; no validation set
    batch_size=config.BATCH_SIZE["default"],
    crops_per_image=config.CROPS_PER_IMAGE["default"],
    trials=config.TRIALS["default"],
)
