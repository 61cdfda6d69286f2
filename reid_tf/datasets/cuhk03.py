"""CUHK03 (classic protocol), detected and labeled bounding boxes.

Li, Zhao, Xiao, Wang, "DeepReID: Deep filter pairing neural network for person
re-identification", CVPR 2014. http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html
Statistics: `cuhk-03.mat` holds 1,467 identities from 5 camera pairs; the paper (§4.1) uses camera
pairs 1–3: 1,360 identities, 13,164 detected images. Protocol: test = one of the 20 `testsets` of
the .mat (100 identities), validation = 100 other identities, train = the remaining 1,160;
single-shot CMC averaged over the 20 testsets. Prepared by `data_tools.prepare_cuhk03`, which
extracts both variants into `cuhk03/detected/` and `cuhk03/labeled/` (identity = 1000 · pair + id).
"""
import os
import re

from reid_tf import config
from reid_tf.datasets.base import SINGLE_SHOT, DatasetSpec, FileIdentity

# P_III_V_CC (camera pair, identity, view, column), as data_tools.prepare_cuhk03 names the images;
# the identity as its manifest holds it, 1000 · pair + identity (one number across camera pairs).
FILE_IDENTITY = FileIdentity(re.compile(r"^(\d)_(\d{3})_\d_\d+$"), lambda g: 1000 * int(g[0]) + int(g[1]))


def _spec(kind: str) -> DatasetSpec:
    return DatasetSpec(
        name=f"cuhk03_{kind}",
        subdir=os.path.join("cuhk03", kind),
        # One command writes both variants, into the parent of detected/ and labeled/.
        prepare="python -m data_tools.prepare_cuhk03 --mat /path/to/cuhk-03.mat --out {parent}",
        protocol=SINGLE_SHOT,
        split_sizes=lambda n: (100, 100),  # §4.1: 100 test (a testset), 100 validation, 1,160 train
        batch_size=config.BATCH_SIZE["cuhk03"],
        crops_per_image=config.CROPS_PER_IMAGE["cuhk03"],
        trials=config.TRIALS["cuhk03"],
        fixed_testsets=True,
        recipe=config.PAPER_RECIPE,
    )


DETECTED = _spec("detected")
LABELED = _spec("labeled")
