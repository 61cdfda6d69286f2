"""Numerics of the layers against independent references (DESIGN "Sampler convention", Eq. 1–2)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_testing import run_layer_test
from reid_tf import config
from reid_tf.layers import (CSN, AffineSTN, ConvBlock, DepthwiseCrossCorrelation, RankingBranch, affine_sample,
                            central_crop_theta, theta_from_unit)
from reid_tf.layers.blocks import FusedBatchNormalization
from reid_tf.layers.csn import CSNParts, CSNSimilarity
from reid_tf.layers.correlation import depthwise_xcorr_parts_shift
from reid_tf.layers.scores import EmbeddingDistance, FinalScore, MatchProbability
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


def centred_window(stripe, f):
    """The f × f window centred in each (B, H, W, C) stripe, one output pixel per input pixel, by
    hand: with an odd margin (H − f or W − f; every level has one: 20×15, 10×8, 5×4 against f = 10,
    5, 3) the window lies half-way between pixels, i.e. the mean of the two windows beside it."""
    for axis in (1, 2):
        margin = stripe.shape[axis] - f
        lo, hi = margin // 2, (margin + 1) // 2
        stripe = (np.take(stripe, range(lo, lo + f), axis=axis) + np.take(stripe, range(hi, hi + f), axis=axis)) / 2
    return stripe


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
    np.testing.assert_allclose(part.numpy(), centred_window(stripe, f), atol=1e-5)
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
    """The hand-written gradient (shifted sums for the signal and, in blocks of rows, for the kernels),
    in float64."""
    signal = tf.constant(RNG.normal(size=(2, 5, 4, 2)), tf.float64)
    kernels = tf.constant(RNG.normal(size=(2, 2, *kernel, 2)), tf.float64)
    theoretical, numerical = tf.test.compute_gradient(depthwise_xcorr_parts_shift, [signal, kernels], delta=1e-6)
    for t, n in zip(theoretical, numerical):
        assert np.abs(t).max() > 0.1  # a gradient, not zeros
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-7)


def test_csn_correlation_forms_agree_in_values_and_gradients():
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


def _randomise_theta_head(stn):
    """A non-zero θ head, so that θ depends on the stripe's content (at C2 initialisation it does not)."""
    kernel = stn.theta_dense.kernel
    kernel.assign(RNG.normal(scale=0.5, size=kernel.shape).astype("float32"))


@pytest.mark.parametrize("level,dividing", [(2, True), (3, True), (4, True), (2, False), (4, False)])
def test_csn_parts_are_the_stn_of_plain_stripe_slices(level, dividing):
    """CSN.parts (map split once, stripes from segments, B·P stripes through one STN) equals the STN
    of each plain slice x[:, start:stop], sample by sample; C1 (no dividing) is one stripe, the map."""
    H, W = {2: (40, 15), 3: (20, 8), 4: (10, 4)}[level]
    x = RNG.normal(size=(2, H, W, 4)).astype("float32")
    csn = CSN(config.PART_SIZE[level], config.STRIPES[level] if dividing else None)
    csn([x, x])
    _randomise_theta_head(csn.stn)
    parts, theta = csn.parts(tf.constant(x), training=False)
    rows = config.STRIPES[level] if dividing else [(0, H)]
    assert tuple(parts.shape) == (2, len(rows), config.PART_SIZE[level], config.PART_SIZE[level], 4)
    for p, (start, stop) in enumerate(rows):
        want_part, want_theta = csn.stn(tf.constant(x[:, start:stop]), training=False)
        np.testing.assert_allclose(theta[:, p], want_theta, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(parts[:, p], want_part, rtol=1e-5, atol=1e-5)
    assert not np.allclose(theta[0], theta[1])  # the stripes' own θ, not one shared by the batch


def test_ranking_branch_stacks_upper_middle_bottom():
    """The 3 parts' conv outputs are stacked vertically in the order upper, middle, bottom (DESIGN
    "Ranking net"): compared by value with the stack built by hand from the branch's own convs."""
    branch = RankingBranch()
    parts = RNG.normal(size=(2, 3, 5, 5, 4)).astype("float32")
    got = branch(parts, training=False).numpy()
    per_part = [branch.conv_a(parts[:, p], training=False).numpy() for p in range(3)]  # (2, 3, 3, 96) each
    stacked = np.concatenate(per_part, axis=1)  # (2, 9, 3, 96): upper rows 0–2, middle 3–5, bottom 6–8
    want = np.mean(branch.conv_b(stacked, training=False).numpy(), axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the order matters (zero padding at the stack's ends), so the check above can tell
    assert not np.allclose(branch(parts[:, ::-1], training=False).numpy(), got, atol=1e-4)


# ---- every custom layer: the contract of tests/layer_testing.py, then its own numbers -------------
def test_conv_block():
    x = RNG.normal(size=(2, 5, 3, 4)).astype("float32")
    kwargs = {"filters": 2, "kernel_size": 1, "pool": True}
    run_layer_test(ConvBlock, kwargs, x, trainable_weights=3, non_trainable_weights=2)
    block = ConvBlock(**kwargs)
    block(x)
    kernel = RNG.normal(size=(1, 1, 4, 2)).astype("float32")
    block.conv.kernel.assign(kernel)
    # by hand: 1×1 conv, BN at inference with its initial statistics (mean 0, variance 1, ε = 1e-3),
    # ReLU, then 2×2 "same" max-pool: 5 × 3 → 3 × 2, the last row/column windows clipped.
    y = np.maximum(np.einsum("bhwc,cf->bhwf", x, kernel[0, 0]) / np.sqrt(1.0 + 1e-3), 0.0)
    want = np.zeros((2, 3, 2, 2))
    for i in range(3):
        for j in range(2):
            want[:, i, j] = y[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(1, 2))
    np.testing.assert_allclose(block(x, training=False).numpy(), want, rtol=1e-5, atol=1e-6)
    unpooled = run_layer_test(ConvBlock, {"filters": 3, "kernel_size": 3, "pool": False}, x,
                              trainable_weights=3, non_trainable_weights=2)[0]
    assert unpooled.shape == (2, 5, 3, 3)


def test_fused_batch_norm_layer():
    """Contract only; its numbers are test_fused_batch_norm_equals_keras_batch_norm's."""
    x = RNG.normal(size=(3, 4, 2, 5)).astype("float32")
    run_layer_test(FusedBatchNormalization, {"synchronized": True}, x, trainable_weights=2, non_trainable_weights=2)


def test_affine_stn_learned_and_fixed():
    stripe = RNG.normal(size=(2, 5, 4, 3)).astype("float32")
    # While the θ head's kernel is zero (the C2 initialisation) no gradient reaches the loc nets.
    part, theta = run_layer_test(AffineSTN, {"part_size": 3}, stripe, trainable_weights=11,
                                 non_trainable_weights=6, no_gradient=("loc_conv",))
    np.testing.assert_allclose(theta, np.broadcast_to(central_crop_theta((5, 4), 3), (2, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(part, centred_window(stripe, 3), atol=1e-5)
    # C2 (Table 4): no localisation net, θ fixed at the central crop
    part, theta = run_layer_test(AffineSTN, {"part_size": 3, "fixed": True}, stripe, trainable_weights=0)
    np.testing.assert_allclose(theta, np.broadcast_to(central_crop_theta((5, 4), 3), (2, 2, 3)), atol=0)
    np.testing.assert_allclose(part, centred_window(stripe, 3), atol=1e-5)


STRIPES_8 = ((0, 4), (2, 6), (4, 8))  # a small level: three overlapping stripes of height 4


@pytest.mark.parametrize("correlation", ["shift", "direct"])
def test_csn_divided_with_stn(correlation):
    x_a, x_b = (RNG.normal(size=(2, 8, 5, 4)).astype("float32") for _ in range(2))
    sim, parts_a, parts_b, theta_a, _ = run_layer_test(
        CSN, {"part_size": 3, "stripes": STRIPES_8, "correlation": correlation}, [x_a, x_b],
        trainable_weights=11, non_trainable_weights=6, no_gradient=("loc_conv",))
    assert sim.shape == (2, 8, 5, 24) and parts_a.shape == (2, 3, 3, 3, 4) and theta_a.shape == (2, 3, 2, 3)
    # Eq. 2 by the loop: channel group 1 = x_a * the middle part of b, group 3 = x_b * the upper part of a
    np.testing.assert_allclose(sim[..., 4:8], xcorr_loop(x_a, parts_b[:, 1]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sim[..., 12:16], xcorr_loop(x_b, parts_a[:, 0]), rtol=1e-4, atol=1e-4)


def test_csn_c1_no_dividing():
    """C1 (Table 4): one stripe, the whole map; its part is the centred crop of the whole map."""
    x_a, x_b = (RNG.normal(size=(2, 8, 5, 4)).astype("float32") for _ in range(2))
    sim, parts_a, parts_b, theta_a, _ = run_layer_test(
        CSN, {"part_size": 3, "stripes": None}, [x_a, x_b], trainable_weights=11, non_trainable_weights=6,
        no_gradient=("loc_conv",))
    assert sim.shape == (2, 8, 5, 8) and parts_a.shape == (2, 1, 3, 3, 4) and theta_a.shape == (2, 1, 2, 3)
    np.testing.assert_allclose(parts_a[:, 0], centred_window(x_a, 3), atol=1e-5)
    np.testing.assert_allclose(sim[..., :4], xcorr_loop(x_a, parts_b[:, 0]), rtol=1e-4, atol=1e-4)


def test_csn_c2_fixed_crop():
    """C2 (Table 4): no weights at all; each part is the centred crop of its plain stripe slice."""
    x_a, x_b = (RNG.normal(size=(2, 8, 5, 4)).astype("float32") for _ in range(2))
    sim, parts_a, parts_b, theta_a, _ = run_layer_test(
        CSN, {"part_size": 3, "stripes": STRIPES_8, "stn": False}, [x_a, x_b], trainable_weights=0)
    for p, (start, stop) in enumerate(STRIPES_8):
        np.testing.assert_allclose(parts_a[:, p], centred_window(x_a[:, start:stop], 3), atol=1e-5)
        np.testing.assert_allclose(parts_b[:, p], centred_window(x_b[:, start:stop], 3), atol=1e-5)
    np.testing.assert_allclose(sim[..., 8:12], xcorr_loop(x_a, parts_b[:, 2]), rtol=1e-4, atol=1e-4)


def test_ranking_branch_layer():
    """Contract; its numbers are test_ranking_branch_stacks_upper_middle_bottom's."""
    parts = RNG.normal(size=(2, 3, 3, 3, 4)).astype("float32")
    out = run_layer_test(RankingBranch, {}, parts, trainable_weights=6, non_trainable_weights=4)[0]
    assert out.shape == (2, config.RANK_CONV[1])


def test_depthwise_cross_correlation_layer():
    signal, kernels = RNG.normal(size=(2, 5, 4, 3)).astype("float32"), RNG.normal(size=(2, 2, 3, 3)).astype("float32")
    out = run_layer_test(DepthwiseCrossCorrelation, {}, [signal, kernels], trainable_weights=0)[0]
    np.testing.assert_allclose(out, xcorr_loop(signal, kernels), rtol=1e-5, atol=1e-5)


def test_match_probability():
    logits = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, -1.0]], "float32")
    p = run_layer_test(MatchProbability, {}, logits, trainable_weights=0)[0]
    np.testing.assert_allclose(p, [0.5, 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(3.0))], rtol=1e-6)


def test_embedding_distance_and_its_guard_at_equal_embeddings():
    r1 = np.array([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]], "float32")
    r2 = np.array([[0.0, 0.8, 0.6], [1.0, 0.0, 0.0]], "float32")  # sample 1: r1 = r2
    d = run_layer_test(EmbeddingDistance, {}, [r1, r2], trainable_weights=0)[0]
    np.testing.assert_allclose(d, [0.6 * np.sqrt(2.0), 1e-6], rtol=1e-5)  # √(max(0, 1e-12)) at r1 = r2
    a, b = tf.constant(r1), tf.constant(r2)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        total = tf.reduce_sum(EmbeddingDistance()([a, b]))
    grad_a, _ = tape.gradient(total, [a, b])
    # ∂d/∂r1 = (r1 − r2)/d: finite at r1 = r2 (the guard; a plain sqrt gives 0/0 = NaN there)
    np.testing.assert_allclose(grad_a.numpy(), [[0.6 / (0.6 * np.sqrt(2)), 0, -0.6 / (0.6 * np.sqrt(2))], [0, 0, 0]],
                               rtol=1e-5, atol=1e-7)


def test_final_score_eq7_and_cls():
    p, d = np.array([0.2, 0.9, 0.5], "float32"), np.array([1.0, 0.0, 0.25], "float32")
    score = run_layer_test(FinalScore, {"use_distance": True, "lam": 0.2, "eps": 1e-4}, [p, d], trainable_weights=0)[0]
    np.testing.assert_allclose(score, [0.2 + 0.2 / 1.0001, 0.9 + 0.2 / 1e-4, 0.5 + 0.2 / 0.2501], rtol=1e-6)
    # "cls" (Ours-cls, Table 3): p(match) alone, and d gets no gradient
    cls = run_layer_test(FinalScore, {"use_distance": False}, [p, d], trainable_weights=0,
                         no_gradient=("input 1",))[0]
    np.testing.assert_array_equal(cls, p)


@pytest.mark.parametrize("kwargs,parts", [({"stripes": STRIPES_8}, 3), ({"stripes": None}, 1),
                                          ({"stripes": STRIPES_8, "stn": False}, 3)], ids=["divided", "c1", "c2"])
def test_csn_parts_layer(kwargs, parts):
    """The encoder's half of a CSN, in the three configurations the presets use; at the C2
    initialisation (or fixed) every part is the centred crop of its plain stripe slice."""
    x = RNG.normal(size=(2, 8, 5, 4)).astype("float32")
    learned = kwargs.get("stn", True)
    got, theta = run_layer_test(CSNParts, {"part_size": 3, **kwargs}, x, trainable_weights=11 if learned else 0,
                                non_trainable_weights=6 if learned else 0, no_gradient=("loc_conv",))
    assert got.shape == (2, parts, 3, 3, 4) and theta.shape == (2, parts, 2, 3)
    for p, (start, stop) in enumerate(kwargs["stripes"] or [(0, 8)]):
        np.testing.assert_allclose(got[:, p], centred_window(x[:, start:stop], 3), atol=1e-5)


@pytest.mark.parametrize("correlation", ["shift", "fft", "direct"])
def test_csn_similarity_layer(correlation):
    """The pair head's half of a CSN: no weights; channel groups [x_a * parts_b, x_b * parts_a]."""
    x_a, x_b = (RNG.normal(size=(2, 6, 5, 3)).astype("float32") for _ in range(2))
    parts_a, parts_b = (RNG.normal(size=(2, 2, 3, 3, 3)).astype("float32") for _ in range(2))
    sim = run_layer_test(CSNSimilarity, {"correlation": correlation}, [x_a, x_b, parts_a, parts_b],
                         trainable_weights=0)[0]
    want = [xcorr_loop(x, p[:, k]) for x, p in ((x_a, parts_b), (x_b, parts_a)) for k in range(2)]
    np.testing.assert_allclose(sim, np.concatenate(want, axis=-1), rtol=1e-4, atol=1e-4)
