"""CUHK01: the CUHK campus dataset.

Li, Zhao, Wang, "Human reidentification with transferred metric learning", ACCV 2012.
http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html
Statistics: 971 identities × 2 cameras × 2 images = 3,884 images of 160 × 60, named
`campus/PPPPNNN.png` (NNN 001–002 camera A, 003–004 camera B). Protocol (paper §4.1): 871
training / 100 test identities at random, 10 trials, single-shot CMC; no validation set.
Prepared by `data_tools.prepare_cuhk01` (the manifest references the original images).
"""
import re

from reid_tf.datasets.base import FileIdentity, paper_two_camera_spec

FILE_IDENTITY = FileIdentity(re.compile(r"^(\d{4})\d{3}$"), lambda g: int(g[0]))  # PPPPNNN: identity, image

SPEC = paper_two_camera_spec(
    "cuhk01", "python -m data_tools.prepare_cuhk01 --src /path/to/CUHK01 --out {root}",
    split_sizes=lambda n: (100, 0),  # §4.1: 100 test / 871 train
)
