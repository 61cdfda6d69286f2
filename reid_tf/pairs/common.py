"""What both recipes and both batchings of reid_tf.pairs share: the Recipe interface, the triple
layout of a plan (positive, negative, negative) with its random swap, the negatives' draw, and the
training images' source (the uint8 cache or the files)."""
from __future__ import annotations

import abc
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from reid_tf import config
from reid_tf.datasets import Record
from reid_tf.images import load_uint8, read_image

PAIRS_PER_POSITIVE = 1 + config.NEGATIVES_PER_POSITIVE  # one triple: (positive, negative, negative)
# numpy seed-sequence tags of the per-pair and the shared epoch plans (fixed: another value draws
# other pairs in every run)
TAG_TRAIN, TAG_SHARED = 1, 3
Fetch = Callable[[tf.Tensor], tf.Tensor]  # record index (int64 scalar) -> uint8 (160, 60, 3)


class Recipe(abc.ABC):
    """Which pairs an epoch trains on and which image each index stands for (config.RECIPES).

    A recipe knows nothing of batches: reid_tf.pairs.per_pair cuts its epoch of triples into
    batches of pairs, reid_tf.pairs.shared groups its identity visits into batches of images. Every
    method that takes an rng draws from it in a fixed order, so that a plan is a function of
    (seed, epoch) alone (exact resume).
    """

    name: str
    max_shared_k: int | None = None  # most images per camera side a shared visit can hold (None: any)

    @abc.abstractmethod
    def positives_per_epoch(self, records: Sequence[Record], crops_per_image: int) -> int:
        """Positive pairs of one per-pair epoch (each brings its two negatives)."""

    @abc.abstractmethod
    def epoch_triples(self, records: Sequence[Record], crops_per_image: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
        """One per-pair epoch in its random order, unswapped: first, second (T, 3) image indices
        of each triple's (positive, negative, negative) pairs (as `flatten_triples` takes them)."""

    @abc.abstractmethod
    def training_image(self, fetch: Fetch, index: tf.Tensor, seed: int, slot: tf.Tensor,
                       crops_per_image: int) -> tf.Tensor:
        """uint8 (160, 60, 3): the training image of plan index `index`; `slot` (int64) is its
        global image position, the key of a per-use augmentation."""

    @abc.abstractmethod
    def shared_k(self, records: Sequence[Record], most: int) -> int:
        """K of a shared batch: images per camera side of one identity visit."""

    @abc.abstractmethod
    def visits_per_epoch(self, records: Sequence[Record], k: int, crops_per_image: int) -> int:
        """Identity visits of one shared epoch."""

    @abc.abstractmethod
    def epoch_visits(self, records: Sequence[Record], k: int, crops_per_image: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Every visit of one shared epoch, shuffled: identities (n,), images (n, 2k) [A…, B…]."""


def flatten_triples(first: np.ndarray, second: np.ndarray, rng: np.random.Generator, swap: bool
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, 3) first / second images of each triple's (positive, negative, negative) -> flat pairs
    (3T,) index_a, index_b, label: each positive then its 2 negatives; with `swap` the two images
    of every pair trade places with probability 1/2 (one draw of rng per pair)."""
    if swap:
        flip = rng.random(first.shape) < 0.5
        first, second = np.where(flip, second, first), np.where(flip, first, second)
    labels = np.tile(np.array([1, 0, 0], np.int32), len(first))  # (3T,)
    return first.reshape(-1), second.reshape(-1), labels  # (T, 3) -> (3T,)


def camera_index(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Record positions of camera-0 and camera-1 images, and every record's identity."""
    cameras = np.array([r.camera for r in records])
    identities = np.array([r.identity for r in records])
    return np.flatnonzero(cameras == 0), np.flatnonzero(cameras == 1), identities


def other_identity(pool: np.ndarray, identities: np.ndarray, avoid: np.ndarray,
                   rng: np.random.Generator, cameras: np.ndarray | None = None,
                   avoid_camera: np.ndarray | None = None) -> np.ndarray:
    """For each entry of avoid (T,), a uniform pick from pool (record indices) of another identity,
    and, if given, another camera than avoid_camera (T,) (with two cameras the pool is the other
    camera's, so this never rejects there)."""
    def clashes(picks):
        bad = identities[picks] == avoid
        return bad if cameras is None else bad | (cameras[picks] == avoid_camera)

    picks = rng.choice(pool, size=len(avoid))
    clash = clashes(picks)
    while clash.any():  # rejection: terminates because per_pair.check demands ≥ 2 identities
        picks[clash] = rng.choice(pool, size=int(clash.sum()))
        clash = clashes(picks)
    return picks


def to_float(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32) / 255.0  # uint8 (H, W, 3) -> float32 in [0, 1]


def image_source(records: Sequence[Record], cache_images: bool) -> Fetch:
    """record index (int64 scalar) -> uint8 (160, 60, 3): from the in-memory cache or the file."""
    if cache_images:
        table = tf.constant(load_uint8([r.path for r in records]))  # (N, 160, 60, 3) uint8
        return lambda i: tf.gather(table, i)
    paths = tf.constant([r.path for r in records])
    return lambda i: read_image(tf.gather(paths, i))
