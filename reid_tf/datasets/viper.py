"""VIPeR: Viewpoint Invariant Pedestrian Recognition.

Gray, Brennan, Tao, "Evaluating appearance models for recognition, reacquisition, and tracking",
PETS 2007; Gray & Tao, ECCV 2008. https://vision.soe.ucsc.edu/node/178
Statistics: 632 identities × 2 cameras (cam_a, cam_b), one 128 × 48 image each (1,264 images),
named `PPP_AAA.bmp` (identity, viewpoint angle). Protocol (paper §4.1): 316 training / 316 test
identities at random, 10 trials, single-shot CMC (query cam_a, gallery cam_b); no validation set.
Prepared by `data_tools.prepare_viper` (the manifest references the original images).
"""
from reid_tf.datasets.base import IDENTITY_FIRST, paper_two_camera_spec

FILE_IDENTITY = IDENTITY_FIRST  # PPP_AAA: identity, viewpoint angle

SPEC = paper_two_camera_spec(
    "viper", "python -m data_tools.prepare_viper --src /path/to/VIPeR --out {root}",
    split_sizes=lambda n: (n // 2, 0),  # §4.1: 316 test / 316 train; no validation set
)
