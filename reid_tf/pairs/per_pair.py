"""Per-pair batching: a batch is the next `batch_size` pairs of the epoch's sequence of triples,
every pair's two images read and prepared for it (`--pairing=per_pair`).

Batch composition. The epoch is a sequence of triples (positive, negative, negative) in the recipe's
random order; a batch is the next `batch_size` pairs of it. A batch whose size is a multiple of 3
holds exactly 1 : 2; the paper's 128 and 256 are not multiples of 3, so a batch of 128 holds 42 or 43
positives (⌊B/3⌋ or ⌈B/3⌉, the closest any 128 pairs can come to 1 : 2), and every 3 consecutive
batches of an epoch hold exactly B positives and 2B negatives. batch_size < 3 is refused (a batch
could then hold no positive). The trainer counts steps: `steps_per_epoch = epoch_size // batch_size`;
the last partial batch of each epoch is dropped (fewer than one batch of pairs per epoch), so an
epoch is a whole number of steps and batches never straddle two epochs.

Determinism and resume. The pair plan of epoch e comes from `np.random.default_rng([seed, 1, e])`;
the image of the pair at global position g = step × batch_size + i in image_a uses the slot 2g, in
image_b 2g + 1 (the stateless augmentation seeds (seed, slot) of the cross_camera recipe). Nothing
depends on iteration history, so `make_pair_dataset(..., start_step=k)` yields exactly the batches
k, k+1, … of the start_step=0 dataset — the trainer's exact resume after a crash.
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import tensorflow as tf

from reid_tf.datasets import Record
from reid_tf.pairs import cross_camera
from reid_tf.pairs.common import (PAIRS_PER_POSITIVE, TAG_TRAIN, Recipe, flatten_triples,
                                  image_source, to_float)
from reid_tf.pairs.recipes import get_recipe


def epoch_size(records: Sequence[Record], crops_per_image: int, recipe: str | Recipe = "cross_camera") -> int:
    """Pairs in one epoch: every positive (× crops_per_image for cross_camera, multi-camera datasets
    POSITIVES_PER_IDENTITY per identity; [31]'s copies are images of their own for shifted_copies),
    each with its 2 negatives."""
    return PAIRS_PER_POSITIVE * get_recipe(recipe).positives_per_epoch(records, crops_per_image)


def steps_per_epoch(records: Sequence[Record], batch_size: int, crops_per_image: int,
                    recipe: str | Recipe = "cross_camera") -> int:
    """Whole batches per epoch (the partial last batch is dropped)."""
    return epoch_size(records, crops_per_image, recipe) // batch_size


def check(records: Sequence[Record], batch_size: int, seed: int, crops_per_image: int) -> None:
    """ValueError unless the records can give batches of batch_size pairs (both batchings)."""
    if batch_size < PAIRS_PER_POSITIVE:
        raise ValueError(f"batch_size must be >= {PAIRS_PER_POSITIVE} so that every batch holds a "
                         f"positive (batches are runs of (positive, negative, negative) triples); "
                         f"got {batch_size}")
    if crops_per_image < 1 or seed < 0:
        raise ValueError(f"need crops_per_image >= 1 and seed >= 0, got {crops_per_image}, {seed}")
    if cross_camera.is_multi_camera(records):
        paired = len(cross_camera.cross_camera_identities(records))
    else:
        positives = cross_camera.positive_pairs(records)
        paired = len(np.unique([records[a].identity for a in positives[:, 0]]))
    if paired < 2:
        raise ValueError("need at least 2 identities with images in two cameras to form pairs; "
                         f"got {len(records)} records")
    if epoch_size(records, crops_per_image) < batch_size:
        raise ValueError(f"an epoch of {epoch_size(records, crops_per_image)} "
                         f"pairs is smaller than one batch of {batch_size}")


def plan_epoch(records: Sequence[Record], seed: int, epoch: int, crops_per_image: int,
               batch_size: int, recipe: str | Recipe = "cross_camera") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training pairs of one epoch, truncated to whole batches.

    Returns index_a, index_b (record indices; virtual image indices for shifted_copies) and label
    (1 = same identity), each (steps_per_epoch × batch_size,).
    """
    n = steps_per_epoch(records, batch_size, crops_per_image, recipe) * batch_size
    rng = np.random.default_rng([seed, TAG_TRAIN, epoch])
    first, second = get_recipe(recipe).epoch_triples(records, crops_per_image, rng)
    index_a, index_b, labels = flatten_triples(first, second, rng, swap=True)
    return index_a[:n], index_b[:n], labels[:n]


def _plan_dataset(records: Sequence[Record], batch_size: int, seed: int, crops_per_image: int,
                  first_epoch: int, num_epochs: int | None, recipe: Recipe) -> tf.data.Dataset:
    """Flat stream of (index_a, index_b, label, global position) from first_epoch on."""
    steps = steps_per_epoch(records, batch_size, crops_per_image, recipe)

    def epoch_plan(epoch: np.int64):
        index_a, index_b, labels = plan_epoch(records, seed, int(epoch), crops_per_image, batch_size, recipe)
        position = int(epoch) * steps * batch_size + np.arange(len(labels), dtype=np.int64)
        return index_a, index_b, labels, position

    def epoch_dataset(epoch: tf.Tensor) -> tf.data.Dataset:
        plan = tf.numpy_function(epoch_plan, [epoch], (tf.int64, tf.int64, tf.int32, tf.int64))
        for column in plan:
            column.set_shape([steps * batch_size])
        return tf.data.Dataset.from_tensor_slices(tuple(plan))

    last_epoch = sys.maxsize if num_epochs is None else num_epochs
    return tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_dataset)


def make_pair_dataset(records: Sequence[Record], batch_size: int, seed: int, crops_per_image: int,
                      start_step: int = 0, num_epochs: int | None = None,
                      cache_images: bool = True, recipe: str | Recipe = "cross_camera") -> tf.data.Dataset:
    """Batches of training pairs (§4.2); see the module docstring for epochs, batches and seeds.

    Args:
      records: the training Records (camera 0 = A, 1 = B).
      batch_size: pairs per batch (paper: 128, 256 for CUHK03); >= 3.
      seed: fixes the pair plans and the augmentation.
      crops_per_image: augmented repeats of every positive per epoch (config.CROPS_PER_IMAGE).
      start_step: skip the first start_step batches (exact resume).
      num_epochs: stop after this many epochs (None = repeat forever).
      cache_images: decode every image once into memory (faster) instead of once per use.
      recipe: config.RECIPES; "shifted_copies" trains on [31]'s pairs and copies
        (reid_tf.pairs.shifted_copies).
    Returns:
      Dataset of ({"image_a": (B, 160, 60, 3) float32 in [0, 1], "image_b": same}, label (B,) int32),
      label 1 = same identity; drop_remainder=True.
    """
    check(records, batch_size, seed, crops_per_image)
    recipe = get_recipe(recipe)
    first_epoch, step_in_epoch = divmod(start_step, steps_per_epoch(records, batch_size, crops_per_image, recipe))
    plan = _plan_dataset(records, batch_size, seed, crops_per_image, first_epoch, num_epochs, recipe)
    plan = plan.skip(step_in_epoch * batch_size)  # resume inside the first epoch
    fetch = image_source(records, cache_images)

    def image(index, slot):
        return recipe.training_image(fetch, index, seed, slot, crops_per_image)

    def make_pair(index_a, index_b, label, position):
        return {"image_a": to_float(image(index_a, 2 * position)),
                "image_b": to_float(image(index_b, 2 * position + 1))}, label

    # Order matters for exact resume: plan → skip → map (deterministic) → batch → prefetch.
    pairs = plan.map(make_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return pairs.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
