"""The scoring engine against the full model, and every correlation form against one loop (Eq. 2, 7)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.correlation_forms import xcorr_depthwise_multiplier, xcorr_im2col, xcorr_shared_kernels
from reid_tf import config
from reid_tf.correlation_as_matmul import correlate_and_pool, kernel_matrix, signal_patches_numpy, xcorr_shared_kernels_numpy
from reid_tf.layers import CSN, depthwise_xcorr
from reid_tf.layers.correlation import depthwise_xcorr_parts_fft, depthwise_xcorr_parts_shift
from reid_tf.layers.csn import similarity_direct, similarity_fft, similarity_shift
from reid_tf.metrics import match_ranks
from reid_tf.model import build_model, encoder_of, head_inputs, pair_head_of, structure
from reid_tf.scoring import ScoringEngine
from references import xcorr_loop

RNG = np.random.default_rng(6)
ATOL = 1e-4  # the bar: engine == model to 1e-4


def all_pairs_loop(signal, kernels):
    """(N, H, W, C) × (M, h, w, C) → (N, M, H, W, C) by the loop, one (signal, kernel) pair at a time."""
    N, M = len(signal), len(kernels)
    return xcorr_loop(np.repeat(signal, M, 0), np.tile(kernels, (N, 1, 1, 1))).reshape(N, M, *signal.shape[1:])


def normal(*shape):
    return RNG.normal(size=shape).astype("float32")


# (signal H, W; kernel h, w): even and odd kernels, a kernel larger than the map, the model's level 2/3.
SHAPES = [((7, 6), (4, 4)), ((7, 6), (3, 3)), ((7, 6), (4, 3)), ((5, 4), (1, 1)), ((4, 3), (5, 6)),
          ((12, 9), (10, 10))]


def one_part(parts_form):
    """A per-part form ((B,H,W,C), (B,P,h,w,C) → (B,P,H,W,C)) with P = 1, in the per-sample contract."""
    def form(signal, kernels):
        return parts_form(signal, kernels[:, None])[:, 0]
    form.__name__ = parts_form.__name__
    return form


@pytest.mark.parametrize("form", [depthwise_xcorr, xcorr_im2col, one_part(depthwise_xcorr_parts_fft),
                                  one_part(depthwise_xcorr_parts_shift)], ids=lambda f: f.__name__)
@pytest.mark.parametrize("map_hw,kernel_hw", SHAPES)
def test_per_sample_forms_match_loop(form, map_hw, kernel_hw):
    signal, kernels = normal(3, *map_hw, 5), normal(3, *kernel_hw, 5)
    got = np.asarray(form(tf.constant(signal), tf.constant(kernels)))
    np.testing.assert_allclose(got, xcorr_loop(signal, kernels), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", [xcorr_shared_kernels, xcorr_shared_kernels_numpy, xcorr_depthwise_multiplier],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("map_hw,kernel_hw", SHAPES)
def test_shared_kernel_forms_match_loop(form, map_hw, kernel_hw):
    """One signal against many kernels: out[n, m] = Eq. 2(signal n, kernel m), samples never mixed."""
    signal, kernels = normal(2, *map_hw, 5), normal(3, *kernel_hw, 5)
    got = np.asarray(form(tf.constant(signal), tf.constant(kernels)))
    np.testing.assert_allclose(got, all_pairs_loop(signal, kernels), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("map_hw,pools", [((40, 15), 2), ((20, 8), 1), ((10, 4), 0), ((9, 7), 2), ((11, 5), 1),
                                          ((3, 2), 2)])
def test_correlate_and_pool_is_the_correlation_then_the_models_pooling(map_hw, pools):
    """Rows in pooling-window order, clipped windows at the bottom/right == the loop, then n 2×2 "same" pools."""
    f, C = 3, 5
    signal, parts = normal(1, *map_hw, C), normal(2, 3, f, f, C)  # parts (M, P, f, f, C)
    got = correlate_and_pool(signal_patches_numpy(signal[0], (f, f), 2 ** pools), kernel_matrix(parts),
                             map_hw, 2 ** pools, channel_block=2)  # (C, cells, M·P); blocks that don't divide C
    ref = all_pairs_loop(signal, parts.reshape(-1, f, f, C))[0]  # (M·P, H, W, C)
    for _ in range(pools):
        ref = keras.layers.MaxPooling2D(2, padding="same")(ref).numpy()
    gh, gw = ref.shape[1:3]
    np.testing.assert_allclose(got, ref.transpose(3, 1, 2, 0).reshape(C, gh * gw, -1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", [similarity_fft, similarity_shift], ids=lambda f: f.__name__)
@pytest.mark.parametrize("map_hw,f,P", [((40, 15), 10, 3), ((20, 8), 5, 3), ((10, 4), 3, 1)])
def test_similarity_forms_equal_the_direct_form_in_values_and_gradients(form, map_hw, f, P):
    """CSN's "fft" and "shift" forms against "direct": same maps, channel order and gradients."""
    x_a, x_b = tf.constant(normal(2, *map_hw, 4)), tf.constant(normal(2, *map_hw, 4))
    parts_a, parts_b = tf.constant(normal(2, P, f, f, 4)), tf.constant(normal(2, P, f, f, 4))
    weight = tf.constant(normal(2, *map_hw, 2 * P * 4))
    results = []
    for similarity in (similarity_direct, form):
        with tf.GradientTape() as tape:
            tape.watch([x_a, x_b, parts_a, parts_b])
            sim = similarity(x_a, x_b, parts_a, parts_b)
            loss = tf.reduce_sum(sim * weight)
        results.append([sim, *tape.gradient(loss, [x_a, x_b, parts_a, parts_b])])
    for want, got in zip(*results):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=2e-4)


# ---- engine == model ------------------------------------------------------------------------
def images(n):
    """Coarse 20×20 colour blocks plus noise: images that differ in structure, not only in noise."""
    coarse = RNG.uniform(size=(n, config.INPUT_HEIGHT // 20, config.INPUT_WIDTH // 20, 3))
    blocks = np.repeat(np.repeat(coarse, 20, axis=1), 20, axis=2)  # (n, 160, 60, 3)
    return np.clip(blocks + RNG.normal(0, 0.1, blocks.shape), 0, 1).astype("float32")


def randomise(model):
    """Random weights made to behave like a trained model's where the comparison needs it.

    * Non-trivial BN statistics, so that a training=True slip (batch statistics) cannot pass.
    * Random weights bunch all embeddings together (d ≈ 0.01–0.05), where Eq. 7's λ/(d + ε) turns
      float32 rounding of d into > 1e-4 of score (dScore/dd = −λ/(d + ε)²); trained ones spread
      them (d ~ 1). So the embedding's bias is set to centre the calibration images' embeddings,
      and the logits' bias to centre their logit difference (p(match) near 0.5, not saturated).
    """
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(RNG.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(RNG.uniform(0.5, 2.0, n).astype("float32"))
            layer.gamma.assign(RNG.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(RNG.normal(0, 0.2, n).astype("float32"))
    encoder, head = encoder_of(model), pair_head_of(model)
    fa, fb = encoder(images(8), training=False), encoder(images(8), training=False)
    calibrations = {"embedding": (encoder, np.concatenate([images(8), images(8)])),
                    "logits": (head, head_inputs(fa, fb, structure(model).levels))}
    for name, (part, calibration) in calibrations.items():
        dense = part.get_layer(name)
        # part.input: the structure the part declares (a tensor, a dict); part.inputs is a flat list,
        # and a model declared with it warns when called with that structure.
        inputs = keras.Model(part.input, dense._inbound_nodes[0].input_tensors[0])(calibration, training=False)
        mean = np.asarray(inputs).mean(axis=0) @ dense.kernel.numpy()  # (units,)
        if name == "logits":
            mean = mean - mean.mean()  # only the difference of the two logits matters
        dense.bias.assign(-mean)
    return model


def model_on_all_pairs(model, query, gallery):
    """The full model on every (query i as image_a, gallery j as image_b): dict of (Q, G) arrays."""
    Q, G = len(query), len(gallery)
    out = model({"image_a": np.repeat(query, G, 0), "image_b": np.tile(gallery, (Q, 1, 1, 1))}, training=False)
    return {k: np.asarray(out[k]).reshape(Q, G) for k in ("p_match", "distance", "score")}


@pytest.fixture(scope="module")
def l23():
    """An l23 model with random weights and BN statistics, an engine with odd block sizes, and images."""
    model = randomise(build_model("l23"))
    engine = ScoringEngine(model, pair_batch=4, kernel_block=2, image_batch=3)
    query, gallery = images(3), images(4)
    return model, engine, query, gallery, model_on_all_pairs(model, query, gallery)


@pytest.mark.parametrize("preset", ["l234", "cls", "c1", "c2", "l4"])
def test_engine_equals_model(preset):
    model = randomise(build_model(preset))
    engine = ScoringEngine(model, pair_batch=4, kernel_block=2, image_batch=2)
    query, gallery = images(2), images(3)
    got, want = engine.score_matrix(query, gallery), model_on_all_pairs(model, query, gallery)
    for key in ("p_match", "distance", "score"):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=ATOL, err_msg=f"{preset} {key}")
    assert engine.use_distance == (preset != "cls")
    if preset == "cls":
        np.testing.assert_array_equal(got["score"], got["p_match"])  # Ours-cls ranks by p(match) alone


def test_engine_equals_model_l23(l23):
    model, engine, query, gallery, want = l23
    got = engine.score_matrix(query, gallery)
    for key in ("p_match", "distance", "score"):
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=ATOL, err_msg=key)
        assert got[key].dtype == np.float32 and got[key].shape == (3, 4)
    assert got["evaluated"].all()


def test_query_is_image_a_and_gallery_is_image_b(l23):
    """p(match) is not symmetric (conv4 weighs the two directions differently): the order must be the model's."""
    model, engine, query, gallery, want = l23
    swapped = model_on_all_pairs(model, gallery, query)  # gallery as image_a
    got = engine.score_matrix(query, gallery)
    assert np.abs(swapped["p_match"].T - want["p_match"]).max() > 100 * ATOL
    np.testing.assert_allclose(got["p_match"], want["p_match"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["distance"], swapped["distance"].T, rtol=0, atol=ATOL)  # d is symmetric
    back = engine.score_matrix(gallery, query)
    np.testing.assert_allclose(back["p_match"], swapped["p_match"], rtol=0, atol=ATOL)


def test_score_pairs_equals_model(l23):
    model, engine, query, gallery, want = l23
    a, b = query[[0, 2, 1, 2, 0]], gallery[[3, 0, 1, 2, 1]]
    got = engine.score_pairs(a, b)
    for key in ("p_match", "distance", "score"):
        np.testing.assert_allclose(got[key], want[key][[0, 2, 1, 2, 0], [3, 0, 1, 2, 1]], rtol=0, atol=ATOL)


def test_fixed_shapes_trace_each_function_once(l23):
    """Sizes that do not divide the batches are padded: new Q, G and pair counts trace nothing new."""
    model, engine, query, gallery, _ = l23
    for q, g in ((3, 4), (1, 2), (2, 4)):
        engine.score_matrix(query[:q], gallery[:g])
    engine.score_pairs(query[:2], gallery[:2])
    for fn in (engine._features_fn, engine._head_fn, engine._pairs_fn):
        assert fn.experimental_get_tracing_count() == 1


def test_features_are_reusable_and_buffer_chunks_change_nothing(l23):
    model, engine, query, gallery, want = l23
    fq, fg = engine.image_features(query), engine.image_features(gallery)
    assert len(fq) == 3 and fq.embedding.shape == (3, config.EMBEDDING_DIM)
    assert fq.maps[2].shape == (3, 40, 15, 96) and fq.parts[3].shape == (3, 3, 5, 5, 96)
    chunked = ScoringEngine(model, kernel_block=3, max_buffer_pairs=5)  # 1 query (4 pairs) per chunk
    got = chunked.score_matrix(fq, fg.take(slice(1, 4)))
    for key in ("p_match", "distance", "score"):
        np.testing.assert_allclose(got[key], want[key][:, 1:], rtol=0, atol=ATOL)


# Two-stage scoring by hand: 3 queries (identity i, true match gallery i), 4 gallery images, K = 2.
# Eq. 7 = p + 0.2 / (d + 1e-4):
#   q0: d .30 .20 .90 .80, p .60 .70 .99 .10 → 1.266 1.700 1.212 0.350. Shortlist {g1, g0} holds the
#       true match and everything above it: rank 2 either way (must not change).
#   q1: d .10 .95 .20 .99, p .20 .90 .10 .30 → 2.198 1.110 1.100 0.502: exhaustive rank 2; the true
#       match is outside {g0, g2}: −inf, tied last with g3 → rank 4 (must change; by its λ/(d + ε)
#       alone it would still beat g3's, rank 3).
#   q2: d .50 .40 .30 .60, p .95 .10 .50 .20 → 1.350 0.600 1.166 0.533: exhaustive rank 2 behind g0,
#       which the shortlist {g2, g1} leaves out → rank 1 (must change, for the better).
HAND_D = np.array([[.30, .20, .90, .80], [.10, .95, .20, .99], [.50, .40, .30, .60]], np.float32)
HAND_P = np.array([[.60, .70, .99, .10], [.20, .90, .10, .30], [.95, .10, .50, .20]], np.float32)


def test_shortlist_by_hand(l23, monkeypatch):
    model, engine, query, gallery, _ = l23
    fq, fg = engine.image_features(query[:3]), engine.image_features(gallery[:4])
    asked = []

    def pair_p_match(fq_, fg_, q_idx, g_idx):
        asked.extend(zip(q_idx.tolist(), g_idx.tolist()))
        return HAND_P[q_idx, g_idx]

    monkeypatch.setattr(engine, "distance_matrix", lambda emb_q, emb_g: HAND_D.copy())
    monkeypatch.setattr(engine, "pair_p_match", pair_p_match)
    ids = np.arange(4)
    full = engine.score_matrix(fq, fg)
    np.testing.assert_allclose(full["score"], HAND_P + 0.2 / (HAND_D + 1e-4), rtol=1e-6)
    np.testing.assert_array_equal(match_ranks(full["score"], ids[:3], ids), [2, 2, 2])
    asked.clear()
    short = engine.score_matrix(fq, fg, shortlist=2)
    assert sorted(asked) == [(0, 0), (0, 1), (1, 0), (1, 2), (2, 1), (2, 2)]  # the 2 nearest by d only
    np.testing.assert_array_equal(short["evaluated"], [[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0]])
    np.testing.assert_array_equal(match_ranks(short["score"], ids[:3], ids), [2, 4, 1])
    np.testing.assert_array_equal(short["distance"], HAND_D)
    assert np.all(short["score"][~short["evaluated"]] == -np.inf)


def test_shortlist_evaluates_only_q_times_k_pairs(l23):
    model, engine, query, gallery, want = l23
    fq, fg = engine.image_features(query), engine.image_features(gallery)
    K = 2
    before = engine.stats["pairs_evaluated"]
    got = engine.score_matrix(fq, fg, shortlist=K)
    assert engine.stats["pairs_evaluated"] - before == len(query) * K
    evaluated = got["evaluated"]
    np.testing.assert_array_equal(evaluated.sum(axis=1), K)
    nearest = np.argsort(want["distance"], axis=1)[:, :K]  # stage 1 ranks by d alone
    np.testing.assert_array_equal(np.sort(np.nonzero(evaluated)[1].reshape(-1, K), axis=1), np.sort(nearest, axis=1))
    np.testing.assert_allclose(got["score"][evaluated], want["score"][evaluated], rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["distance"], want["distance"], rtol=0, atol=ATOL)  # d for every pair
    assert np.all(got["score"][~evaluated] == -np.inf) and np.all(got["p_match"][~evaluated] == -np.inf)
    ranked = np.argsort(-got["score"], axis=1)[:, :K]  # the shortlisted pairs rank first
    assert np.all(np.take_along_axis(evaluated, ranked, axis=1))


def test_distance_matrix_in_chunks_equals_the_loop():
    """More queries than one chunk (7 = 3 + 3 + 1): every row, in order, against ‖r_q − r_g‖ by loop."""
    emb_q, emb_g = normal(7, 5), normal(4, 5)
    got = ScoringEngine.distance_matrix(emb_q, emb_g, chunk=3)
    want = [[np.sqrt(np.sum((emb_q[q].astype(np.float64) - emb_g[g]) ** 2)) for g in range(4)] for q in range(7)]
    assert got.shape == (7, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6)
