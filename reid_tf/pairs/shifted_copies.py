"""[31]'s reading of §4.2's pairs (recipe "shifted_copies"): the pairs and copies of the public code of
[31] (InnovArul/personreid_normxcorr; config.RECIPES says why it is a recipe of its own).

Every record r stands for `copy_versions(crops)` images, "virtual" image v = r · n + version:
version 0 the original, 1…crops a copy translated by a fixed integer (dy, dx) ∈ [−8, 8]² (0.05 × 160
on both axes, zero fill), crops + 1 its mirror image. [31] writes these copies to disk once; here they
are made online from a stateless seed of (seed, v), so version k of an image is the same picture in
every epoch — the same 7 images per original as the offline copies, without the files. Positives:
every pair of an identity's virtual images (any cameras), each once per epoch; negatives: (its first
image, a random virtual image of another identity) and (a random one of another identity, its second
image).

On shared images (reid_tf.pairs.shared) a visit is one of its positives, two virtual images of one
identity (any cameras) in random order, as a K = 1 visit whose first image stands where camera A
does. Every positive comes once per epoch, as per pair; the negatives pair each of its images with an
image of another identity's visit in the batch (either side of it: the sides are random), i.e. a
random virtual image of another identity, drawn from the batch instead of the whole set. The images
are [31]'s versions (`copy_version`, seeded by (seed, virtual index) exactly as per pair), with no
further augmentation. K > 1 has no exact counterpart: an identity's C(n, 2) pairs cannot be cut into
equal K × K blocks (the pairs inside a block's side are left over), so this recipe shares with K = 1
only (train.py refuses more).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from reid_tf import config
from reid_tf.datasets import Record
from reid_tf.images import IMAGE_SHAPE
from reid_tf.pairs.common import Fetch, Recipe, other_identity


def copy_versions(crops_per_image: int) -> int:
    """Images per original under [31]'s augmentation: itself, crops translated copies, one mirror."""
    return 1 + crops_per_image + 1


def copies_positive_pairs(records: Sequence[Record], versions: int) -> np.ndarray:
    """Every pair (i < j) of virtual images of one identity: (P, 2) virtual indices, sorted."""
    identities = np.repeat(np.array([r.identity for r in records]), versions)  # per virtual image
    order = np.argsort(identities, kind="stable")
    bounds = np.flatnonzero(np.diff(identities[order], prepend=-1, append=-1))
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        members = np.sort(order[lo:hi])
        i, j = np.triu_indices(len(members), k=1)
        out.append(np.stack([members[i], members[j]], axis=1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 2), np.int64)


def _shuffled_positives(records: Sequence[Record], crops_per_image: int, rng: np.random.Generator
                        ) -> tuple[int, np.ndarray]:
    """(versions per image, every [31] positive pair once in rng's order, (P, 2))."""
    versions = copy_versions(crops_per_image)
    positives = copies_positive_pairs(records, versions)
    return versions, positives[rng.permutation(len(positives))]


def copy_version(image: tf.Tensor, version: tf.Tensor, seed: tf.Tensor, versions: int) -> tf.Tensor:
    """Version `version` of an image under [31]'s augmentation (module docstring); seed (2,) fixes
    the translation of each copy."""
    height, width = IMAGE_SHAPE[:2]
    shift = int(config.COPY_SHIFT_FRACTION * height)  # [31]: 0.05 × height, both axes
    draws = tf.random.stateless_uniform([2], seed=seed)
    dy = tf.cast(tf.floor(draws[0] * (2 * shift + 1)), tf.int32) - shift
    dx = tf.cast(tf.floor(draws[1] * (2 * shift + 1)), tf.int32) - shift

    def moved():  # out[y, x] = image[y − dy, x − dx], zero outside as [31]'s image.translate
        rows, cols = tf.range(height) - dy, tf.range(width) - dx
        inside = ((rows >= 0) & (rows < height))[:, None] & ((cols >= 0) & (cols < width))[None, :]
        out = tf.gather(tf.gather(image, tf.clip_by_value(rows, 0, height - 1), axis=0),
                        tf.clip_by_value(cols, 0, width - 1), axis=1)
        return tf.where(inside[..., None], out, tf.zeros_like(out))

    return tf.case([(tf.equal(version, 0), lambda: image),
                    (tf.equal(version, versions - 1), lambda: tf.reverse(image, [1]))], default=moved)


class ShiftedCopies(Recipe):
    """[31]'s (module docstring): every pair of an identity's virtual images once an epoch, with two
    negatives of any camera; the images are the fixed versions, not augmented per use."""

    name = "shifted_copies"
    max_shared_k = config.RECIPE_MAX_SHARED_K[name]  # module docstring: no exact counterpart for K > 1

    def positives_per_epoch(self, records, crops_per_image):
        return len(copies_positive_pairs(records, copy_versions(crops_per_image)))

    def epoch_triples(self, records, crops_per_image, rng):
        versions, positives = _shuffled_positives(records, crops_per_image, rng)
        identities = np.repeat(np.array([r.identity for r in records]), versions)
        pool = np.arange(len(identities))
        ident = identities[positives[:, 0]]
        neg_b = other_identity(pool, identities, ident, rng)
        neg_a = other_identity(pool, identities, ident, rng)
        first = np.stack([positives[:, 0], positives[:, 0], neg_a], axis=1)  # (T, 3)
        second = np.stack([positives[:, 1], neg_b, positives[:, 1]], axis=1)  # (T, 3)
        return first, second

    def training_image(self, fetch: Fetch, index, seed, slot, crops_per_image):
        """The version of its record that virtual index `index` is, whatever its slot: the copy's
        translation is seeded by (seed, index), the same picture in every epoch and batching."""
        versions = copy_versions(crops_per_image)
        return copy_version(fetch(index // versions), index % versions,
                             tf.stack([tf.constant(seed, tf.int64), index]), versions)

    def shared_k(self, records, most):
        return self.max_shared_k

    def visits_per_epoch(self, records, k, crops_per_image):
        return self.positives_per_epoch(records, crops_per_image)

    def epoch_visits(self, records, k, crops_per_image, rng):
        """Every positive once, shuffled, each in a random order: identities (P,), images (P, 2)."""
        versions, positives = _shuffled_positives(records, crops_per_image, rng)
        positives = np.where((rng.random(len(positives)) < 0.5)[:, None], positives[:, ::-1], positives)
        identities = np.array([r.identity for r in records], np.int64)[positives[:, 0] // versions]
        return identities, positives


SHIFTED_COPIES = ShiftedCopies()
