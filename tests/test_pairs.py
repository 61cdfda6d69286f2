"""reid_tf.pairs: pair plans (§4.2 1 : 2 sampling), augmentation, determinism and exact resume."""
from __future__ import annotations


import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_tools.make_synthetic import make_synthetic
from reid_tf import config, pairs
from reid_tf.datasets import manifest_records, read_manifest

CROPS = 5
H, W = config.INPUT_HEIGHT, config.INPUT_WIDTH


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """12 identities × 2 cameras × 2 images: 48 positives, 720 pairs per epoch with 5 crops."""
    root = make_synthetic(str(tmp_path_factory.mktemp("synth") / "d"), identities=12, seed=0)
    return manifest_records(root, read_manifest(root))


def _batches(dataset, n=None):
    """The first n batches as numpy: list of (image_a, image_b, label)."""
    it = dataset if n is None else dataset.take(n)
    return [(x["image_a"].numpy(), x["image_b"].numpy(), y.numpy()) for x, y in it]


def _same(batches_1, batches_2) -> bool:
    return len(batches_1) == len(batches_2) and all(
        all(np.array_equal(u, v) for u, v in zip(b1, b2)) for b1, b2 in zip(batches_1, batches_2))


# ----------------------------------------------------------------------------- plans
def test_positive_pairs_and_epoch_size(records):
    positives = pairs.positive_pairs(records)
    assert positives.shape == (12 * 2 * 2, 2)  # per identity 2 camera-A × 2 camera-B images
    for a, b in positives:
        assert records[a].identity == records[b].identity
        assert (records[a].camera, records[b].camera) == (0, 1)
    assert pairs.epoch_size(records, CROPS) == 3 * 48 * CROPS
    assert pairs.steps_per_epoch(records, 128, CROPS) == 720 // 128


def test_plan_pairs_are_what_they_claim(records):
    index_a, index_b, labels = pairs.plan_epoch(records, seed=0, epoch=0, crops_per_image=CROPS,
                                                batch_size=3)
    identity = np.array([r.identity for r in records])
    camera = np.array([r.camera for r in records])
    assert len(labels) == 720 and list(labels[:6]) == [1, 0, 0, 1, 0, 0]
    pos, neg = labels == 1, labels == 0
    assert np.all(identity[index_a[pos]] == identity[index_b[pos]])
    assert np.all(identity[index_a[neg]] != identity[index_b[neg]])
    assert np.all(camera[index_a] != camera[index_b])  # every pair is cross-camera
    assert 0.4 < np.mean(camera[index_a] == 1) < 0.6  # the two slots are swapped half of the time
    # Every positive appears crops_per_image times per epoch, in either order.
    seen = {tuple(sorted(p)) for p in zip(index_a[pos], index_b[pos])}
    counts = np.unique([tuple(sorted(p)) for p in zip(index_a[pos], index_b[pos])], axis=0,
                       return_counts=True)[1]
    assert len(seen) == 48 and np.all(counts == CROPS)
    # Each triple's negatives reuse its positive's images (one each).
    triples = np.stack([index_a, index_b], 1).reshape(-1, 3, 2)  # (240, 3 pairs, 2 slots)
    for triple in triples[:50]:
        assert set(triple[0]) & set(triple[1]) and set(triple[0]) & set(triple[2])


def test_plans_differ_by_epoch_and_seed(records):
    plan = lambda seed, epoch: pairs.plan_epoch(records, seed, epoch, CROPS, 3)[0]
    assert np.array_equal(plan(0, 0), plan(0, 0))
    assert not np.array_equal(plan(0, 0), plan(0, 1))
    assert not np.array_equal(plan(0, 0), plan(1, 0))


@pytest.mark.parametrize("batch_size", [48, 128])
def test_one_positive_to_two_negatives_in_drawn_batches(records, batch_size):
    """B multiple of 3: exactly B/3 positives per batch; B = 128: 42 or 43, and 128 per 3 batches."""
    dataset = pairs.make_pair_dataset(records, batch_size, seed=0, crops_per_image=CROPS,
                                      num_epochs=1)
    positives = np.array([int(y.numpy().sum()) for _, y in dataset])
    assert len(positives) == pairs.steps_per_epoch(records, batch_size, CROPS)
    if batch_size % 3 == 0:
        assert np.all(positives == batch_size // 3)
    else:
        assert set(positives) <= {batch_size // 3, batch_size // 3 + 1}
        windows = positives[: len(positives) // 3 * 3].reshape(-1, 3).sum(1)  # (n/3,)
        assert np.all(windows == batch_size)


# ----------------------------------------------------------------------------- augmentation
def _marker_image() -> np.ndarray:
    """Black (160, 60, 3) with a red pixel at (80, 30) and a green one at (80, 32)."""
    image = np.zeros((H, W, 3), np.float32)
    image[80, 30, 0] = 1.0
    image[80, 32, 1] = 1.0
    return image


def _shift_and_flip(out: np.ndarray) -> tuple[int, int, bool]:
    red, green = np.argwhere(out[..., 0] == 1.0), np.argwhere(out[..., 1] == 1.0)
    assert len(red) == len(green) == 1
    (ry, rx), (_, gx) = red[0], green[0]
    flipped = gx < rx
    return int(ry - 80), int((W - 1 - rx if flipped else rx) - 30), bool(flipped)


def test_augment_shift_bounds_and_flip_rate():
    image = tf.constant(_marker_image())
    draws = [_shift_and_flip(pairs.augment(image, tf.constant([7, s], tf.int64)).numpy())
             for s in range(300)]
    dy, dx, flips = map(np.array, zip(*draws))
    assert np.abs(dy).max() <= config.CROP_SHIFT_FRACTION * H  # ±8 rows
    assert np.abs(dx).max() <= config.CROP_SHIFT_FRACTION * W  # ±3 columns
    assert set(dy) == set(range(-8, 9)) and set(dx) == set(range(-3, 4))  # the whole range is used
    assert 0.4 < flips.mean() < 0.6


def test_augment_replicates_edges():
    """out[y, x] = image[clip(y − dy), clip(x − dx)] (before the flip)."""
    rows = np.broadcast_to(np.arange(H, dtype=np.float32)[:, None, None], (H, W, 3))
    cols = np.broadcast_to(np.arange(W, dtype=np.float32)[None, :, None], (H, W, 3))
    image = tf.constant(np.concatenate([rows[..., :1], cols[..., :1], np.zeros((H, W, 1), np.float32)], -1))
    for s in range(20):
        out = pairs.augment(image, tf.constant([1, s], tf.int64)).numpy()
        dy = int(out[H // 2, 0, 0] - H // 2) * -1
        assert np.array_equal(out[:, 0, 0], np.clip(np.arange(H) - dy, 0, H - 1))
        col = out[0, :, 1]
        if col[0] > col[-1]:
            col = col[::-1]  # flipped
        dx = -int(col[W // 2] - W // 2)
        assert np.array_equal(col, np.clip(np.arange(W) - dx, 0, W - 1))


def test_augment_same_eagerly_in_tf_function_and_in_dataset_map():
    image = tf.constant(np.random.default_rng(0).random((H, W, 3), np.float32))
    seeds = tf.constant([[3, s] for s in range(8)], tf.int64)
    eager = [pairs.augment(image, s).numpy() for s in seeds]
    graph = [tf.function(pairs.augment)(image, s).numpy() for s in seeds]
    mapped = [x.numpy() for x in tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: pairs.augment(image, s))]
    assert _same([eager], [graph]) and _same([eager], [mapped])
    assert pairs.augment(tf.cast(image * 255, tf.uint8), seeds[0]).dtype == tf.uint8


# ----------------------------------------------------------------------------- the dataset
def test_shapes_dtypes_and_range(records):
    (inputs, labels), = pairs.make_pair_dataset(records, 12, seed=0, crops_per_image=CROPS).take(1)
    assert set(inputs) == {"image_a", "image_b"}
    for image in inputs.values():
        assert image.shape == (12, H, W, 3) and image.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0
    assert labels.shape == (12,) and labels.dtype == tf.int32


def test_batches_are_the_plan_augmented(records):
    """The pipeline delivers plan_epoch's pairs with augment keyed by (seed, 2g) / (seed, 2g + 1)."""
    batch_size, seed, step = 12, 5, 62  # step 62 = epoch 1 (60 steps per epoch), batch 2
    (inputs, labels), = pairs.make_pair_dataset(records, batch_size, seed, CROPS, start_step=step).take(1)
    index_a, index_b, plan_labels = pairs.plan_epoch(records, seed, 1, CROPS, batch_size)
    window = slice(2 * batch_size, 3 * batch_size)
    images = pairs.load_images([r.path for r in records])
    assert np.array_equal(labels.numpy(), plan_labels[window])
    for i, (a, b) in enumerate(zip(index_a[window], index_b[window])):
        g = step * batch_size + i
        for index, slot, key in ((a, "image_a", 2 * g), (b, "image_b", 2 * g + 1)):
            expected = pairs.augment(tf.constant(images[index]), tf.constant([seed, key], tf.int64))
            np.testing.assert_allclose(inputs[slot][i].numpy(), expected.numpy(), atol=1e-6)


def test_deterministic_and_seed_dependent(records):
    build = lambda seed: pairs.make_pair_dataset(records, 12, seed=seed, crops_per_image=CROPS)
    assert _same(_batches(build(0), 3), _batches(build(0), 3))
    assert not _same(_batches(build(0), 1), _batches(build(1), 1))


def test_resume_from_any_step_gives_the_same_batches(records):
    """30 steps per epoch at batch 24: resuming at 28 crosses into epoch 1 within the window."""
    build = lambda start: pairs.make_pair_dataset(records, 24, seed=0, crops_per_image=CROPS,
                                                  start_step=start, num_epochs=2)
    full = _batches(build(0))
    assert len(full) == 2 * 30
    for start in (1, 28, 30, 59):
        assert _same(_batches(build(start)), full[start:])


def test_cached_and_decoding_pipelines_agree(records):
    build = lambda cache: pairs.make_pair_dataset(records, 12, seed=0, crops_per_image=CROPS,
                                                  cache_images=cache)
    assert _same(_batches(build(True), 2), _batches(build(False), 2))


def test_invalid_arguments(records):
    with pytest.raises(ValueError, match="batch_size"):
        pairs.make_pair_dataset(records, 2, seed=0, crops_per_image=CROPS)
    with pytest.raises(ValueError, match="2 identities"):
        pairs.make_pair_dataset([r for r in records if r.identity == 0], 3, 0, CROPS)
    with pytest.raises(ValueError, match="smaller than one batch"):
        pairs.make_pair_dataset(records, 1024, seed=0, crops_per_image=1)


def test_load_images_decodes_png_and_bmp_and_resizes(tmp_path):
    """VIPeR-like 128 × 48 BMP and the same pixels as PNG -> identical (160, 60, 3) float32 in [0, 1]."""
    pixels = np.random.default_rng(0).integers(0, 256, (128, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.bmp")
    Image.fromarray(pixels).save(tmp_path / "x.png")
    native = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(native).save(tmp_path / "n.png")
    out = pairs.load_images([str(tmp_path / n) for n in ("x.bmp", "x.png", "n.png")])
    assert out.shape == (3, H, W, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.array_equal(out[0], out[1])
    assert np.array_equal(out[2], native / np.float32(255))  # right size: pixels untouched
