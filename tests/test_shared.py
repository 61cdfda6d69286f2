"""Training on shared images (reid_tf.pairs shared plan, PairTrainer's shared inputs): the plan's
pairs are what they claim, resume is exact, and a shared step equals the per-pair model on the same
explicit list of pairs."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_tools.make_synthetic import make_synthetic
from reid_tf import callbacks, checkpoints, config, pairs, run_folder
from reid_tf.datasets import Record, manifest_records, read_manifest
from reid_tf.model import build_model
from reid_tf.pair_trainer import PairTrainer, make_optimizer

CROPS = 2


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """12 identities × 2 cameras × 2 images (the CUHK01 layout): K = 2."""
    root = make_synthetic(str(tmp_path_factory.mktemp("synth") / "d"), identities=12, seed=0)
    return manifest_records(root, read_manifest(root))


def _uneven_records() -> list[Record]:
    """Identity 0: 3 A + 1 B images; 1: 1 A + 2 B; 2: 2 + 2; 3: A only (no positive)."""
    layout = {0: (3, 1), 1: (1, 2), 2: (2, 2), 3: (1, 0)}
    return [Record(f"{i}_{c}_{n}.png", i, c) for i, (na, nb) in layout.items()
            for c, count in ((0, na), (1, nb)) for n in range(count)]


def test_shared_plan_pairs_are_what_they_claim(records):
    """K = 2 (the most CUHK01 allows; the default is 1, tested below)."""
    assert config.SHARED_IMAGES_PER_CAMERA == 1 and pairs.images_per_camera(records) == 1
    k = pairs.images_per_camera(records, most=2)
    v = pairs.visits_per_batch(128, k)
    assert (k, v) == (2, 11) and pairs.shared_batch_shape(records, 128, most=2) == (44, 132)
    image_records, index_a, index_b, labels = pairs.plan_shared_epoch(records, 0, 0, CROPS, 18, most=2)
    identity = np.array([r.identity for r in records])
    camera = np.array([r.camera for r in records])
    steps = pairs.shared_steps_per_epoch(records, 18, CROPS, most=2)
    v = pairs.visits_per_batch(18, k)  # 18 / 12 → 2 visits, 24 pairs of 8 images
    assert image_records.shape == (steps, 8) and labels.shape == (steps, 24) and steps == 12 * CROPS // v
    positives = []
    for s in range(steps):
        rec_a, rec_b = image_records[s][index_a[s]], image_records[s][index_b[s]]
        assert list(labels[s][:6]) == [1, 0, 0, 1, 0, 0] and labels[s].mean() == pytest.approx(1 / 3)
        pos = labels[s] == 1
        assert np.all(identity[rec_a[pos]] == identity[rec_b[pos]])
        assert np.all(identity[rec_a[~pos]] != identity[rec_b[~pos]])
        assert np.all(camera[rec_a] != camera[rec_b])  # every pair cross-camera, as per pair
        # each positive's negatives reuse one of its own images (the batch's images are shared)
        trip_a, trip_b = index_a[s].reshape(-1, 3), index_b[s].reshape(-1, 3)
        for ta, tb in zip(trip_a, trip_b):
            pos_images = {ta[0], tb[0]}
            assert pos_images & {ta[1], tb[1]} and pos_images & {ta[2], tb[2]}
        positives += [tuple(sorted(p)) for p in zip(rec_a[pos], rec_b[pos])]
    # CUHK01 layout: every cross-camera positive exactly CROPS times per epoch.
    _, counts = np.unique(positives, axis=0, return_counts=True)
    assert len(counts) == len(pairs.positive_pairs(records)) and np.all(counts == CROPS)
    # the two slots are swapped about half of the time
    assert 0.35 < np.mean(camera[image_records[np.arange(steps)[:, None], index_a]] == 1) < 0.65


def test_one_image_per_camera_gives_more_identities_a_batch(records):
    """K = 1 (the default): V = round(128 / 3) = 43 visits of 2 images, 129 pairs; every positive
    still CROPS times."""
    assert pairs.shared_batch_shape(records, 128) == (86, 129)
    image_records, index_a, index_b, labels = pairs.plan_shared_epoch(records, 0, 0, CROPS, 9)
    assert image_records.shape[1] == 6 and labels.shape[1] == 9
    pos = labels == 1
    got = [tuple(sorted(p)) for s in range(len(labels))
           for p in zip(image_records[s][index_a[s]][pos[s]], image_records[s][index_b[s]][pos[s]])]
    _, counts = np.unique(got, axis=0, return_counts=True)
    assert len(counts) == len(pairs.positive_pairs(records)) and np.all(counts == CROPS)


def test_shared_plan_covers_uneven_identities():
    """Every positive at least crops times when identities hold different numbers of images."""
    records = _uneven_records()
    assert pairs.images_per_camera(records) == 1  # identity 0 has one B image: K = 1
    image_records, index_a, index_b, labels = pairs.plan_shared_epoch(records, 3, 1, CROPS, 6)
    got = []
    for s in range(len(labels)):
        pos = labels[s] == 1
        got += [tuple(sorted(p)) for p in zip(image_records[s][index_a[s]][pos], image_records[s][index_b[s]][pos])]
    want = {tuple(sorted(p)) for p in pairs.positive_pairs(records)}
    # visits: identity 0 3 × 1 chunk combinations, 1: 1 × 2, 2: 2 × 2, each CROPS times; 2 a batch
    assert len(labels) * pairs.visits_per_batch(6, 1) == CROPS * (3 * 1 + 1 * 2 + 2 * 2)
    assert set(got) == want and all(got.count(p) >= CROPS for p in want)


def test_shared_batches_resume_exactly(records):
    full = [(x["images"].numpy(), x["index_a"].numpy(), y.numpy())
            for x, y in pairs.make_shared_dataset(records, 18, 5, CROPS, num_epochs=2)]
    assert len(full) == 2 * pairs.shared_steps_per_epoch(records, 18, CROPS)
    resumed = [(x["images"].numpy(), x["index_a"].numpy(), y.numpy())
               for x, y in pairs.make_shared_dataset(records, 18, 5, CROPS, start_step=7, num_epochs=2)]
    assert len(resumed) == len(full) - 7
    for got, want in zip(resumed, full[7:]):
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    # fresh augmentation: the same record in two epochs is not the same picture
    assert not np.array_equal(full[0][0], full[len(full) // 2][0])


def _per_pair_inputs(x):
    return {"image_a": tf.gather(x["images"], x["index_a"]), "image_b": tf.gather(x["images"], x["index_b"])}


@pytest.mark.parametrize("preset", ["l23", "cls"])
def test_shared_step_equals_per_pair_model_on_the_same_pairs(records, preset):
    """Loss terms and every gradient equal those of the per-pair model on the explicit pair list.
    BN runs on its moving statistics here: in training mode the two differ by design (DESIGN)."""
    x, y = next(iter(pairs.make_shared_dataset(records, 18, 1, CROPS)))
    keras.utils.set_random_seed(0)
    cfg = config.get_model_config(preset)
    model = PairTrainer(build_model(cfg), contrastive=cfg.contrastive)
    results = []
    for inputs in (x, _per_pair_inputs(x)):
        with tf.GradientTape() as tape:
            out = model(inputs, training=False)
            terms = model.loss_terms(y, out)
            total = sum(terms.values())
        grads = tape.gradient(total, model.trainable_variables)
        results.append((terms, total, grads, out))
    (t1, l1, g1, o1), (t2, l2, g2, o2) = results
    assert set(o1) == set(o2)
    for key in o1:
        np.testing.assert_allclose(o1[key], o2[key], rtol=1e-5, atol=1e-5, err_msg=key)
    for key in t1:
        np.testing.assert_allclose(float(t1[key]), float(t2[key]), rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-5)
    for v, a, b in zip(model.trainable_variables, g1, g2):
        assert (a is None) == (b is None), v.path
        if a is not None:
            scale = float(tf.reduce_max(tf.abs(b))) + 1e-12
            np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=2e-5, err_msg=v.path)


def test_shared_training_runs_and_learns_a_step(records):
    """model.fit on shared batches: the loss is finite and the weights move."""
    keras.utils.set_random_seed(0)
    model = PairTrainer(build_model("l2"))
    model.compile(optimizer=make_optimizer(), jit_compile=False)
    before = [v.numpy().copy() for v in model.trainable_variables]
    hist = model.fit(pairs.make_shared_dataset(records, 18, 2, CROPS), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(hist.history["loss"][-1])
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_keep_every_keeps_the_curve_checkpoints_the_rolling_ones_drop(records, tmp_path, caplog):
    """StepCheckpoint(keep_every=3) over 8 steps saved every 2: checkpoints/ rolls (MAX_TO_KEEP),
    checkpoints/kept/ holds steps 3 and 6 for good, each restoring that step's weights; the log
    calls only the last checkpoint "training stopped"."""
    import logging
    caplog.set_level(logging.INFO)
    keras.utils.set_random_seed(0)
    model = PairTrainer(build_model("l2"))
    model.compile(optimizer=make_optimizer(), jit_compile=False)
    directory = str(tmp_path / "checkpoints")
    manager = checkpoints.checkpoint_manager(model, directory)
    weights = {}

    class Record_(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            weights[int(self.model.optimizer.iterations.numpy())] = self.model.network.get_weights()[0].copy()

    callback = callbacks.StepCheckpoint(manager, 2, 8, keep_every=3)
    model.fit(pairs.make_shared_dataset(records, 18, 2, CROPS), steps_per_epoch=2, epochs=4, verbose=0, shuffle=False,
              callbacks=[callback, Record_()])
    rolling = sorted(checkpoints.checkpoint_step(p) for p in manager.checkpoints)
    assert rolling == [4, 6, 8]
    labels = [m.rsplit("(", 1)[1] for m in caplog.messages if m.startswith("checkpoint ")]
    assert labels == ["interval 1)", "kept: a multiple of 3 steps)", "interval 2)", "kept: a multiple of 3 steps)",
                      "interval 3)", "training stopped)"], labels
    kept = tf.train.get_checkpoint_state(f"{directory}/{run_folder.KEPT_DIR}").all_model_checkpoint_paths
    assert sorted(checkpoints.checkpoint_step(p) for p in kept) == [3, 6]
    for path in kept:
        network = build_model("l2")
        tf.train.Checkpoint(model=network).restore(path).expect_partial()
        np.testing.assert_array_equal(network.get_weights()[0], weights[checkpoints.checkpoint_step(path)])


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_checkpoints_of_a_run_resumed_off_the_interval_are_not_called_stopped(records, tmp_path, caplog):
    """Resumed at step 1 with checkpoints every 2 steps, the intervals end at steps 3 and 5: only the
    last is "training stopped" (before: every checkpoint of such a run was, as step % every != 0)."""
    import logging
    caplog.set_level(logging.INFO)
    keras.utils.set_random_seed(0)
    model = PairTrainer(build_model("l2"))
    model.compile(optimizer=make_optimizer(), jit_compile=False)
    model.optimizer.iterations.assign(1)
    manager = checkpoints.checkpoint_manager(model, str(tmp_path / "checkpoints"))
    model.fit(pairs.make_shared_dataset(records, 18, 2, CROPS), steps_per_epoch=2, epochs=2, verbose=0, shuffle=False,
              callbacks=[callbacks.StepCheckpoint(manager, 2, 5)])
    saved = [m for m in caplog.messages if m.startswith("checkpoint ")]
    assert [m.rsplit("ckpt-", 1)[1] for m in saved] == ["3 (interval 1)", "5 (training stopped)"], saved
