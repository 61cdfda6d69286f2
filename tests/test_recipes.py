"""The two readings of §4.2's pairs: cross_camera (ours) and shifted_copies ([31]'s code)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_tools.make_synthetic import make_synthetic
from reid_tf import config, pairs
from reid_tf.datasets import manifest_records, read_manifest

CROPS = 5


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """6 identities × 2 cameras × 2 images (the CUHK01 layout)."""
    root = make_synthetic(str(tmp_path_factory.mktemp("synth") / "d"), identities=6, seed=0)
    return manifest_records(root, read_manifest(root))


def test_shifted_copies_epoch_is_all_pairs_of_an_identitys_images_and_copies(records):
    versions = pairs.copy_versions(CROPS)
    assert versions == 7  # the original, 5 translated copies, 1 flipped copy ([31], CUHK01: 4 → 28 images)
    n_ids = len({r.identity for r in records})
    per_identity = 28 * 27 // 2  # C(28, 2) = 378
    assert len(pairs.copies_positive_pairs(records, versions)) == n_ids * per_identity
    assert pairs.epoch_size(records, CROPS, "shifted_copies") == 3 * n_ids * per_identity
    assert 871 * per_identity * 3 == 987_714  # CUHK01's 871 training identities: ≈ 988 k pairs an epoch
    assert pairs.epoch_size(records, CROPS) == 3 * n_ids * 4 * CROPS  # cross_camera: 4 positives × crops

    batch = 9
    index_a, index_b, labels = pairs.plan_epoch(records, 0, 0, CROPS, batch, recipe="shifted_copies")
    assert len(labels) == pairs.steps_per_epoch(records, batch, CROPS, "shifted_copies") * batch
    identity = np.repeat([r.identity for r in records], versions)
    camera = np.repeat([r.camera for r in records], versions)
    pos = labels == 1
    assert np.all(identity[index_a[pos]] == identity[index_b[pos]])
    assert np.all(identity[index_a[~pos]] != identity[index_b[~pos]])
    assert np.any(camera[index_a[pos]] == camera[index_b[pos]])  # same-camera positives too
    assert np.any(index_a[pos] // versions == index_b[pos] // versions)  # an image with its own copy
    seen = np.unique(np.sort(np.stack([index_a[pos], index_b[pos]], 1), axis=1), axis=0, return_counts=True)[1]
    assert np.all(seen == 1)  # every positive at most once an epoch (all but the dropped tail)
    assert pos.sum() >= len(pairs.copies_positive_pairs(records, versions)) - batch


def _translated(image, dy, dx):
    """out[y, x] = image[y − dy, x − dx], zero outside (a plain reference)."""
    out = np.zeros_like(image)
    h, w = image.shape[:2]
    for y in range(h):
        for x in range(w):
            if 0 <= y - dy < h and 0 <= x - dx < w:
                out[y, x] = image[y - dy, x - dx]
    return out


def _shift_of(copy, image):
    """(dy, dx) of a translated copy of `image`, whose pixels encode their own (row + 1, column + 1)."""
    inside = copy[..., 2] != 0  # the zero fill has 0 in every channel, the image never does
    dy = {int(v) for v in (np.arange(1, copy.shape[0] + 1)[:, None] - copy[..., 0].astype(int))[inside]}
    dx = {int(v) for v in (np.arange(1, copy.shape[1] + 1)[None, :] - copy[..., 1].astype(int))[inside]}
    assert len(dy) == len(dx) == 1  # one translation for the whole copy
    return dy.pop(), dx.pop()


def test_shifted_copies_versions_are_the_original_fixed_translations_and_a_mirror():
    """[31]'s versions: the original; 5 copies translated by (dy, dx) drawn uniformly from the
    integers in [−0.05·160, 0.05·160] = [−8, 8] on both axes, zero where the image moved out; a
    mirror. Each copy's (dy, dx) is read off an image whose pixels encode their own position."""
    h, w, versions = config.INPUT_HEIGHT, config.INPUT_WIDTH, 7
    rows, cols = np.meshgrid(np.arange(1, h + 1), np.arange(1, w + 1), indexing="ij")
    image = np.stack([rows, cols, np.full_like(rows, 7)], -1).astype(np.uint8)  # (y + 1, x + 1, 7)
    shift = int(config.COPY_SHIFT_FRACTION * h)
    assert shift == 8

    def version(v, key):
        return pairs.copy_version(tf.constant(image), tf.constant(v, tf.int64), tf.constant([3, key], tf.int64),
                                   versions).numpy()

    made = [version(v, 100 + v) for v in range(versions)]
    np.testing.assert_array_equal(made[0], image)
    np.testing.assert_array_equal(made[-1], image[:, ::-1])
    for v, copy in enumerate(made[1:-1], start=1):
        u = tf.random.stateless_uniform([2], seed=tf.constant([3, 100 + v], tf.int64)).numpy()
        want = tuple(int(np.floor(x * (2 * shift + 1))) - shift for x in u)  # its seed's uniform draw
        assert _shift_of(copy, image) == want, v
        np.testing.assert_array_equal(copy, _translated(image, *want))  # the rest is zero
    np.testing.assert_array_equal(version(2, 102), made[2])  # a copy is the same picture every time
    # over many seeds: every integer shift in [−8, 8] on each axis, none beyond, about uniformly
    shifts = np.array([_shift_of(version(1 + k % 5, 1000 + k), image) for k in range(340)])
    for axis in (0, 1):
        values, counts = np.unique(shifts[:, axis], return_counts=True)
        assert values.tolist() == list(range(-shift, shift + 1)), axis
        assert counts.min() >= 5, axis  # 20 expected of each


def test_shifted_copies_batches_resume_exactly(records):
    full = [(x["image_a"].numpy(), y.numpy()) for x, y in
            pairs.make_pair_dataset(records, 9, 1, CROPS, recipe="shifted_copies", num_epochs=1).take(6)]
    resumed = [(x["image_a"].numpy(), y.numpy()) for x, y in
               pairs.make_pair_dataset(records, 9, 1, CROPS, recipe="shifted_copies", start_step=4, num_epochs=1).take(2)]
    for (a, la), (b, lb) in zip(resumed, full[4:]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def test_unknown_recipe_is_refused(records):
    with pytest.raises(ValueError, match="unknown recipe.*cross_camera"):
        pairs.epoch_size(records, CROPS, "nope")
    for make in (pairs.make_pair_dataset, pairs.make_shared_dataset):
        with pytest.raises(ValueError, match="unknown recipe 'nope'"):
            make(records, 9, 0, CROPS, recipe="nope")


def test_every_recipe_name_has_its_object():
    """--recipe's choices (config.RECIPES) are exactly the recipes reid_tf.pairs knows, by name."""
    assert tuple(pairs.RECIPES) == config.RECIPES
    assert all(pairs.get_recipe(name).name == name for name in config.RECIPES)


def test_shifted_copies_on_shared_images_is_every_positive_once_with_batch_negatives(records):
    """--pairing=shared --recipe=shifted_copies: visits of one [31] positive (K = 1), every positive of
    the epoch once (all but the dropped tail of < V), negatives another identity of the batch."""
    versions, batch = pairs.copy_versions(CROPS), 9
    v = pairs.visits_per_batch(batch, 1)
    assert pairs.shared_batch_shape(records, 128, 2, "shifted_copies") == (86, 129)  # K = 1 whatever `most`
    image_ids, index_a, index_b, labels = pairs.plan_shared_epoch(records, 0, 0, CROPS, batch, 2, "shifted_copies")
    steps = pairs.shared_steps_per_epoch(records, batch, CROPS, 2, "shifted_copies")
    everything = pairs.copies_positive_pairs(records, versions)
    assert steps == len(everything) // v and image_ids.shape == (steps, 2 * v) and labels.shape == (steps, 3 * v)
    identity = np.repeat([r.identity for r in records], versions)
    camera = np.repeat([r.camera for r in records], versions)
    first = np.take_along_axis(image_ids, index_a, 1)  # (steps, 3V) virtual indices
    second = np.take_along_axis(image_ids, index_b, 1)
    pos = labels == 1
    assert np.all(identity[first[pos]] == identity[second[pos]])
    assert np.all(identity[first[~pos]] != identity[second[~pos]])
    assert np.any(camera[first[pos]] == camera[second[pos]])  # same-camera positives, as [31]
    assert np.any(first[pos] // versions == second[pos] // versions)  # an image with its own copy
    got = np.sort(np.stack([first[pos], second[pos]], 1), axis=1)
    seen = {tuple(p) for p in got}
    assert len(seen) == len(got) == steps * v  # each at most once
    assert seen <= {tuple(p) for p in everything} and len(everything) - len(seen) < v
    # every negative holds one of its positive's two images, its partner another visit's image
    for s in range(steps):
        for t in range(v):
            ids = set(image_ids[s, 2 * t:2 * t + 2])
            for j in (1, 2):
                pair = {first[s, 3 * t + j], second[s, 3 * t + j]}
                assert len(pair & ids) == 1
    # the positive's order is random: its lower virtual index comes first about half the time
    lower_first = np.mean(first[pos] < second[pos])
    assert 0.3 < lower_first < 0.7


def test_shifted_copies_shared_images_are_its_versions_and_resume_exactly(records):
    versions = pairs.copy_versions(CROPS)
    full = [(x["images"].numpy(), x["index_a"].numpy(), y.numpy()) for x, y in
            pairs.make_shared_dataset(records, 9, 1, CROPS, recipe="shifted_copies", num_epochs=1).take(5)]
    resumed = [(x["images"].numpy(), x["index_a"].numpy(), y.numpy()) for x, y in
               pairs.make_shared_dataset(records, 9, 1, CROPS, start_step=3, recipe="shifted_copies",
                                         num_epochs=1).take(2)]
    for got, want in zip(resumed, full[3:]):
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    # batch 0's images are [31]'s versions, the same pictures as per pair's (seed, virtual index)
    image_ids = pairs.plan_shared_epoch(records, 1, 0, CROPS, 9, recipe="shifted_copies")[0][0]
    originals = pairs.load_uint8([r.path for r in records])
    for slot, index in enumerate(image_ids):
        want = pairs.copy_version(tf.constant(originals[index // versions]), tf.constant(index % versions),
                                   tf.constant([1, index], tf.int64), versions).numpy() / 255.0
        np.testing.assert_allclose(full[0][0][slot], want, atol=1e-7)
