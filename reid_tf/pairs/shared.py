"""Shared-image batching: a batch is a set of images, each encoded once, and its pairs are formed
among them (`--pairing=shared`; DESIGN "Training on shared images"). Per-pair batches
(reid_tf.pairs.per_pair) run every image through the encoder once per pair it is in: three encodings
per positive.

A batch holds V identity *visits* (what a visit is, and which visits an epoch makes, is the recipe's:
reid_tf.pairs.cross_camera, reid_tf.pairs.shifted_copies). A visit is one identity with K camera-A and
K camera-B images: its K² cross-camera positives, and for each positive its two negatives, (its
camera-A image, a camera-B image of another identity's visit in the batch) and (a camera-A image of
another identity's visit, its camera-B image) — cross-camera like every per-pair pair. So 2K images
give 3K² pairs: 12 pairs from 4 images for K = 2, against 12 pairs from 24 encodings per pair.
V = round(batch_size / 3K²) (11 for 128 with K = 2, i.e. 132 pairs). The visits are shuffled; a batch
whose visits are all one identity (possible only at the junction of repeats) swaps its last visit
with the next visit of another identity.

Determinism and resume as per pair: the plan of epoch e comes from default_rng([seed, 3, e]); the
image in slot g (global position step × N + i) is the recipe's training image for slot g (the
cross_camera recipe's augmentation seed (seed, g)).
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import tensorflow as tf

from reid_tf import config
from reid_tf.datasets import Record
from reid_tf.images import IMAGE_SHAPE
from reid_tf.pairs.common import PAIRS_PER_POSITIVE, TAG_SHARED, Recipe, flatten_triples, image_source, to_float
from reid_tf.pairs.per_pair import check
from reid_tf.pairs.recipes import get_recipe


def visits_per_batch(batch_size: int, k: int) -> int:
    """V: visits per shared batch, so that its 3·V·K² pairs come closest to batch_size (at least 2)."""
    return max(2, int(round(batch_size / (PAIRS_PER_POSITIVE * k * k))))


def shared_steps_per_epoch(records: Sequence[Record], batch_size: int, crops_per_image: int,
                           most: int = config.SHARED_IMAGES_PER_CAMERA,
                           recipe: str | Recipe = "cross_camera") -> int:
    """Whole shared batches per epoch (the partial last batch is dropped); `most` bounds K."""
    recipe = get_recipe(recipe)
    k = recipe.shared_k(records, most)
    return recipe.visits_per_epoch(records, k, crops_per_image) // visits_per_batch(batch_size, k)


def shared_batch_shape(records: Sequence[Record], batch_size: int,
                       most: int = config.SHARED_IMAGES_PER_CAMERA, recipe: str | Recipe = "cross_camera"
                       ) -> tuple[int, int]:
    """(images, pairs) of every shared batch: (2·K·V, 3·K²·V)."""
    k = get_recipe(recipe).shared_k(records, most)
    v = visits_per_batch(batch_size, k)
    return 2 * k * v, PAIRS_PER_POSITIVE * k * k * v


def _separate_identities(idents: np.ndarray, images: np.ndarray, v: int) -> None:
    """In place: no batch of v consecutive visits is all one identity. A batch that is swaps its
    last visit with the first visit after it (wrapping round) of another identity whose own batch
    keeps two identities."""
    n = len(idents) // v * v  # the visits of whole batches

    def keeps_two(j: int, u: int) -> bool:  # batch of position j still mixed once j holds u?
        start = j // v * v
        if start >= n:
            return True
        rest = np.delete(idents[start:start + v], j - start)
        return bool(np.any(rest != u))

    for start in range(0, n, v):
        u = idents[start]
        if np.any(idents[start:start + v] != u):
            continue
        last = start + v - 1
        for j in np.roll(np.arange(len(idents)), -(start + v)):
            if idents[j] != u and keeps_two(j, u):
                idents[[last, j]], images[[last, j]] = idents[[j, last]], images[[j, last]]
                break


def batch_pairs(idents: np.ndarray, k: int, rng: np.random.Generator, swap: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of one shared batch of visits with identities idents (V,), images laid out visit by
    visit as [K camera-A, K camera-B]: index_a, index_b (positions among the 2KV images) and label,
    each (3K²V,): every positive followed by its two negatives."""
    v = len(idents)
    first, second = [], []
    for visit in range(v):
        others = np.flatnonzero(idents != idents[visit])  # other identities' visits in the batch
        for i in range(k):
            for j in range(k):
                a, b = visit * 2 * k + i, visit * 2 * k + k + j
                neg_b = rng.choice(others) * 2 * k + k + rng.integers(k)  # another identity's B image
                neg_a = rng.choice(others) * 2 * k + rng.integers(k)  # another identity's A image
                first.append([a, a, neg_a])
                second.append([b, neg_b, b])
    return flatten_triples(np.asarray(first, np.int64), np.asarray(second, np.int64), rng, swap)


def plan_shared_epoch(records: Sequence[Record], seed: int, epoch: int, crops_per_image: int,
                      batch_size: int, most: int = config.SHARED_IMAGES_PER_CAMERA,
                      recipe: str | Recipe = "cross_camera") -> tuple[np.ndarray, ...]:
    """The shared batches of one epoch: image records (S, N) (virtual image indices for
    shifted_copies), pair index_a, index_b (S, M) into the batch's images, labels (S, M), for
    S = shared_steps_per_epoch batches."""
    recipe = get_recipe(recipe)
    rng = np.random.default_rng([seed, TAG_SHARED, epoch])
    k = recipe.shared_k(records, most)
    v = visits_per_batch(batch_size, k)
    idents, images = recipe.epoch_visits(records, k, crops_per_image, rng)
    _separate_identities(idents, images, v)
    steps = len(idents) // v
    pairs = [batch_pairs(idents[s * v:(s + 1) * v], k, rng, swap=True) for s in range(steps)]
    return (images[:steps * v].reshape(steps, 2 * k * v),
            *(np.stack([p[i] for p in pairs]) for i in range(3)))


def make_shared_dataset(records: Sequence[Record], batch_size: int, seed: int, crops_per_image: int,
                        start_step: int = 0, num_epochs: int | None = None,
                        cache_images: bool = True, most: int = config.SHARED_IMAGES_PER_CAMERA,
                        recipe: str | Recipe = "cross_camera") -> tf.data.Dataset:
    """Shared-image training batches; see the module docstring (`most` bounds K; recipe
    config.RECIPES, shifted_copies with K = 1).

    Returns:
      Dataset of ({"images": (N, 160, 60, 3) float32 in [0, 1], "index_a": (M,) int64, "index_b":
      (M,) int64}, label (M,) int32): the batch's pairs are (images[index_a[i]], images[index_b[i]]).
    """
    check(records, PAIRS_PER_POSITIVE, seed, crops_per_image)
    recipe = get_recipe(recipe)
    steps = shared_steps_per_epoch(records, batch_size, crops_per_image, most, recipe)
    if steps < 1:
        raise ValueError(f"an epoch of shared batches is shorter than one batch of {batch_size} pairs")
    n, m = shared_batch_shape(records, batch_size, most, recipe)
    first_epoch, step_in_epoch = divmod(start_step, steps)
    fetch = image_source(records, cache_images)

    def epoch_dataset(epoch: tf.Tensor) -> tf.data.Dataset:
        plan = tf.numpy_function(
            lambda e: plan_shared_epoch(records, seed, int(e), crops_per_image, batch_size, most, recipe),
            [epoch], (tf.int64, tf.int64, tf.int64, tf.int32))
        for column, width in zip(plan, (n, m, m, m)):
            column.set_shape([steps, width])
        first_step = epoch * steps
        return tf.data.Dataset.from_tensor_slices((*plan, first_step + tf.range(steps, dtype=tf.int64)))

    def make_batch(image_records, index_a, index_b, labels, step):
        slots = step * n + tf.range(n, dtype=tf.int64)  # global image slots: augmentation seeds
        images = tf.map_fn(
            lambda rs: to_float(recipe.training_image(fetch, rs[0], seed, rs[1], crops_per_image)),
            (image_records, slots), fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.float32))
        return {"images": images, "index_a": index_a, "index_b": index_b}, labels

    last_epoch = sys.maxsize if num_epochs is None else num_epochs
    plan = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_dataset).skip(step_in_epoch)
    batches = plan.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)
