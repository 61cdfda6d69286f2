"""Training pairs for the Siamese network as tf.data pipelines (paper §4.2), as two independent
choices:

- the *recipe*, which pairs an epoch holds and which image each index stands for
  (`--recipe`, config.RECIPES; a `Recipe` object each): ours, `cross_camera.py` (cross-camera
  positives, each with two cross-camera negatives, freshly augmented as §4.2's [2]), and [31]'s,
  `shifted_copies.py` (every pair of an identity's images and fixed copies);
- the *batching*, how a batch is built from them (`--pairing`): `per_pair.py` (the next batch_size
  pairs of the epoch's sequence of triples, each pair's images prepared for it) and `shared.py` (a
  batch of identity visits whose images are encoded once and paired within the batch).

Data flows one way: records → recipe (positives, negatives, images) → batching → the trainer.
`common.py` holds what both share (the Recipe interface, the triple layout and its random swap);
`recipes.py` turns a recipe's name into its object.

Determinism and resume. Every plan is a function of (seed, epoch) alone — numpy's
`default_rng([seed, tag, epoch])`, a tag per batching — and every image of a batch a function of
(seed, its global slot) through stateless seeds, so a dataset made with `start_step=k` yields exactly
the batches k, k+1, … of the one made with start_step=0: the trainer's exact resume after a crash.

Images are read by reid_tf.images (one decoder and one conversion to 8-bit RGB for preparation,
training, evaluation and ranking; resized to 160 × 60 when they are not already) and scaled to
float32 in [0, 1]. By default the decoded uint8 images are cached in memory once (at most 112 MB for
CUHK01's 3,884 images, 380 MB for CUHK03's 13,164): decoding both images of every pair is several
times slower than reading the cache, and either is far faster than the training step, so the cache
mostly spares CPU time that training needs (`make bench-data`; the figures: docs/RESULTS.md, "Speed").
"""
from reid_tf.images import load_images, load_uint8  # noqa: F401  (callers read images via pairs)
from reid_tf.pairs.common import PAIRS_PER_POSITIVE, Recipe, image_source  # noqa: F401
from reid_tf.pairs.cross_camera import (MAX_SHIFT, augment, images_per_camera, is_multi_camera,  # noqa: F401
                                        multi_camera_positives, positive_pairs)
from reid_tf.pairs.shifted_copies import copies_positive_pairs, copy_version, copy_versions  # noqa: F401
from reid_tf.pairs.per_pair import epoch_size, make_pair_dataset, plan_epoch, steps_per_epoch  # noqa: F401
from reid_tf.pairs.recipes import RECIPES, get_recipe  # noqa: F401
from reid_tf.pairs.shared import (batch_pairs, make_shared_dataset, plan_shared_epoch,  # noqa: F401
                                  shared_batch_shape, shared_steps_per_epoch, visits_per_batch)
