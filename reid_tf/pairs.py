"""Training pairs for the Siamese network as a tf.data pipeline (paper §4.2).

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
about the label. Within every pair the two images swap places with probability 1/2 (training only),
so the network sees both orders and cannot tie a camera's look to a slot; at evaluation
(training=False) camera A is always "image_a", as in the test protocol. Negatives are kept
cross-camera on purpose: negatives from any cameras would make "same camera ⇒ negative" a shortcut
that no test pair can use.

An epoch. Every cross-camera positive pair of the given records (for each identity, every camera-A
image × every camera-B image), each `crops_per_image` times with its own fresh augmentation and its
own two freshly drawn negatives: `epoch_size = 3 × positives × crops_per_image` pairs, in a random
order of triples drawn from numpy's RNG seeded by (seed, epoch). E.g. CUHK01 (871 training identities
× 2 × 2 images, 5 crops): 3,484 positives → 52,260 pairs → 408 steps of 128. The trainer counts
steps: `steps_per_epoch = epoch_size // batch_size`; the last partial batch of each epoch is dropped
(fewer than one batch of pairs per epoch), so an epoch is a whole number of steps and batches never
straddle two epochs.

Multi-camera datasets (Market-1501: 6 cameras, DukeMTMC-reID: 8). A positive is two images of one
identity from two different cameras, its negatives as above with partners from any camera other
than their anchor's. All such pairs would weight an identity by its image count squared (Market-1501
identities have 2–72 training images), so an epoch draws `config.POSITIVES_PER_IDENTITY` positives per
identity instead, uniformly from its cross-camera pairs, afresh each epoch (DESIGN "Multi-camera pairs").

Batch composition. The epoch is a sequence of triples (positive, negative, negative); a batch is the
next `batch_size` pairs of it. A batch whose size is a multiple of 3 holds exactly 1 : 2; the paper's
128 and 256 are not multiples of 3, so a batch of 128 holds 42 or 43 positives (⌊B/3⌋ or ⌈B/3⌉, the
closest any 128 pairs can come to 1 : 2), and every 3 consecutive batches of an epoch hold exactly B
positives and 2B negatives. batch_size < 3 is refused (a batch could then hold no positive).

Determinism and resume. The pair plan of epoch e comes from `np.random.default_rng([seed, 1, e])`;
the augmentation of the pair at global position g = step × batch_size + i uses the stateless seeds
(seed, 2g) for image_a and (seed, 2g + 1) for image_b. Nothing depends on iteration history, so
`make_pair_dataset(..., start_step=k)` yields exactly the batches k, k+1, … of the start_step=0
dataset — the trainer's exact resume after a crash.

Images are read by reid_tf.images (one decoder and one conversion to 8-bit RGB for preparation,
training, evaluation and ranking; resized to 160 × 60 when they are not already) and scaled to
float32 in [0, 1].
By default the decoded uint8 images are cached in memory once (at most 112 MB for CUHK01's 3,884
images, 380 MB for CUHK03's 13,164): decoding both images of every pair is several times slower
than reading the cache, and either is far faster than the training step, so the cache mostly spares
CPU time that training needs (`make bench-data`; the figures: docs/RESULTS.md, "Speed").
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import tensorflow as tf

from reid_tf import config
from reid_tf.datasets import Record
# Image reading lives in reid_tf.images; load_images is re-exported for callers of pairs.load_images.
from reid_tf.images import IMAGE_SHAPE, load_images, load_uint8, read_image  # noqa: F401
PAIRS_PER_POSITIVE = 1 + config.NEGATIVES_PER_POSITIVE  # one triple: (positive, negative, negative)
_TAG_TRAIN, _TAG_EVAL = 1, 2  # numpy seed-sequence tags: epoch plans vs the evaluation plan
# Largest integer shift, in pixels, of the translated crops (Ahmed et al. 2015): ±8 rows, ±3 columns.
MAX_SHIFT = (round(config.CROP_SHIFT_FRACTION * config.INPUT_HEIGHT),
             round(config.CROP_SHIFT_FRACTION * config.INPUT_WIDTH))


# ----------------------------------------------------------------------------- pair plans
def _camera_index(records: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Record positions of camera-0 and camera-1 images, and every record's identity."""
    cameras = np.array([r.camera for r in records])
    identities = np.array([r.identity for r in records])
    return np.flatnonzero(cameras == 0), np.flatnonzero(cameras == 1), identities


def positive_pairs(records: Sequence[Record]) -> np.ndarray:
    """Every cross-camera positive: (P, 2) record indices (camera-0 image, camera-1 image), sorted."""
    cam_a, cam_b, identities = _camera_index(records)
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


def _cross_camera_identities(records: Sequence[Record]) -> dict[int, np.ndarray]:
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
    for idx in _cross_camera_identities(records).values():
        a, b = np.triu_indices(len(idx), k=1)
        cross = cameras[idx[a]] != cameras[idx[b]]
        a, b = idx[a[cross]], idx[b[cross]]  # every cross-camera pair of this identity
        pick = rng.choice(len(a), size=per_identity, replace=len(a) < per_identity)
        out.append(np.stack([a[pick], b[pick]], axis=1))
    return np.concatenate(out).astype(np.int64)


def _positive_count(records: Sequence[Record]) -> int:
    if is_multi_camera(records):
        return config.POSITIVES_PER_IDENTITY * len(_cross_camera_identities(records))
    return len(positive_pairs(records))


def epoch_size(records: Sequence[Record], crops_per_image: int, recipe: str = "cross_camera") -> int:
    """Pairs in one epoch: every positive (× crops_per_image for cross_camera, multi-camera datasets
    POSITIVES_PER_IDENTITY per identity; [31]'s copies are images of their own for paper_xcorr),
    each with its 2 negatives."""
    if recipe == "paper_xcorr":
        return PAIRS_PER_POSITIVE * len(xcorr_positive_pairs(records, xcorr_versions(crops_per_image)))
    _check_recipe(recipe)
    return PAIRS_PER_POSITIVE * _positive_count(records) * crops_per_image


def steps_per_epoch(records: Sequence[Record], batch_size: int, crops_per_image: int,
                    recipe: str = "cross_camera") -> int:
    """Whole batches per epoch (the partial last batch is dropped)."""
    return epoch_size(records, crops_per_image, recipe) // batch_size


def _check_recipe(recipe: str) -> None:
    if recipe not in config.RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(config.RECIPES)}")


# ----------------------------------------------------------------------------- [31]'s recipe
# recipe="paper_xcorr" (config.RECIPES): every record r stands for xcorr_versions(crops) images,
# "virtual" image v = r · n + version: version 0 the original, 1…crops a copy translated by a fixed
# integer (dy, dx) ∈ [−8, 8]² (0.05 × 160 on both axes, zero fill), crops + 1 its mirror image.
# [31] writes these copies to disk once; here they are made online from a stateless seed of
# (seed, v), so version k of an image is the same picture in every epoch — the same 7 images per
# original as the offline copies, without the files. Positives: every pair of an identity's
# virtual images (any cameras), each once per epoch; negatives: (its first image, a random virtual
# image of another identity) and (a random one of another identity, its second image).
def xcorr_versions(crops_per_image: int) -> int:
    """Images per original under [31]'s augmentation: itself, crops translated copies, one mirror."""
    return 1 + crops_per_image + 1


def xcorr_positive_pairs(records: Sequence[Record], versions: int) -> np.ndarray:
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


def _xcorr_triples(records: Sequence[Record], positives: np.ndarray, versions: int,
                   rng: np.random.Generator, swap: bool):
    """positives (T, 2) virtual indices -> flat (3T,) index_a, index_b, label, as _triples."""
    identities = np.repeat(np.array([r.identity for r in records]), versions)
    pool = np.arange(len(identities))
    ident = identities[positives[:, 0]]
    neg_b = _other_identity(pool, identities, ident, rng)
    neg_a = _other_identity(pool, identities, ident, rng)
    first = np.stack([positives[:, 0], positives[:, 0], neg_a], axis=1)
    second = np.stack([positives[:, 1], neg_b, positives[:, 1]], axis=1)
    if swap:
        flip = rng.random(first.shape) < 0.5
        first, second = np.where(flip, second, first), np.where(flip, first, second)
    labels = np.tile(np.array([1, 0, 0], np.int32), len(positives))
    return first.reshape(-1), second.reshape(-1), labels


def xcorr_version(image: tf.Tensor, version: tf.Tensor, seed: tf.Tensor, versions: int) -> tf.Tensor:
    """Version `version` of an image under [31]'s augmentation (section comment); seed (2,) fixes
    the translation of each copy."""
    height, width = IMAGE_SHAPE[:2]
    shift = int(config.XCORR_SHIFT_FRACTION * height)  # [31]: 0.05 × height, both axes
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


def _virtual_image(fetch, index: tf.Tensor, seed: int, versions: int) -> tf.Tensor:
    """paper_xcorr: virtual image index -> its version of its record (fetch: record -> image), the
    copy's translation seeded by (seed, index): the same picture in every epoch and pairing."""
    return xcorr_version(fetch(index // versions), index % versions,
                         tf.stack([tf.constant(seed, tf.int64), index]), versions)


def _other_identity(pool: np.ndarray, identities: np.ndarray, avoid: np.ndarray,
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
    while clash.any():  # rejection: terminates because _check demands ≥ 2 identities
        picks[clash] = rng.choice(pool, size=int(clash.sum()))
        clash = clashes(picks)
    return picks


def _triples(records: Sequence[Record], positives: np.ndarray, rng: np.random.Generator,
             swap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """positives (T, 2) -> flat pairs (3T,) index_a, index_b, label: each positive then its 2 negatives."""
    cam_a, cam_b, identities = _camera_index(records)
    cameras = np.array([r.camera for r in records])
    if is_multi_camera(records):  # negatives from any camera but the anchor's, like the positives
        cam_a = cam_b = np.arange(len(records))
    anchor_a, anchor_b = positives[:, 0], positives[:, 1]
    ident = identities[anchor_a]
    neg_b = _other_identity(cam_b, identities, ident, rng, cameras, cameras[anchor_a])
    neg_a = _other_identity(cam_a, identities, ident, rng, cameras, cameras[anchor_b])
    first = np.stack([anchor_a, anchor_a, neg_a], axis=1)  # (T, 3): positive, negative, negative
    second = np.stack([anchor_b, neg_b, anchor_b], axis=1)  # (T, 3)
    if swap:
        flip = rng.random(first.shape) < 0.5
        first, second = np.where(flip, second, first), np.where(flip, first, second)
    labels = np.tile(np.array([1, 0, 0], np.int32), len(positives))  # (3T,)
    return first.reshape(-1), second.reshape(-1), labels  # (T, 3) -> (3T,)


def _shuffled_xcorr_positives(records: Sequence[Record], crops_per_image: int, rng: np.random.Generator
                              ) -> tuple[int, np.ndarray]:
    """paper_xcorr: (versions per image, every [31] positive pair once in rng's order, (P, 2))."""
    versions = xcorr_versions(crops_per_image)
    positives = xcorr_positive_pairs(records, versions)
    return versions, positives[rng.permutation(len(positives))]


def plan_epoch(records: Sequence[Record], seed: int, epoch: int, crops_per_image: int,
               batch_size: int, recipe: str = "cross_camera") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training pairs of one epoch, truncated to whole batches.

    Returns index_a, index_b (record indices; virtual image indices for paper_xcorr) and label
    (1 = same identity), each (steps_per_epoch × batch_size,).
    """
    rng = np.random.default_rng([seed, _TAG_TRAIN, epoch])
    if recipe == "paper_xcorr":
        versions, positives = _shuffled_xcorr_positives(records, crops_per_image, rng)
        index_a, index_b, labels = _xcorr_triples(records, positives, versions, rng, swap=True)
    else:
        positives = multi_camera_positives(records, rng) if is_multi_camera(records) else positive_pairs(records)
        positives = np.repeat(positives, crops_per_image, axis=0)  # (P·crops, 2)
        positives = positives[rng.permutation(len(positives))]
        index_a, index_b, labels = _triples(records, positives, rng, swap=True)
    n = steps_per_epoch(records, batch_size, crops_per_image, recipe) * batch_size
    return index_a[:n], index_b[:n], labels[:n]


def plan_eval(records: Sequence[Record], seed: int, batch_size: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed evaluation pairs: every positive once, in sorted order, with its 2 negatives drawn from
    (seed); camera A always image_a. Truncated to whole batches; returns as plan_epoch."""
    rng = np.random.default_rng([seed, _TAG_EVAL])
    positives = multi_camera_positives(records, rng) if is_multi_camera(records) else positive_pairs(records)
    index_a, index_b, labels = _triples(records, positives, rng, swap=False)
    n = len(labels) // batch_size * batch_size
    return index_a[:n], index_b[:n], labels[:n]


# ----------------------------------------------------------------------------- image ops
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


def _to_float(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(image, tf.float32) / 255.0  # uint8 (H, W, 3) -> float32 in [0, 1]


# ----------------------------------------------------------------------------- the dataset
def _check(records: Sequence[Record], batch_size: int, seed: int, crops_per_image: int) -> None:
    if batch_size < PAIRS_PER_POSITIVE:
        raise ValueError(f"batch_size must be >= {PAIRS_PER_POSITIVE} so that every batch holds a "
                         f"positive (batches are runs of (positive, negative, negative) triples); "
                         f"got {batch_size}")
    if crops_per_image < 1 or seed < 0:
        raise ValueError(f"need crops_per_image >= 1 and seed >= 0, got {crops_per_image}, {seed}")
    if is_multi_camera(records):
        paired = len(_cross_camera_identities(records))
    else:
        positives = positive_pairs(records)
        paired = len(np.unique([records[a].identity for a in positives[:, 0]]))
    if paired < 2:
        raise ValueError("need at least 2 identities with images in two cameras to form pairs; "
                         f"got {len(records)} records")
    if epoch_size(records, crops_per_image) < batch_size:
        raise ValueError(f"an epoch of {epoch_size(records, crops_per_image)} "
                         f"pairs is smaller than one batch of {batch_size}")


def _image_source(records: Sequence[Record], cache_images: bool):
    """record index (int64 scalar) -> uint8 (160, 60, 3): from the in-memory cache or the file."""
    if cache_images:
        table = tf.constant(load_uint8([r.path for r in records]))  # (N, 160, 60, 3) uint8
        return lambda i: tf.gather(table, i)
    paths = tf.constant([r.path for r in records])
    return lambda i: read_image(tf.gather(paths, i))


def _plan_dataset(records: Sequence[Record], batch_size: int, seed: int, crops_per_image: int,
                  training: bool, first_epoch: int, num_epochs: int | None,
                  recipe: str = "cross_camera") -> tf.data.Dataset:
    """Flat stream of (index_a, index_b, label, global position) from first_epoch on."""
    steps = steps_per_epoch(records, batch_size, crops_per_image, recipe)
    if not training:
        index_a, index_b, labels = plan_eval(records, seed, batch_size)
        position = np.arange(len(labels), dtype=np.int64)
        return tf.data.Dataset.from_tensor_slices((index_a, index_b, labels, position))

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
                      training: bool = True, start_step: int = 0, num_epochs: int | None = None,
                      cache_images: bool = True, recipe: str = "cross_camera") -> tf.data.Dataset:
    """Batches of training pairs (§4.2); see the module docstring for epochs, batches and seeds.

    Args:
      records: the training Records (camera 0 = A, 1 = B).
      batch_size: pairs per batch (paper: 128, 256 for CUHK03); >= 3.
      seed: fixes the pair plans and the augmentation.
      crops_per_image: augmented repeats of every positive per epoch (config.CROPS_PER_IMAGE).
      training: False = the fixed evaluation pairs: one pass, no augmentation, no swap.
      start_step: skip the first start_step batches (exact resume).
      num_epochs: stop after this many epochs (None = repeat forever; ignored when not training).
      cache_images: decode every image once into memory (faster) instead of once per use.
      recipe: config.RECIPES; "paper_xcorr" trains on [31]'s pairs and copies (section above).
    Returns:
      Dataset of ({"image_a": (B, 160, 60, 3) float32 in [0, 1], "image_b": same}, label (B,) int32),
      label 1 = same identity; drop_remainder=True.
    """
    _check(records, batch_size, seed, crops_per_image)
    _check_recipe(recipe)
    xcorr = training and recipe == "paper_xcorr"
    first_epoch, step_in_epoch = (0, start_step) if not training else divmod(
        start_step, steps_per_epoch(records, batch_size, crops_per_image, recipe))
    plan = _plan_dataset(records, batch_size, seed, crops_per_image, training, first_epoch, num_epochs,
                         recipe if training else "cross_camera")
    plan = plan.skip(step_in_epoch * batch_size)  # resume inside the first epoch
    fetch = _image_source(records, cache_images)
    versions = xcorr_versions(crops_per_image)

    def make_pair(index_a, index_b, label, position):
        if xcorr:
            return {"image_a": _to_float(_virtual_image(fetch, index_a, seed, versions)),
                    "image_b": _to_float(_virtual_image(fetch, index_b, seed, versions))}, label
        image_a, image_b = fetch(index_a), fetch(index_b)
        if training:
            image_a = augment(image_a, tf.stack([tf.constant(seed, tf.int64), 2 * position]))
            image_b = augment(image_b, tf.stack([tf.constant(seed, tf.int64), 2 * position + 1]))
        return {"image_a": _to_float(image_a), "image_b": _to_float(image_b)}, label

    # Order matters for exact resume: plan → skip → map (deterministic) → batch → prefetch.
    pairs = plan.map(make_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return pairs.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- shared images
# A training mode in which a batch is a set of images, each encoded once, and its pairs are formed
# among them (`--pairing=shared`; DESIGN "Training on shared images"). The per-pair batches above
# run every image through the encoder once per pair it is in: three encodings per positive.
#
# A batch holds V identity *visits*. A visit is one identity with K camera-A and K camera-B images
# (K = images_per_camera(records)): its K² cross-camera positives, and for each positive its two
# negatives, (its camera-A image, a camera-B image of another identity's visit in the batch) and
# (a camera-A image of another identity's visit, its camera-B image) — cross-camera like every pair
# above. So 2K images give 3K² pairs: 12 pairs from 4 images for K = 2, against 12 pairs from 24
# encodings per pair. V = round(batch_size / 3K²) (11 for 128 with K = 2, i.e. 132 pairs).
#
# An epoch visits every identity crops_per_image times over every chunk combination of its images:
# its camera-A images (shuffled) are cut into ⌈n_A / K⌉ chunks of K (the last one completed from the
# start of the list), likewise camera B, and one visit per (A chunk, B chunk): every cross-camera
# positive at least crops_per_image times, each visit with fresh augmentation of each image. For
# CUHK01 (2 + 2 images, K = 2) that is exactly every positive crops_per_image times, as per pair.
# The visits are shuffled; a batch whose visits are all one identity (possible only at the junction
# of repeats) swaps its last visit with the next visit of another identity.
#
# [31]'s recipe (recipe="paper_xcorr") on shared images: a visit is one of its positives, two
# virtual images of one identity (any cameras) in random order, as a K = 1 visit whose first image
# stands where camera A does above. Every positive comes once per epoch, as per pair; the negatives
# pair each of its images with an image of another identity's visit in the batch (either side of
# it: the sides are random), i.e. a random virtual image of another identity, drawn from the batch
# instead of the whole set. The images are [31]'s versions (xcorr_version, seeded by (seed, virtual
# index) exactly as per pair), with no further augmentation. K > 1 has no exact counterpart: an
# identity's C(n, 2) pairs cannot be cut into equal K × K blocks (the pairs inside a block's side
# are left over), so this recipe shares with K = 1 only (train.py refuses more).
#
# Determinism and resume as above: the plan of epoch e comes from default_rng([seed, 3, e]); the
# augmentation of image slot g (global position step × N + i) uses the stateless seed (seed, g).
_TAG_SHARED = 3


def images_per_camera(records: Sequence[Record], most: int = config.SHARED_IMAGES_PER_CAMERA) -> int:
    """K: images per camera per visit, the most every identity with positives can give (≤ most)."""
    cam_a, cam_b, identities = _camera_index(records)
    both = np.intersect1d(identities[cam_a], identities[cam_b])
    if not len(both):
        return 1
    count_a = np.unique(identities[cam_a], return_counts=True)
    count_b = np.unique(identities[cam_b], return_counts=True)
    fewest = min(count_a[1][np.isin(count_a[0], both)].min(), count_b[1][np.isin(count_b[0], both)].min())
    return int(max(1, min(most, fewest)))


def visits_per_batch(batch_size: int, k: int) -> int:
    """V: visits per shared batch, so that its 3·V·K² pairs come closest to batch_size (at least 2)."""
    return max(2, int(round(batch_size / (PAIRS_PER_POSITIVE * k * k))))


def _identity_images(records: Sequence[Record]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(identity, camera-A record indices, camera-B record indices) of identities in both cameras."""
    cam_a, cam_b, identities = _camera_index(records)
    out = []
    for ident in np.intersect1d(identities[cam_a], identities[cam_b]):
        out.append((int(ident), cam_a[identities[cam_a] == ident], cam_b[identities[cam_b] == ident]))
    return out


def _chunks(indices: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Shuffled indices cut into chunks of k, the last completed from the start: (⌈n/k⌉, k)."""
    order = indices[rng.permutation(len(indices))]
    n = -(-len(order) // k) * k
    return np.resize(order, n).reshape(-1, k)


def _epoch_visits(records: Sequence[Record], k: int, crops_per_image: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Every visit of one epoch, shuffled: identities (n,), images (n, 2k) [A…, B…] record indices."""
    idents, images = [], []
    for ident, cam_a, cam_b in _identity_images(records):
        for _ in range(crops_per_image):
            chunks_a, chunks_b = _chunks(cam_a, k, rng), _chunks(cam_b, k, rng)
            for ca in chunks_a:
                for cb in chunks_b:
                    idents.append(ident)
                    images.append(np.concatenate([ca, cb]))
    order = rng.permutation(len(idents))
    return np.asarray(idents, np.int64)[order], np.asarray(images, np.int64).reshape(len(idents), 2 * k)[order]


def _xcorr_visits(records: Sequence[Record], crops_per_image: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """paper_xcorr: every [31] positive once, shuffled, each in a random order: identities (P,),
    images (P, 2) virtual image indices."""
    versions, positives = _shuffled_xcorr_positives(records, crops_per_image, rng)
    positives = np.where((rng.random(len(positives)) < 0.5)[:, None], positives[:, ::-1], positives)
    identities = np.array([r.identity for r in records], np.int64)[positives[:, 0] // versions]
    return identities, positives


def _shared_k(records: Sequence[Record], most: int, recipe: str) -> int:
    """K of a shared batch: 1 for paper_xcorr (section comment), else images_per_camera."""
    _check_recipe(recipe)
    return 1 if recipe == "paper_xcorr" else images_per_camera(records, most)


def shared_steps_per_epoch(records: Sequence[Record], batch_size: int, crops_per_image: int,
                           most: int = config.SHARED_IMAGES_PER_CAMERA, recipe: str = "cross_camera") -> int:
    """Whole shared batches per epoch (the partial last batch is dropped); `most` bounds K."""
    k = _shared_k(records, most, recipe)
    if recipe == "paper_xcorr":
        visits = len(xcorr_positive_pairs(records, xcorr_versions(crops_per_image)))
    else:
        visits = sum(crops_per_image * -(-len(a) // k) * -(-len(b) // k) for _, a, b in _identity_images(records))
    return visits // visits_per_batch(batch_size, k)


def shared_batch_shape(records: Sequence[Record], batch_size: int,
                       most: int = config.SHARED_IMAGES_PER_CAMERA, recipe: str = "cross_camera"
                       ) -> tuple[int, int]:
    """(images, pairs) of every shared batch: (2·K·V, 3·K²·V)."""
    k = _shared_k(records, most, recipe)
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
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    if swap:
        flip = rng.random(first.shape) < 0.5
        first, second = np.where(flip, second, first), np.where(flip, first, second)
    labels = np.tile(np.array([1, 0, 0], np.int32), len(first))
    return first.reshape(-1), second.reshape(-1), labels


def plan_shared_epoch(records: Sequence[Record], seed: int, epoch: int, crops_per_image: int,
                      batch_size: int, most: int = config.SHARED_IMAGES_PER_CAMERA,
                      recipe: str = "cross_camera") -> tuple[np.ndarray, ...]:
    """The shared batches of one epoch: image records (S, N) (virtual image indices for
    paper_xcorr), pair index_a, index_b (S, M) into the batch's images, labels (S, M), for
    S = shared_steps_per_epoch batches."""
    rng = np.random.default_rng([seed, _TAG_SHARED, epoch])
    k = _shared_k(records, most, recipe)
    v = visits_per_batch(batch_size, k)
    if recipe == "paper_xcorr":
        idents, images = _xcorr_visits(records, crops_per_image, rng)
    else:
        idents, images = _epoch_visits(records, k, crops_per_image, rng)
    _separate_identities(idents, images, v)
    steps = len(idents) // v
    pairs = [batch_pairs(idents[s * v:(s + 1) * v], k, rng, swap=True) for s in range(steps)]
    return (images[:steps * v].reshape(steps, 2 * k * v),
            *(np.stack([p[i] for p in pairs]) for i in range(3)))


def make_shared_dataset(records: Sequence[Record], batch_size: int, seed: int, crops_per_image: int,
                        start_step: int = 0, num_epochs: int | None = None,
                        cache_images: bool = True, most: int = config.SHARED_IMAGES_PER_CAMERA,
                        recipe: str = "cross_camera") -> tf.data.Dataset:
    """Shared-image training batches; see the section comment above (`most` bounds K; recipe
    config.RECIPES, paper_xcorr with K = 1).

    Returns:
      Dataset of ({"images": (N, 160, 60, 3) float32 in [0, 1], "index_a": (M,) int64, "index_b":
      (M,) int64}, label (M,) int32): the batch's pairs are (images[index_a[i]], images[index_b[i]]).
    """
    _check(records, PAIRS_PER_POSITIVE, seed, crops_per_image)
    steps = shared_steps_per_epoch(records, batch_size, crops_per_image, most, recipe)
    if steps < 1:
        raise ValueError(f"an epoch of shared batches is shorter than one batch of {batch_size} pairs")
    n, m = shared_batch_shape(records, batch_size, most, recipe)
    first_epoch, step_in_epoch = divmod(start_step, steps)
    fetch = _image_source(records, cache_images)
    versions = xcorr_versions(crops_per_image)

    def image(index, position):  # one slot of the batch: a record augmented, or a [31] version
        if recipe == "paper_xcorr":
            return _virtual_image(fetch, index, seed, versions)
        return augment(fetch(index), tf.stack([tf.constant(seed, tf.int64), position]))

    def epoch_dataset(epoch: tf.Tensor) -> tf.data.Dataset:
        plan = tf.numpy_function(
            lambda e: plan_shared_epoch(records, seed, int(e), crops_per_image, batch_size, most, recipe),
            [epoch], (tf.int64, tf.int64, tf.int64, tf.int32))
        for column, width in zip(plan, (n, m, m, m)):
            column.set_shape([steps, width])
        first_step = epoch * steps
        return tf.data.Dataset.from_tensor_slices((*plan, first_step + tf.range(steps, dtype=tf.int64)))

    def make_batch(image_records, index_a, index_b, labels, step):
        positions = step * n + tf.range(n, dtype=tf.int64)  # global image slots: augmentation seeds
        images = tf.map_fn(lambda rp: _to_float(image(rp[0], rp[1])), (image_records, positions),
                           fn_output_signature=tf.TensorSpec(IMAGE_SHAPE, tf.float32))
        return {"images": images, "index_a": index_a, "index_b": index_b}, labels

    last_epoch = sys.maxsize if num_epochs is None else num_epochs
    plan = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(epoch_dataset).skip(step_in_epoch)
    batches = plan.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE)
