"""reid_tf.precise_bn: BN statistics re-estimated as the mean of training batches' statistics,
checked against the same statistics computed by hand in NumPy."""
import keras
import numpy as np
import pytest

from reid_tf import precise_bn
from reid_tf.layers.blocks import FusedBatchNormalization

EPS = 1e-3


def tiny_model():
    """conv → fused BN → ReLU → mean pool → dense → Keras BN: both BN kinds, one fed by the other."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 5, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = FusedBatchNormalization(epsilon=EPS, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(3, name="dense")(x)
    x = keras.layers.BatchNormalization(epsilon=EPS, name="bn2")(x)
    model = keras.Model(inputs, x)
    bn1 = model.get_layer("bn1")  # not the initial (1, 0) and weights not the identity, so a slip shows
    bn1.gamma.assign(np.array([1.5, 0.5, 2.0, 1.0], np.float32))
    bn1.beta.assign(np.array([0.1, -0.2, 0.3, 0.0], np.float32))
    return model


def reference(model, batches):
    """Per batch, training-mode statistics of bn1 and bn2 in NumPy (bn2's input uses bn1's batch
    statistics, as training mode does); returned as the mean over the batches."""
    w = model.get_layer("conv").kernel.numpy()
    bn1 = model.get_layer("bn1")
    dense = model.get_layer("dense")
    stats = []
    for x in batches:
        h, wd = x.shape[1:3]
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        y = np.zeros(x.shape[:3] + (w.shape[-1],))
        for dy in range(3):  # 'same' 3×3 convolution as a loop over the kernel taps
            for dx in range(3):
                y += padded[:, dy:dy + h, dx:dx + wd, :] @ w[dy, dx]
        m1, v1 = y.mean((0, 1, 2)), y.var((0, 1, 2))
        z = (y - m1) / np.sqrt(v1 + EPS) * bn1.gamma.numpy() + bn1.beta.numpy()
        d = np.maximum(z, 0).mean((1, 2)) @ dense.kernel.numpy() + dense.bias.numpy()
        stats.append((m1, v1, d.mean(0), d.var(0)))
    return [np.mean(s, axis=0) for s in zip(*stats)]


def batches_of(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.5, 2.0, (8, 6, 5, 2)).astype(np.float32) for _ in range(n)]


def test_statistics_are_the_mean_of_the_batches_statistics_weights_and_momentum_untouched():
    model = tiny_model()
    batches = batches_of(4)
    weights = [v.numpy().copy() for v in model.trainable_variables]
    assert [l.name for l in precise_bn.batch_norm_layers(model)] == ["bn1", "bn2"]
    used = precise_bn.recalibrate(model, ((x, np.zeros(8)) for x in batches), 3)  # (inputs, labels) too
    assert used == 3
    m1, v1, m2, v2 = reference(model, batches[:3])
    bn1, bn2 = model.get_layer("bn1"), model.get_layer("bn2")
    np.testing.assert_allclose(bn1.moving_mean.numpy(), m1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), v1, rtol=1e-4)
    np.testing.assert_allclose(bn2.moving_mean.numpy(), m2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn2.moving_variance.numpy(), v2, rtol=1e-4)
    assert bn1.momentum == bn2.momentum == 0.99
    for before, v in zip(weights, model.trainable_variables):
        np.testing.assert_array_equal(before, v.numpy())
    # the inference output now uses these statistics
    x = batches[0]
    out = model(x, training=False).numpy()
    np.testing.assert_allclose(bn2.moving_mean.numpy(), m2, rtol=1e-4, atol=1e-5)  # inference updates nothing
    assert np.isfinite(out).all()


def test_fewer_batches_than_asked_uses_what_there_is():
    model = tiny_model()
    batches = batches_of(2, seed=1)
    assert precise_bn.recalibrate(model, iter(batches), 10) == 2
    m1, v1, _, _ = reference(model, batches)
    np.testing.assert_allclose(model.get_layer("bn1").moving_mean.numpy(), m1, rtol=1e-4, atol=1e-5)


def test_a_failing_batch_or_none_at_all_leaves_the_statistics_as_they_were():
    model = tiny_model()
    bn1 = model.get_layer("bn1")
    bn1.moving_mean.assign(np.array([1.0, 2.0, 3.0, 4.0], np.float32))
    before = [(l.moving_mean.numpy(), l.moving_variance.numpy()) for l in precise_bn.batch_norm_layers(model)]

    def broken():
        yield batches_of(1)[0]
        yield np.zeros((8, 7, 5, 2), np.float32)  # wrong height: the model refuses it

    with pytest.raises(Exception):
        precise_bn.recalibrate(model, broken(), 5)
    with pytest.raises(ValueError, match="no batch"):
        precise_bn.recalibrate(model, iter([]), 5)
    with pytest.raises(ValueError, match="at least one batch"):
        precise_bn.recalibrate(model, batches_of(1), 0)
    for (mean, variance), layer in zip(before, precise_bn.batch_norm_layers(model)):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)
        assert layer.momentum == 0.99


# The Siamese network ----------------------------------------------------------------------------
def siamese_batches(seed=0):
    """Two per-pair batches {"image_a", "image_b"} (3 pairs) and two shared-image batches
    {"images", "index_a", "index_b"} (4 images, 5 pairs: images in several pairs, one in none)."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.uniform(0.0, 1.0, (n, 160, 60, 3)).astype(np.float32)  # noqa: E731
    per_pair = [{"image_a": images(3), "image_b": 0.4 * images(3)} for _ in range(2)]
    shared = [{"images": images(4), "index_a": np.array([0, 0, 1, 2, 2], np.int32),
               "index_b": np.array([1, 2, 2, 1, 0], np.int32)} for _ in range(2)]
    return per_pair, shared


def bn_inputs_by_hand(model, batches, monkeypatch):
    """Per BN layer and batch, every activation the layer normalised during the batch's training-mode
    forward pass (all its calls), recorded at the layer's input."""
    seen = {}
    original = FusedBatchNormalization.call

    def recording(layer, inputs, training=None, mask=None):
        seen.setdefault(id(layer), []).append(np.asarray(inputs, np.float64))
        return original(layer, inputs, training=training, mask=mask)

    per_batch = []
    with monkeypatch.context() as patch:
        patch.setattr(FusedBatchNormalization, "call", recording)
        for batch in batches:
            seen.clear()
            model(batch, training=True)
            per_batch.append(dict(seen))
    return per_batch


@pytest.fixture(scope="module")
def siamese():
    from reid_tf.model import build_model
    from reid_tf.pair_trainer import PairTrainer
    keras.utils.set_random_seed(5)
    return PairTrainer(build_model("l2"))


@pytest.mark.parametrize("pairing", ["per_pair", "shared"])
def test_a_siamese_networks_statistics_are_those_of_every_image_the_batch_encodes(siamese, pairing, monkeypatch):
    """On the real Siamese network (Ours-L2 at full input size): each BN layer's re-estimated mean
    and variance are, in NumPy, the mean over batches of the statistics of the union of all that
    layer's inputs in a batch. Per pair, the encoder's layers see image_a and image_b (two calls;
    a slip that keeps the last call's statistics takes image_b's alone); on shared images they see
    each of the batch's images once, however many pairs it is in; the head's layers see the pairs."""
    per_pair, shared = siamese_batches()
    batches = per_pair if pairing == "per_pair" else shared
    layers = precise_bn.batch_norm_layers(siamese)
    by_hand = bn_inputs_by_hand(siamese, batches, monkeypatch)
    encoder_layers = {id(l) for l in precise_bn.batch_norm_layers(siamese.encoder)}
    head_layers = {id(l) for l in precise_bn.batch_norm_layers(siamese.head)}
    assert len(layers) == len(encoder_layers) + len(head_layers) and len(head_layers) == 3  # conv4-6
    for seen in by_hand:
        assert set(seen) == encoder_layers | head_layers
        for key, calls in seen.items():
            assert len(calls) == (2 if pairing == "per_pair" and key in encoder_layers else 1)
    conv1 = siamese.encoder.get_layer("conv1").bn
    images = 6 if pairing == "per_pair" else 4
    assert sum(c.shape[0] for c in by_hand[0][id(conv1)]) == images  # 3 pairs: 6 encodings; 4 images

    assert precise_bn.recalibrate(siamese, batches, 2) == 2
    assert all(l.__dict__.get("call") is None for l in layers)  # the layers' own call back
    for layer in layers:
        union = [np.concatenate([c.reshape(-1, c.shape[-1]) for c in seen[id(layer)]]) for seen in by_hand]
        mean = np.mean([u.mean(0) for u in union], axis=0)
        variance = np.mean([u.var(0) for u in union], axis=0)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5, err_msg=layer.path)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-6,
                                   err_msg=layer.path)
