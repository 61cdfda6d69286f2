"""CUHK03-NP: CUHK03 in the "new protocol", detected and labeled boxes.

Zhong, Zheng, Cao, Li, "Re-ranking person re-identification with k-reciprocal encoding", CVPR 2017.
https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP
Images of CUHK03 (Li et al., CVPR 2014; reid_tf.datasets.cuhk03) re-split: 767 training / 700 test
identities, every test identity with one query per camera. Layout
`cuhk03-np/{detected,labeled}/{bounding_box_train,bounding_box_test,query}/` (the folders of
Market-1501; no gt_bbox/), PNG names `PPPP_cC_N.png`: identity, camera 1–2, image number, e.g.
`0001_c1_1.png`, `0003_c2_27.png` (public READMEs that list the download's folders). No junk or
distractor labels. Statistics (the README above): labeled 7,368 train / 1,400 query / 5,328
gallery images; detected 7,365 / 1,400 / 5,332.

Same reader and standard protocol as Market-1501 (reid_tf.datasets.market1501); recipe constants
ours, as there. Prepared by `data_tools.prepare_cuhk03_np`, one variant per run.
"""
import dataclasses
import os
import re

from reid_tf.datasets import market1501
from reid_tf.datasets.base import DatasetSpec

# Identity, camera 1-2, image number; every name of the three folders must match.
NAME = re.compile(r"^(\d{4})_c([12])_\d+\.png$")
FILE_IDENTITY = market1501.FILE_IDENTITY  # PPPP_cC_...
EXPECTED = {
    "detected": {"bounding_box_train": (767, 7365), "query": (700, 1400), "bounding_box_test": (700, 5332)},
    "labeled": {"bounding_box_train": (767, 7368), "query": (700, 1400), "bounding_box_test": (700, 5328)},
}


def _spec(kind: str) -> DatasetSpec:
    """Market-1501's protocol and recipe; the name, folder, command and two cameras are CUHK03-NP's."""
    return dataclasses.replace(
        market1501.SPEC,
        name=f"cuhk03_np_{kind}",
        subdir=os.path.join("cuhk03_np", kind),
        prepare=f"python -m data_tools.prepare_cuhk03_np --src /path/to/cuhk03-np/{kind} --kind {kind} --out {{root}}",
        cameras=2,
    )


DETECTED = _spec("detected")
LABELED = _spec("labeled")
