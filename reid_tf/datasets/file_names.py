"""Identities from image file names, by the datasets' own naming: whose image a file of a gallery
folder is, for ranking.json and the ranked-results pictures of `python -m reid_tf.rank`.

Each dataset module says how its file names give the identity (FILE_IDENTITY, a
base.FileIdentity). A name is asked of each convention in turn, the narrower first: a CUHK03 name
(`2_017_1_06`) also starts with a number and "_", which is how VIPeR, synthetic and the
Market-1501 family name their files (base.IDENTITY_FIRST), and would read as identity 2. A name no
convention reads has no identity (None), and its results are neither matches nor non-matches.
"""
from __future__ import annotations

import os
import re

from reid_tf.datasets import cuhk01, cuhk03
from reid_tf.datasets.base import IDENTITY_FIRST

CONVENTIONS = (cuhk03.FILE_IDENTITY, cuhk01.FILE_IDENTITY, IDENTITY_FIRST)


def identity_from_name(path: str, pattern: str | None = None) -> int | None:
    """A person's identity read from an image's file name, or None when the name does not say.

    Default: the datasets' conventions above (CUHK03 as prepared here: 1000 · pair + identity). A
    `pattern` (regular expression on the file name without suffix) uses its first group instead.
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    if pattern:
        m = re.search(pattern, stem)
        return int(m.group(1)) if m and m.group(1) is not None and m.group(1).lstrip("-").isdigit() else None
    for convention in CONVENTIONS:
        identity = convention.of(stem)
        if identity is not None:
            return identity
    return None
