"""Our reading of §4.2's pairs (recipe "cross_camera"), and its augmentation.

§4.2: "we only randomly choose two negative pairs for each positive pair", "we do not introduce hard
negative mining", and augmentation "as [2]" (Ahmed et al. 2015): crops translated around the image
centre by up to ±5 % of height and width, and horizontal flips; "2 images for CUHK03 and 5 for others"
(`config.CROPS_PER_IMAGE`).

Pairs. A *positive* is two images of one identity from different cameras: one camera-A image and one
camera-B image. Each positive brings its two *negatives*, anchored on its own images: (its camera-A
image, a random camera-B image of another identity) and (a random camera-A image of another
identity, its camera-B image). So every pair, positive or negative, is cross-camera like every test
pair (query from A, gallery from B) — the camera combination carries no information about the
label — and every positive's images reappear in its negatives, so an image takes part in negatives
twice as often as in positives on average (the 1 : 2 of the pairs): its mere presence says nothing
about the label. Within every pair the two images swap places with probability 1/2, so the network
sees both orders and cannot tie a camera's look to a slot (the test protocols put camera A's image
first: reid_tf.protocols). Negatives are kept
cross-camera on purpose: negatives from any cameras would make "same camera ⇒ negative" a shortcut
that no test pair can use.

An epoch. Every cross-camera positive pair of the given records (for each identity, every camera-A
image × every camera-B image), each `crops_per_image` times with its own fresh augmentation and its
own two freshly drawn negatives: `epoch_size = 3 × positives × crops_per_image` pairs, in a random
order of triples. E.g. CUHK01 (871 training identities × 2 × 2 images, 5 crops): 3,484 positives →
52,260 pairs → 408 steps of 128.

Multi-camera datasets (Market-1501: 6 cameras, DukeMTMC-reID: 8). A positive is two images of one
identity from two different cameras, its negatives as above with partners from any camera other
than their anchor's. All such pairs would weight an identity by its image count squared (Market-1501
identities have 2–72 training images), so an epoch draws `config.POSITIVES_PER_IDENTITY` positives per
identity instead, uniformly from its cross-camera pairs, afresh each epoch (DESIGN "Multi-camera pairs").

On shared images (reid_tf.pairs.shared) a visit is one identity with K camera-A and K camera-B
images; an epoch visits every identity crops_per_image times over every chunk combination of its
images: its camera-A images (shuffled) are cut into ⌈n_A / K⌉ chunks of K (the last one completed
from the start of the list), likewise camera B, and one visit per (A chunk, B chunk): every
cross-camera positive at least crops_per_image times, each visit with fresh augmentation of each
image. For CUHK01 (2 + 2 images, K = 2) that is exactly every positive crops_per_image times, as per
pair.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from reid_tf import config
from reid_tf.datasets import Record
from reid_tf.images import IMAGE_SHAPE
from reid_tf.pairs.common import Recipe, camera_index, other_identity

# Largest integer shift, in pixels, of the translated crops (Ahmed et al. 2015): ±8 rows, ±3 columns.
MAX_SHIFT = (round(config.CROP_SHIFT_FRACTION * config.INPUT_HEIGHT),
             round(config.CROP_SHIFT_FRACTION * config.INPUT_WIDTH))


# ----------------------------------------------------------------------------- positives
def positive_pairs(records: Sequence[Record]) -> np.ndarray:
    """Every cross-camera positive: (P, 2) record indices (camera-0 image, camera-1 image), sorted."""
    cam_a, cam_b, identities = camera_index(records)
    cam_b = cam_b[np.argsort(identities[cam_b], kind="stable")]  # camera-1 images by identity
    lo = np.searchsorted(identities[cam_b], identities[cam_a], side="left")
    counts = np.searchsorted(identities[cam_b], identities[cam_a], side="right") - lo
    # For camera-0 image k, its partners are cam_b[lo[k] : lo[k] + counts[k]].
    starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    first = np.repeat(cam_a, counts)
    second = cam_b[starts + np.arange(counts.sum())]
    order = np.lexsort((second, first))
    return np.stack([first[order], second[order]], axis=1).astype(np.int64)  # (P, 2)


def is_multi_camera(records: Sequence[Record]) -> bool:
    """More than the paper's two cameras (Market-1501: 6, DukeMTMC-reID: 8)."""
    return any(r.camera > 1 for r in records)


def cross_camera_identities(records: Sequence[Record]) -> dict[int, np.ndarray]:
    """identity -> its record indices, for the identities seen by at least two cameras."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r.identity, []).append(i)
    return {ident: np.array(idx) for ident, idx in sorted(groups.items())
            if len({records[i].camera for i in idx}) > 1}


def multi_camera_positives(records: Sequence[Record], rng: np.random.Generator,
                           per_identity: int = config.POSITIVES_PER_IDENTITY) -> np.ndarray:
    """An epoch's positives for a multi-camera dataset: per identity seen by ≥ 2 cameras,
    `per_identity` pairs of its images from two different cameras, drawn uniformly from all such
    pairs (with replacement only when it has fewer), in identity order: (n · per_identity, 2).
    DESIGN "Multi-camera pairs" says why a fixed number per identity."""
    cameras = np.array([r.camera for r in records])
    out = []
    for idx in cross_camera_identities(records).values():
        a, b = np.triu_indices(len(idx), k=1)
        cross = cameras[idx[a]] != cameras[idx[b]]
        a, b = idx[a[cross]], idx[b[cross]]  # every cross-camera pair of this identity
        pick = rng.choice(len(a), size=per_identity, replace=len(a) < per_identity)
        out.append(np.stack([a[pick], b[pick]], axis=1))
    return np.concatenate(out).astype(np.int64)


def positives(records: Sequence[Record], rng: np.random.Generator) -> np.ndarray:
    """The positives of one pass (P, 2): every cross-camera pair, or, for multi-camera datasets, an
    epoch's draw from rng."""
    return multi_camera_positives(records, rng) if is_multi_camera(records) else positive_pairs(records)


def positive_count(records: Sequence[Record]) -> int:
    """len(positives(records, rng)) for any rng."""
    if is_multi_camera(records):
        return config.POSITIVES_PER_IDENTITY * len(cross_camera_identities(records))
    return len(positive_pairs(records))


def with_negatives(records: Sequence[Record], positives: np.ndarray, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """positives (T, 2) -> first, second (T, 3): each positive then its 2 cross-camera negatives."""
    cam_a, cam_b, identities = camera_index(records)
    cameras = np.array([r.camera for r in records])
    if is_multi_camera(records):  # negatives from any camera but the anchor's, like the positives
        cam_a = cam_b = np.arange(len(records))
    anchor_a, anchor_b = positives[:, 0], positives[:, 1]
    ident = identities[anchor_a]
    neg_b = other_identity(cam_b, identities, ident, rng, cameras, cameras[anchor_a])
    neg_a = other_identity(cam_a, identities, ident, rng, cameras, cameras[anchor_b])
    first = np.stack([anchor_a, anchor_a, neg_a], axis=1)  # (T, 3): positive, negative, negative
    second = np.stack([anchor_b, neg_b, anchor_b], axis=1)  # (T, 3)
    return first, second


# ----------------------------------------------------------------------------- augmentation
def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Translated crop + horizontal flip (§4.2, Ahmed et al. 2015), deterministic in seed.

    Args:
      image: (160, 60, C), any dtype.
      seed: (2,) int32/int64 stateless seed.
    Returns:
      image of the same shape and dtype: content shifted by integer (dy, dx) drawn uniformly from
      [-8, 8] × [-3, 3] (±CROP_SHIFT_FRACTION of 160 × 60), the uncovered border filled by
      replicating the edge, then flipped left-right with probability 1/2.
    """
    draws = tf.random.stateless_uniform([3], seed=seed)  # dy, dx, flip
    max_dy, max_dx = MAX_SHIFT
    dy = tf.cast(tf.floor(draws[0] * (2 * max_dy + 1)), tf.int32) - max_dy
    dx = tf.cast(tf.floor(draws[1] * (2 * max_dx + 1)), tf.int32) - max_dx
    height, width = IMAGE_SHAPE[:2]
    # out[y, x] = image[y − dy, x − dx], indices clamped to the image (edge replication).
    rows = tf.clip_by_value(tf.range(height) - dy, 0, height - 1)
    cols = tf.clip_by_value(tf.range(width) - dx, 0, width - 1)
    cols = tf.where(draws[2] < 0.5, tf.reverse(cols, [0]), cols)
    return tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)


# ----------------------------------------------------------------------------- identity visits
def images_per_camera(records: Sequence[Record], most: int = config.SHARED_IMAGES_PER_CAMERA) -> int:
    """K: images per camera per visit, the most every identity with positives can give (≤ most)."""
    cam_a, cam_b, identities = camera_index(records)
    both = np.intersect1d(identities[cam_a], identities[cam_b])
    if not len(both):
        return 1
    count_a = np.unique(identities[cam_a], return_counts=True)
    count_b = np.unique(identities[cam_b], return_counts=True)
    fewest = min(count_a[1][np.isin(count_a[0], both)].min(), count_b[1][np.isin(count_b[0], both)].min())
    return int(max(1, min(most, fewest)))


def _identity_images(records: Sequence[Record]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(identity, camera-A record indices, camera-B record indices) of identities in both cameras."""
    cam_a, cam_b, identities = camera_index(records)
    out = []
    for ident in np.intersect1d(identities[cam_a], identities[cam_b]):
        out.append((int(ident), cam_a[identities[cam_a] == ident], cam_b[identities[cam_b] == ident]))
    return out


def _chunks(indices: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffled indices cut into chunks of k, the last completed from the start: (⌈n/k⌉, k)."""
    order = indices[rng.permutation(len(indices))]
    n = -(-len(order) // k) * k
    return np.resize(order, n).reshape(-1, k)


# ----------------------------------------------------------------------------- the recipe
class CrossCamera(Recipe):
    """Ours (module docstring): cross-camera positives × crops_per_image, each with two fresh
    cross-camera negatives; every use of an image freshly augmented (`augment`)."""

    name = "cross_camera"

    def positives_per_epoch(self, records, crops_per_image):
        return positive_count(records) * crops_per_image

    def epoch_triples(self, records, crops_per_image, rng):
        repeated = np.repeat(positives(records, rng), crops_per_image, axis=0)  # (P·crops, 2)
        return with_negatives(records, repeated[rng.permutation(len(repeated))], rng)

    def training_image(self, fetch, index, seed, slot, crops_per_image):
        return augment(fetch(index), tf.stack([tf.constant(seed, tf.int64), slot]))

    def shared_k(self, records, most):
        return images_per_camera(records, most)

    def visits_per_epoch(self, records, k, crops_per_image):
        return sum(crops_per_image * -(-len(a) // k) * -(-len(b) // k) for _, a, b in _identity_images(records))

    def epoch_visits(self, records, k, crops_per_image, rng):
        idents, images = [], []
        for ident, cam_a, cam_b in _identity_images(records):
            for _ in range(crops_per_image):
                chunks_a, chunks_b = _chunks(cam_a, k, rng), _chunks(cam_b, k, rng)
                for ca in chunks_a:
                    for cb in chunks_b:
                        idents.append(ident)
                        images.append(np.concatenate([ca, cb]))
        order = rng.permutation(len(idents))
        return (np.asarray(idents, np.int64)[order],
                np.asarray(images, np.int64).reshape(len(idents), 2 * k)[order])


CROSS_CAMERA = CrossCamera()
