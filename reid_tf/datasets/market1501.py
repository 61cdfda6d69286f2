"""Market-1501.

Zheng, Shen, Tian, Wang, Wang, Tian, "Scalable person re-identification: a benchmark", ICCV 2015.
http://www.liangzheng.com.cn/Project/project_reid.html (release Market-1501-v15.09.15).
Statistics: 1,501 identities from 6 cameras; `bounding_box_train/` 751 identities / 12,936 images;
`query/` 3,368 images of the 750 test identities; `bounding_box_test/` 19,732 images: 13,115 of the
750 test identities, 2,798 distractors (identity 0000) and 3,819 junk boxes (identity -1); 128 × 64
JPEGs named `PPPP_cCsS_FFFFFF_BB.jpg` (identity, camera 1–6, sequence, frame, box). 24 names in the
release end in `.jpg.jpg` (kept). `gt_bbox/` (hand-drawn boxes) and `gt_query/` are not used.

Protocol (standard since the Market-1501 paper; DESIGN "Standard protocol"): every query against the
whole gallery, excluding the gallery images of the query's identity taken by the query's camera and
all junk images; CMC rank-1/5/10 and mAP, one trial. Training uses the 751 training identities.
Recipe constants here are ours (the paper has no Market-1501 experiment): the paper's batch 128 and
5 augmented crops per image; an epoch is defined per identity (DESIGN "Multi-camera pairs").
Prepared by `data_tools.prepare_market1501` (the manifest references the original images).
"""
import re

from reid_tf import config
from reid_tf.datasets.base import IDENTITY_FIRST, STANDARD, DatasetSpec

# Identity (4 digits, or -1 for junk), camera 1-6, sequence, frame, box; ".jpg.jpg" occurs in the release.
NAME = re.compile(r"^(-1|\d{4})_c([1-6])s\d_\d{6}_\d{2}\.jpg(\.jpg)?$")
FILE_IDENTITY = IDENTITY_FIRST  # PPPP_cCsS_... as NAME, junk -1_...
# Counts of the release, checked by the preparation (folder -> (identities, images)); the gallery
# counts include identities 0 and -1.
EXPECTED = {"bounding_box_train": (751, 12936), "query": (750, 3368), "bounding_box_test": (752, 19732)}

SPEC = DatasetSpec(
    name="market1501",
    subdir="market1501",
    prepare="python -m data_tools.prepare_market1501 --src /path/to/Market-1501-v15.09.15 --out {root}",
    protocol=STANDARD,
    split_sizes=lambda n: (0, 0),  # all 751 training identities train; the test set is fixed
    batch_size=config.BATCH_SIZE["default"],  # ours: the paper's value for its non-CUHK03 datasets
    crops_per_image=1,  # ours: an epoch is config.POSITIVES_PER_IDENTITY fresh positives per identity
    trials=1,  # one fixed query / gallery split
    cameras=6,
)
