"""Numerics of the layers against independent references (DESIGN "Sampler convention", Eq. 1–2)."""
import numpy as np
import pytest
import tensorflow as tf

from reid_tf import config
from reid_tf.layers import AffineSTN, DepthwiseCrossCorrelation, affine_sample, central_crop_theta, theta_from_unit
from reid_tf.layers.stn import R_H, R_W, S_H, S_W, T_H, T_W
from references import xcorr_loop

RNG = np.random.default_rng(0)




@pytest.mark.parametrize("kernel", [(4, 4), (3, 3), (4, 3), (1, 1)])
def test_cross_correlation_matches_loop(kernel):
    signal = RNG.normal(size=(3, 7, 6, 4)).astype("float32")
    kernels = RNG.normal(size=(3, *kernel, 4)).astype("float32")
    got = DepthwiseCrossCorrelation()([signal, kernels]).numpy()
    np.testing.assert_allclose(got, xcorr_loop(signal, kernels), rtol=1e-5, atol=1e-5)


def test_cross_correlation_does_not_mix_samples():
    """A kernel that is zero for sample 0 must give zeros for sample 0 whatever sample 1 holds."""
    signal = RNG.normal(size=(2, 5, 5, 3)).astype("float32")
    kernels = RNG.normal(size=(2, 2, 2, 3)).astype("float32")
    kernels[0] = 0.0
    got = DepthwiseCrossCorrelation()([signal, kernels]).numpy()
    assert np.all(got[0] == 0.0) and np.any(got[1] != 0.0)


def test_sampler_identity_returns_input_exactly():
    x = RNG.normal(size=(2, 7, 5, 3)).astype("float32")
    theta = np.tile(np.array([[1, 0, 0], [0, 1, 0]], "float32"), (2, 1, 1))
    np.testing.assert_array_equal(affine_sample(x, theta, (7, 5)).numpy(), x)


def test_sampler_matches_hand_bilinear():
    # 1 sample, 3×4 map with values v[y, x] = 10 y + x, 1 channel. Normalised x ↦ pixel (x+1)(W−1)/2.
    x = (10 * np.arange(3)[:, None] + np.arange(4)[None, :]).astype("float32")[None, :, :, None]
    # A 1×1 output samples at (t_w, t_h); choose t_w = 0 → x_pix = 1.5, t_h = −0.5 → y_pix = 0.5.
    theta = np.array([[[0.0, 0, 0.0], [0, 0.0, -0.5]]], "float32")
    # bilinear by hand: the four neighbours (0,1)=1, (0,2)=2, (1,1)=11, (1,2)=12, each weight 1/4.
    got = affine_sample(x, theta, (1, 1)).numpy().item()
    assert got == pytest.approx((1 + 2 + 11 + 12) / 4)
    # x_pix = 0.25·3/2… pick t_w = −0.8 → x_pix = 0.3, t_h = 0.2 → y_pix = 1.2:
    theta = np.array([[[0.0, 0, -0.8], [0, 0.0, 0.2]]], "float32")
    expect = (0.7 * 0.8 * 10 + 0.3 * 0.8 * 11 + 0.7 * 0.2 * 20 + 0.3 * 0.2 * 21)
    assert affine_sample(x, theta, (1, 1)).numpy().item() == pytest.approx(expect, rel=1e-5)


def test_sampler_outside_is_zero_and_borders_fade():
    x = np.ones((1, 4, 4, 2), "float32")
    far = np.array([[[0.0, 0, 3.0], [0, 0.0, 0.0]]], "float32")  # x_norm = 3: far right
    assert np.all(affine_sample(x, far, (2, 2)).numpy() == 0.0)
    # half a pixel beyond the last centre: one neighbour inside (weight ½), the other outside (0).
    half = np.array([[[0.0, 0, 1.0 + 1.0 / 3.0], [0, 0.0, 0.0]]], "float32")  # W = 4: 1 px = 2/3
    np.testing.assert_allclose(affine_sample(x, half, (1, 1)).numpy(), 0.5, rtol=1e-6)


def test_sampler_gradients_match_finite_differences():
    x = tf.constant(RNG.normal(size=(2, 5, 4, 2)), tf.float64)
    theta = tf.constant([[[0.7, 0.1, 0.05], [-0.1, 0.6, 0.13]],
                         [[0.5, -0.2, -0.1], [0.05, 0.8, -0.07]]], tf.float64)
    for args, index in (([x, theta], 1), ([x, theta], 0)):
        def f(*a):
            return affine_sample(a[0], a[1], (3, 3))
        theoretical, numerical = tf.test.compute_gradient(f, args, delta=1e-6)
        np.testing.assert_allclose(theoretical[index], numerical[index], rtol=1e-4, atol=1e-6)


def _forward_difference_theta_gradient(x, theta, size):
    """d(sum of the output)/dθ by hand with the floor-based bilinear derivative: a point at pixel
    coordinate p = x0 + δ (x0 = ⌊p⌋, so δ = 0 on a pixel centre) moves by ε and its value changes by
    ε·[(1 − δy)(f(y0, x0 + 1) − f(y0, x0)) + δy(f(y0 + 1, x0 + 1) − f(y0 + 1, x0))] — the forward
    difference on the grid; neighbours outside the map count as 0. d(p)/dθ is the grid coordinate."""
    B, H, W, _ = x.shape
    h, w = size
    gy, gx = np.meshgrid(np.linspace(-1, 1, h) if h > 1 else [0.0],
                         np.linspace(-1, 1, w) if w > 1 else [0.0], indexing="ij")
    padded = np.zeros((B, H + 1, W + 1, x.shape[3]))
    padded[:, :H, :W] = x
    grad, on_centres = np.zeros((B, 2, 3)), 0
    for b in range(B):
        for yo, xo in zip(gy.ravel(), gx.ravel()):
            px = (theta[b, 0] @ [xo, yo, 1.0] + 1) * (W - 1) / 2
            py = (theta[b, 1] @ [xo, yo, 1.0] + 1) * (H - 1) / 2
            px, py = (round(v) if abs(v - round(v)) < 1e-4 else v for v in (px, py))  # the sampler's snap
            ix, iy = int(np.floor(px)), int(np.floor(py))
            fx, fy = px - ix, py - iy
            on_centres += (fx == 0) + (fy == 0)
            f = lambda yy, xx: padded[b, yy, xx].sum()  # noqa: E731
            d_dx = (1 - fy) * (f(iy, ix + 1) - f(iy, ix)) + fy * (f(iy + 1, ix + 1) - f(iy + 1, ix))
            d_dy = (1 - fx) * (f(iy + 1, ix) - f(iy, ix)) + fx * (f(iy + 1, ix + 1) - f(iy, ix + 1))
            grad[b, 0] += d_dx * (W - 1) / 2 * np.array([xo, yo, 1.0])
            grad[b, 1] += d_dy * (H - 1) / 2 * np.array([xo, yo, 1.0])
    assert on_centres > 0, "the test θ must put sample coordinates on pixel centres"
    return grad


@pytest.mark.parametrize("case", ["identity", "c2_crop"])
def test_sampler_theta_gradient_on_pixel_centres_is_forward_difference(case):
    """On the grid (identity θ, the C2 crop where every STN starts) the gradient w.r.t. θ is the
    forward difference of standard bilinear samplers, not f(x0 + 1) alone."""
    x = RNG.normal(size=(2, 20, 15, 3)).astype("float32")
    if case == "identity":
        theta, size = np.tile(np.array([[1, 0, 0], [0, 1, 0]], "float32"), (2, 1, 1)), (20, 15)
    else:
        theta, size = np.tile(central_crop_theta((20, 15), 10), (2, 1, 1)), (10, 10)
    t = tf.constant(theta)
    with tf.GradientTape() as tape:
        tape.watch(t)
        total = tf.reduce_sum(affine_sample(tf.constant(x), t, size))
    got = tape.gradient(total, t).numpy()
    np.testing.assert_allclose(got, _forward_difference_theta_gradient(x, theta, size), rtol=1e-4, atol=1e-3)


def test_theta_constraints_hold_for_any_localisation_output():
    u = np.tanh(RNG.normal(scale=3.0, size=(5000, 6))).astype("float32")
    theta = theta_from_unit(u).numpy()
    for row, scale in ((0, 0), (1, 1)):
        s = theta[:, row, scale]
        assert np.all(s >= config.THETA_MIN_SCALE - 1e-6) and np.all(s <= 1.0 + 1e-6)
        # |s·w + r·h + t| ≤ 1 for every output point (w, h) ∈ [−1, 1]²: the window stays inside.
        assert np.all(np.abs(theta[:, row]).sum(axis=1) <= 1.0 + 1e-5)


@pytest.mark.parametrize("level", [2, 3, 4])
def test_stn_starts_at_the_c2_central_crop(level):
    start, stop = config.STRIPES[level][0]
    width = {2: 15, 3: 8, 4: 4}[level]
    f = config.PART_SIZE[level]
    stripe = RNG.normal(size=(2, stop - start, width, 96)).astype("float32")
    stn = AffineSTN(f)
    part, theta = stn(stripe)
    expect = central_crop_theta((stop - start, width), f)
    np.testing.assert_allclose(theta.numpy(), np.broadcast_to(expect, (2, 2, 3)), atol=1e-5)
    # one output pixel per input pixel: the part is the centred f × f window of the stripe
    top, left = (stop - start - f) // 2, (width - f) // 2
    if (stop - start - f) % 2 == 0 and (width - f) % 2 == 0:
        np.testing.assert_allclose(part.numpy(), stripe[:, top:top + f, left:left + f], atol=1e-4)
    fixed_part, fixed_theta = AffineSTN(f, fixed=True)(stripe)
    np.testing.assert_allclose(fixed_theta.numpy(), theta.numpy(), atol=1e-5)
    np.testing.assert_allclose(fixed_part.numpy(), part.numpy(), atol=1e-4)


def test_stn_theta_respects_constraints_after_random_training():
    stn = AffineSTN(5)
    stripe = RNG.normal(size=(64, 10, 8, 96)).astype("float32")
    stn(stripe)
    kernel, bias = stn.theta_dense.kernel, stn.theta_dense.bias
    kernel.assign(RNG.normal(scale=2.0, size=kernel.shape))  # wild weights, as after bad training
    bias.assign(RNG.normal(scale=2.0, size=bias.shape))
    theta = stn(stripe, training=False)[1].numpy()
    assert np.all(theta[:, 0, S_W % 3] > 0) and np.all(theta[:, 1, S_H % 3] > 0)
    assert np.all(np.abs(theta).sum(axis=2) <= 1.0 + 1e-5)
    assert (R_W, R_H, T_W, T_H) == (1, 3, 2, 5)  # the layout Eq. 1 fixes


@pytest.mark.parametrize("kernel", [(3, 2), (2, 3)])
def test_shift_cross_correlation_gradients_match_finite_differences(kernel):
    """The hand-written gradient (shifted sums for the signal, FFT for the kernels), in float64."""
    from reid_tf.layers.correlation import depthwise_xcorr_parts_shift
    signal = tf.constant(RNG.normal(size=(2, 5, 4, 2)), tf.float64)
    kernels = tf.constant(RNG.normal(size=(2, 2, *kernel, 2)), tf.float64)
    theoretical, numerical = tf.test.compute_gradient(depthwise_xcorr_parts_shift, [signal, kernels], delta=1e-6)
    for t, n in zip(theoretical, numerical):
        assert np.abs(t).max() > 0.1  # a gradient, not zeros
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-7)


def test_csn_correlation_forms_agree_in_values_and_gradients():
    from reid_tf.layers import CSN
    x_a = tf.constant(RNG.normal(size=(2, 40, 15, 8)).astype("float32"))
    x_b = tf.constant(RNG.normal(size=(2, 40, 15, 8)).astype("float32"))
    csns = {form: CSN(10, config.STRIPES[2], correlation=form) for form in ("shift", "fft", "direct")}
    assert CSN(10).correlation == "shift"  # the default
    for csn in csns.values():
        csn([x_a, x_b])
        csn.set_weights(csns["shift"].get_weights())
    maps, grads = {}, {}
    for form, csn in csns.items():
        with tf.GradientTape() as tape:
            tape.watch([x_a, x_b])
            maps[form] = csn([x_a, x_b])[0]
            loss = tf.reduce_sum(maps[form] * maps[form])
        grads[form] = tape.gradient(loss, [x_a, x_b] + csn.trainable_weights)
    assert len(grads["shift"]) > 2 and all(g is not None for g in grads["shift"])  # the loc net's too
    for form in ("fft", "direct"):
        np.testing.assert_allclose(maps[form], maps["shift"], rtol=1e-3, atol=1e-3)
        for g, g_shift in zip(grads[form], grads["shift"]):
            np.testing.assert_allclose(g, g_shift, rtol=1e-3, atol=1e-2 * max(1.0, float(np.abs(g_shift).max())))
    with pytest.raises(ValueError, match="correlation"):
        CSN(10, correlation="fast")


def test_fused_batch_norm_equals_keras_batch_norm():
    """Same outputs, gradients and moving statistics as keras.layers.BatchNormalization."""
    import keras
    from reid_tf.layers.blocks import FusedBatchNormalization
    x = tf.constant(RNG.normal(2.0, 3.0, size=(4, 5, 6, 7)).astype("float32"))
    fused, plain = FusedBatchNormalization(synchronized=True), keras.layers.BatchNormalization(synchronized=True)
    for bn in (fused, plain):
        bn.build(x.shape)
        bn.gamma.assign(np.linspace(0.5, 2.0, 7))
        bn.beta.assign(np.linspace(-1.0, 1.0, 7))
    weights = tf.constant(RNG.normal(size=(7,)).astype("float32"))
    results = []
    for bn in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(y * y * weights)
        results.append([y, *tape.gradient(loss, [x, bn.gamma, bn.beta]), bn.moving_mean, bn.moving_variance, bn(x)])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * max(1.0, float(np.abs(want).max())))
