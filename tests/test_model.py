"""The network of §3.1 / DESIGN "Shapes": shapes, presets, .keras round trip, a training step each."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from reid_tf import config, losses
from layer_testing import find_layer
from reid_tf.model import build_model

RNG = np.random.default_rng(1)


def pair_batch(b=3):
    def image():
        return RNG.uniform(size=(b, config.INPUT_HEIGHT, config.INPUT_WIDTH, 3)).astype("float32")
    return {"image_a": image(), "image_b": image()}


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="l23.*l234"):
        build_model("l99")


@pytest.mark.parametrize("name,levels", [("l23", (2, 3)), ("l234", (2, 3, 4))])
def test_design_shape_table(name, levels):
    model = build_model(name)
    x = find_layer(model, "normalise")(pair_batch(2)["image_a"])
    expect = {"conv1": (80, 30, 32), "conv2": (40, 15, 96), "conv3": (20, 8, 96), "conv3b": (10, 4, 96)}
    maps = {}
    for layer_name, level in (("conv1", 1), ("conv2", 2), ("conv3", 3), ("conv3b", 4)):
        if level > max(levels):
            break
        x = find_layer(model, layer_name)(x)
        assert tuple(x.shape[1:]) == expect[layer_name]
        maps[level] = x
    stripes = {2: (20, 15), 3: (10, 8), 4: (5, 4)}
    for level in levels:
        csn = find_layer(model, f"csn_{level}")
        for start, stop in config.STRIPES[level]:
            assert (stop - start, maps[level].shape[2]) == stripes[level]
        parts, theta = csn.parts(maps[level])
        f = config.PART_SIZE[level]
        assert tuple(parts.shape[1:]) == (3, f, f, 96) and tuple(theta.shape[1:]) == (3, 2, 3)
    out = model(pair_batch(2))
    for level in levels:
        assert tuple(out[f"sim_{level}"].shape[1:]) == (*expect[("conv2", "conv3", "conv3b")[level - 2]][:2], 576)
    assert tuple(find_layer(model, "sim_concat").output.shape[1:]) == (10, 4, 576 * len(levels))  # 1152 for L2,L3
    assert tuple(find_layer(model, "conv4").output.shape[1:]) == (10, 4, 32)
    assert tuple(find_layer(model, "conv5").output.shape[1:]) == (5, 2, 32)
    assert tuple(find_layer(model, "conv6").output.shape[1:]) == (5, 2, 500)
    assert tuple(out["logits"].shape) == (2, 2)
    for key in ("embedding_a", "embedding_b"):
        assert tuple(out[key].shape) == (2, config.EMBEDDING_DIM)
        np.testing.assert_allclose(np.linalg.norm(out[key], axis=1), 1.0, rtol=1e-5)


def test_similarity_map_is_the_cross_correlation_with_the_other_images_parts():
    """sim_2 channel group 0 = x_a(2) * upper part of b; group 3 = x_b(2) * upper part of a (Eq. 2)."""
    model = build_model("l2")
    batch = pair_batch(2)
    out = model(batch, training=False)
    norm, conv1, conv2 = (find_layer(model, n) for n in ("normalise", "conv1", "conv2"))
    xa = conv2(conv1(norm(batch["image_a"]), training=False), training=False)
    xb = conv2(conv1(norm(batch["image_b"]), training=False), training=False)
    csn = find_layer(model, "csn_2")
    pa, _ = csn.parts(xa, training=False)
    pb, _ = csn.parts(xb, training=False)
    from reid_tf.layers import depthwise_xcorr
    np.testing.assert_allclose(out["sim_2"][..., :96], depthwise_xcorr(xa, pb[:, 0]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["sim_2"][..., 3 * 96:4 * 96], depthwise_xcorr(xb, pa[:, 0]), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip(tmp_path):
    model = build_model("l23")
    batch = pair_batch(2)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    a, b = model(batch, training=False), loaded(batch, training=False)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


@pytest.mark.parametrize("name", list(config.PRESETS))
def test_every_preset_runs_forward_and_a_training_step(name):
    cfg = config.get_model_config(name)
    model = build_model(name)
    batch, labels = pair_batch(3), np.array([1, 0, 0])
    optimizer = keras.optimizers.Adam(config.LEARNING_RATE)
    with tf.GradientTape() as tape:
        out = model(batch, training=True)
        loss = losses.softmax_loss(labels, out["logits"]) + tf.add_n(model.losses)
        if cfg.contrastive:
            loss += losses.contrastive_loss(labels, out["distance"])
        loss += losses.theta_penalty([out[k] for k in out if k.startswith("theta_")])
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
    still = [v.path for b, v in zip(before, model.trainable_variables) if np.array_equal(b, v.numpy())]
    # Every weight moves, except the localisation nets' BN γ/β: while the θ head's kernel is zero
    # (the C2 initialisation) no gradient reaches them, and they carry no weight decay.
    # "cls" drops L_ctr, so its ranking net gets no gradient either (the paper removes only the loss).
    def may_stay(path):
        return ("/stn/loc_conv" in path and "/bn/" in path) or (
            not cfg.contrastive and (path.startswith("rank_") or path.startswith("embedding")))
    assert all(may_stay(p) for p in still), still
    no_grad = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert all(may_stay(p) for p in no_grad), no_grad
    assert np.all(np.isfinite(model(batch, training=False)["score"]))


def test_stn_gets_gradient_at_its_initial_crop():
    """The C2 crop lies on pixel centres; θ must still receive a gradient there (sampler snap)."""
    model = build_model("l2")
    batch, labels = pair_batch(4), np.array([1, 0, 0, 1])
    stn_dense = find_layer(model, "csn_2").stn.theta_dense
    with tf.GradientTape() as tape:
        out = model(batch, training=True)
        loss = losses.softmax_loss(labels, out["logits"]) + losses.contrastive_loss(labels, out["distance"])
    grad = tape.gradient(loss, stn_dense.kernel)
    assert float(tf.reduce_max(tf.abs(grad))) > 0.0


def test_a_keras_model_that_is_not_a_reid_tf_network_is_refused_in_one_line(tmp_path):
    from reid_tf.run_folder import load_network

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="someone_elses")
    path = str(tmp_path / "other.keras")
    other.save(path)
    with pytest.raises(ValueError, match="other.keras holds a Keras model .* not a reid_tf network"):
        load_network(path)
