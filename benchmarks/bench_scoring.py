"""Scoring and training throughput on this machine, against its own matmul speed.

    python -m benchmarks.bench_scoring                     # `make bench`; l23, 9–10 minutes on 2 cores
    python -m benchmarks.bench_scoring --preset=l234 --viper=0 --train_steps=0 --xcorr=false

Measures, in one run: (a) the full model called on pair batches (pairs/s); (b) the ScoringEngine
(reid_tf.scoring) on an N × N matrix, with and without its per-image work, and b/a; (c) this
machine's float32 matmul GFLOP/s (tf.matmul and NumPy, 2048², best of several; at the start and at
the end, to see whether other jobs shared the CPU) and the GFLOP/s the model achieves in inference
and in a training step (FLOPs per pair from reid_tf.complexity; a training step counted as 3× the
forward FLOPs); (d) the wall time of one VIPeR-sized (316 × 316) and one CUHK03-sized (100 × 100)
trial with the engine on random images, features included; (e) training pairs/s (Adam, batch 128,
L_cls + L_ctr + weight decay) with each of the layer's correlation forms ("shift", the default;
"fft"; "direct"); (f) the correlation forms of Eq. 2 for scoring (one signal against many kernels)
and for training (a different signal per sample, forward and backward).

Targets reported against, not asserted: engine ≥ 780 pairs/s for l23 (the paper's TitanX: 1,250
pairs in 1.6 s) and a training step at ≥ 50 % of the matmul GFLOP/s.

What it measured on the development machine, run by run, is in docs/RESULTS.md ("Speed"). Other
jobs on the machine move every number by up to 2×: compare forms within one run, not across runs.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import flags, logging

from benchmarks.common import SHARED_K, per_pair_batch, random_images, shared_batch, train_step, training_model
from benchmarks.correlation_forms import xcorr_depthwise_multiplier, xcorr_im2col, xcorr_shared_kernels
from reid_tf import cli, config
from reid_tf.correlation_as_matmul import correlate_and_pool, kernel_matrix, signal_patches_numpy
from reid_tf.layers import depthwise_xcorr
from reid_tf.layers.csn import CORRELATIONS, similarity_direct, similarity_fft, similarity_shift
from reid_tf.model import build_model
from reid_tf.parallel import parallel_map
from reid_tf.scoring import ScoringEngine

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "l23", "Model preset (reid_tf.config.PRESETS).")
flags.DEFINE_integer("naive_pairs", 256, "Pairs timed for the full model (after one warm-up batch).")
flags.DEFINE_integer("naive_batch", 64, "Pairs per call of the full model.")
flags.DEFINE_integer("engine_size", 64, "N for the engine's N × N throughput measurement (b).")
flags.DEFINE_integer("viper", 316, "Identities of the VIPeR-sized trial (0 skips it).")
flags.DEFINE_integer("cuhk03", 100, "Identities of the CUHK03-sized trial (0 skips it).")
flags.DEFINE_integer("train_batch", config.BATCH_SIZE["default"], "Pairs per training step (§4.2: 128).")
flags.DEFINE_integer("train_steps", 2, "Training steps timed after one warm-up step (0 skips training).")
flags.DEFINE_list("train_forms", list(CORRELATIONS), "Correlation forms to time training with (reid_tf.layers.CSN).")
flags.DEFINE_bool("xcorr", True, "Time the correlation forms (f).")
flags.DEFINE_bool("xcorr_im2col_training", False, "Also time im2col per sample for training (≈ 1 pair/s: slow).")
flags.DEFINE_integer("matmul_size", 2048, "Square matmul size for the machine's GFLOP/s.")
flags.DEFINE_integer("repeats", 5, "Repeats of the micro-benchmarks (best is kept).")

TARGET_ENGINE = 1250 / 1.6  # pairs/s, §4.5: 1,250 pairs in 1.6 s on a TitanX
TARGET_TRAIN_FRACTION = 0.5  # of the matmul GFLOP/s


def best_time(fn: Callable, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls (after one warm-up call); results are materialised."""
    def run():
        out = fn()
        for x in tf.nest.flatten(out):
            if hasattr(x, "numpy"):
                x.numpy()
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


# ---- (c) the machine ----------------------------------------------------------------------------
def matmul_gflops(n: int, repeats: int) -> dict[str, float]:
    a = tf.constant(np.random.default_rng(0).normal(size=(n, n)).astype("float32"))
    mm = tf.function(lambda x: tf.matmul(x, x))
    an = a.numpy()
    flops = 2 * n ** 3
    return {"tf.matmul": flops / best_time(lambda: mm(a), repeats) / 1e9,
            "numpy": flops / best_time(lambda: an @ an, repeats) / 1e9}


def flops_per_pair(preset: str) -> float | None:
    try:
        from reid_tf.complexity import complexity
    except ImportError as e:
        logging.warning("reid_tf.complexity unavailable (%s): achieved GFLOP/s not reported", e)
        return None
    return float(complexity(preset)["flops"])


# ---- (a) the full model, (b) and (d) the engine ---------------------------------------------------
def naive_pairs_per_second(model: keras.Model, pairs: int, batch: int) -> float:
    call = tf.function(lambda a, b: model({"image_a": a, "image_b": b}, training=False)["score"])
    a, b = tf.constant(random_images(batch, 1)), tf.constant(random_images(batch, 2))
    call(a, b).numpy()  # tracing
    steps = max(1, math.ceil(pairs / batch))
    start = time.perf_counter()
    for _ in range(steps):
        out = call(a, b)
    out.numpy()
    return steps * batch / (time.perf_counter() - start)


def engine_rates(engine: ScoringEngine, n: int) -> dict[str, float]:
    """pairs/s on an n × n matrix: end to end (images → scores) and the pair part alone (features given)."""
    query, gallery = random_images(n, 3), random_images(n, 4)
    engine.score_matrix(query[:2], gallery[:3])  # tracing
    start = time.perf_counter()
    fq, fg = engine.image_features(query), engine.image_features(gallery)
    features = time.perf_counter() - start
    start = time.perf_counter()
    engine.score_matrix(fq, fg)
    pairs = time.perf_counter() - start
    return {"end_to_end": n * n / (features + pairs), "pair_part": n * n / pairs,
            "images_per_s": 2 * n / features}


def trial_seconds(engine: ScoringEngine, n: int) -> float:
    """Wall time of one single-shot trial: n query and n gallery images → the n × n Eq. 7 matrix."""
    query, gallery = random_images(n, 5), random_images(n, 6)
    start = time.perf_counter()
    out = engine.score_matrix(query, gallery)
    np.argsort(-out["score"], axis=1)  # the ranking a CMC needs
    return time.perf_counter() - start


def engine_correlation_flops(engine: ScoringEngine, features) -> float:
    """FLOPs per pair of the engine's correlation matmuls (both directions, all levels)."""
    total = 0.0
    for j in engine.levels:
        f, pool = engine._level_geometry(j, features.maps[j].shape[1:3])
        rows = features.maps[j].shape[1] * features.maps[j].shape[2]
        total += 2 * 2 * rows * f * f * features.maps[j].shape[-1] * engine.csn[j].num_parts
    return total


# ---- (e) training -------------------------------------------------------------------------------
def train_pairs_per_second(preset: str, batch: int, steps: int, correlation: str,
                           pairing: str = "per_pair", k: int = SHARED_K) -> float:
    """Pairs/s of the real training step (PairTrainer.train_on_batch: forward, the whole objective,
    backward, Adam) on a per-pair batch of `batch` pairs or on the shared batch reid_tf.pairs makes
    for `batch` with K = k (3K²V pairs from 2KV images)."""
    model = training_model(preset, correlation)
    x, y = per_pair_batch(batch) if pairing == "per_pair" else shared_batch(batch, k=k)
    step = train_step(model)
    step(x, y)  # tracing, optimizer slots
    step(x, y)  # the first backward pass also sets up oneDNN primitives
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return steps * int(y.shape[0]) / (time.perf_counter() - start)


# ---- (f) correlation forms ------------------------------------------------------------------------
def scoring_forms(repeats: int, partners: int = 64) -> dict[str, float]:
    """Level-2 Eq. 2 for one signal (40×15×96) against the 3 parts of `partners` images (10×10×96).

    Returns pair-directions per second (one pair-direction = 3 correlations), each form computing
    the correlation maps (the engine's form also its pooling, which it fuses).
    """
    rng = np.random.default_rng(9)
    H, W, C, f, P = 40, 15, 96, 10, 3
    x = rng.normal(size=(1, H, W, C)).astype("float32")
    parts = rng.normal(size=(partners, P, f, f, C)).astype("float32")
    kernels = parts.reshape(-1, f, f, C)  # (M·P, f, f, C)
    xt, kt = tf.constant(x), tf.constant(kernels)
    multiplier = tf.function(xcorr_depthwise_multiplier)
    im2col_tf = tf.function(xcorr_shared_kernels)
    folded = tf.function(depthwise_xcorr)  # the model's form: the signal repeated for every kernel
    xs = tf.constant(np.repeat(x, len(kernels), 0))
    size = [H + f - 1, W + f - 1]
    spectrum = tf.signal.rfft2d(tf.pad(tf.transpose(xt, (0, 3, 1, 2)), [[0, 0], [0, 0], [4, 5], [4, 5]]))
    kernel_spectra = tf.math.conj(tf.signal.rfft2d(tf.transpose(kt, (0, 3, 1, 2)), fft_length=size))
    fft_per_pair = tf.function(lambda: tf.signal.irfft2d(spectrum * kernel_spectra, fft_length=size)[..., :H, :W])
    patches = signal_patches_numpy(x[0], (f, f), 4)
    kmat = kernel_matrix(parts)
    workers = os.cpu_count() or 1

    def engine_form():  # as the engine runs it: one signal per worker, single-threaded BLAS each
        parallel_map(lambda _: correlate_and_pool(patches, kmat, (H, W), 4), range(workers), workers)

    times = {
        "folded depth-wise (model's form)": best_time(lambda: folded(xs, kt), repeats),
        "depth-wise, channel multiplier": best_time(lambda: multiplier(xt, kt), repeats),
        "im2col + tf.matmul": best_time(lambda: im2col_tf(xt, kt), repeats),
        "FFT, spectra cached per image": best_time(fft_per_pair, repeats),
        "im2col + NumPy matmul, default BLAS threads": best_time(lambda: correlate_and_pool(patches, kmat, (H, W), 4), repeats),
        f"im2col + NumPy matmul, {workers} workers (engine)": best_time(engine_form, repeats) / workers,
    }
    patch_time = best_time(lambda: signal_patches_numpy(x[0], (f, f), 4), repeats)
    logging.info("engine: patches of one level-2 map %.1f ms (once per image)", 1e3 * patch_time)
    return {name: partners / t for name, t in times.items()}


def training_forms(repeats: int, pairs: int = 16) -> dict[str, tuple[float, float]]:
    """Level-2 CSN.similarity of `pairs` pairs (each map × the other's 3 parts, both directions).

    Returns {form: (forward pairs/s, forward+backward pairs/s)}.
    """
    rng = np.random.default_rng(10)
    H, W, C, f, P = 40, 15, 96, 10, 3
    x_a, x_b = (tf.constant(rng.normal(size=(pairs, H, W, C)).astype("float32")) for _ in range(2))
    p_a, p_b = (tf.constant(rng.normal(size=(pairs, P, f, f, C)).astype("float32")) for _ in range(2))

    def per_sample(form):
        def similarity(x_a, x_b, parts_a, parts_b):  # CSN.similarity with another per-sample form
            signal = tf.concat([x_a] * P + [x_b] * P, 0)
            kb = tf.reshape(tf.transpose(parts_b, (1, 0, 2, 3, 4)), (-1, f, f, C))
            ka = tf.reshape(tf.transpose(parts_a, (1, 0, 2, 3, 4)), (-1, f, f, C))
            return form(signal, tf.concat([kb, ka], 0))
        return similarity

    forms = {"folded depth-wise (similarity_direct)": similarity_direct,
             "FFT, map spectrum shared (similarity_fft)": similarity_fft,
             "XLA shifted sums (similarity_shift, the layer's default)": similarity_shift}
    if FLAGS.xcorr_im2col_training:
        forms["im2col + matmul per sample"] = per_sample(xcorr_im2col)
    rates = {}
    for name, form in forms.items():
        forward = tf.function(lambda form=form: form(x_a, x_b, p_a, p_b))

        @tf.function
        def backward(form=form):
            with tf.GradientTape() as tape:
                tape.watch([x_a, x_b, p_a, p_b])
                loss = tf.reduce_sum(tf.square(form(x_a, x_b, p_a, p_b)))
            return tape.gradient(loss, [x_a, x_b, p_a, p_b])

        rates[name] = (pairs / best_time(forward, repeats), pairs / best_time(backward, max(1, repeats // 2)))
        logging.info("training form %s: %.0f / %.0f pairs/s", name, *rates[name])
    return rates


# ---------------------------------------------------------------------------------------------------
def main(argv: list[str]) -> None:
    del argv
    start_all, load_start = time.perf_counter(), os.getloadavg()[0]  # load > 0 before we start: other jobs
    rows: list[tuple[str, str]] = []
    peak = matmul_gflops(FLAGS.matmul_size, FLAGS.repeats)
    logging.info("matmul %d²: tf %.1f, numpy %.1f GFLOP/s", FLAGS.matmul_size, peak["tf.matmul"], peak["numpy"])
    flops = flops_per_pair(FLAGS.preset)
    if flops:
        logging.info("%s: %.3f GFLOPs per pair (reid_tf.complexity)", FLAGS.preset, flops / 1e9)

    model = build_model(FLAGS.preset)
    naive = naive_pairs_per_second(model, FLAGS.naive_pairs, FLAGS.naive_batch)
    logging.info("(a) full model: %.1f pairs/s", naive)
    engine = ScoringEngine(model)
    rates = engine_rates(engine, FLAGS.engine_size)
    logging.info("(b) engine %d×%d: %.0f pairs/s end to end, %.0f pairs/s pair part, %.0f images/s",
                 FLAGS.engine_size, FLAGS.engine_size, rates["end_to_end"], rates["pair_part"], rates["images_per_s"])
    probe = engine.image_features(random_images(1, 11))
    corr_flops = engine_correlation_flops(engine, probe)

    rows += [("(a) full model, pairs/s", f"{naive:.1f}"),
             (f"(b) engine {FLAGS.engine_size}×{FLAGS.engine_size}, pairs/s end to end", f"{rates['end_to_end']:.0f}"),
             ("    engine, pair part alone (features cached), pairs/s", f"{rates['pair_part']:.0f}"),
             ("    engine, per-image network, images/s", f"{rates['images_per_s']:.0f}"),
             ("    b / a (end to end)", f"{rates['end_to_end'] / naive:.1f}×"),
             (f"    target ≥ {TARGET_ENGINE:.0f} pairs/s (paper, TitanX)",
              "met" if rates["end_to_end"] >= TARGET_ENGINE else f"{rates['end_to_end'] / TARGET_ENGINE:.0%} of it"),
             (f"(c) matmul {FLAGS.matmul_size}² float32, GFLOP/s: tf / numpy", f"{peak['tf.matmul']:.0f} / {peak['numpy']:.0f}")]
    if flops:
        rows += [("    model GFLOPs per pair (reid_tf.complexity)", f"{flops / 1e9:.3f}"),
                 ("    full model inference, GFLOP/s achieved", f"{naive * flops / 1e9:.1f}"),
                 ("    engine, model-equivalent GFLOP/s (pairs/s × FLOPs/pair)", f"{rates['end_to_end'] * flops / 1e9:.0f}")]
    rows.append(("    engine correlation matmuls: GFLOPs/pair, GFLOP/s in the pair part",
                 f"{corr_flops / 1e9:.3f}, {rates['pair_part'] * corr_flops / 1e9:.0f}"))

    for name, n in (("VIPeR", FLAGS.viper), ("CUHK03", FLAGS.cuhk03)):
        if n:
            seconds = trial_seconds(engine, n)
            logging.info("(d) %s-sized trial %d×%d: %.1f s", name, n, n, seconds)
            rows.append((f"(d) {name}-sized trial {n}×{n} (engine, wall)", f"{seconds:.1f} s ({n * n / seconds:.0f} pairs/s)"))

    if FLAGS.train_steps:
        train_rates = {}  # (pairing, form) -> pairs/s
        shared = [(CORRELATIONS[0], f"shared K={k}") for k in sorted({SHARED_K, 1, 2})]
        for form, pairing in [(f, "per_pair") for f in FLAGS.train_forms] + shared:
            k = int(pairing[-1]) if pairing.startswith("shared") else SHARED_K
            rate = train_rates[pairing, form] = train_pairs_per_second(
                FLAGS.preset, FLAGS.train_batch, FLAGS.train_steps, form, pairing.split()[0], k)
            default = form == CORRELATIONS[0] and pairing == f"shared K={SHARED_K}"  # what training runs
            label = f"{pairing}, correlation={form!r}" + (" (default)" if default else "")
            logging.info("(e) training, %s: %.1f pairs/s", label, rate)
            rows.append((f"(e) training batch {FLAGS.train_batch}, {label}, pairs/s", f"{rate:.1f}"))
            if pairing.startswith("shared"):
                if ("per_pair", form) in train_rates:
                    rows.append((f"    {pairing} / per-pair (both {form!r})",
                                 f"{rate / train_rates['per_pair', form]:.2f}×"))
                continue
            if flops:
                achieved = 3 * rate * flops / 1e9
                rows.append(("    training GFLOP/s achieved (3× forward), % of tf / numpy matmul",
                             f"{achieved:.1f}, {achieved / peak['tf.matmul']:.0%} / {achieved / peak['numpy']:.0%}"
                             f" (target {TARGET_TRAIN_FRACTION:.0%})"))

    if FLAGS.xcorr:
        for name, rate in scoring_forms(FLAGS.repeats).items():
            rows.append((f"(f) scoring, level 2, {name}", f"{rate:.0f} pair-dir/s"))
        for name, (fwd, bwd) in training_forms(FLAGS.repeats).items():
            rows.append((f"(f) training, level 2, {name}", f"{fwd:.0f} fwd / {bwd:.0f} fwd+bwd pairs/s"))

    end_peak = matmul_gflops(FLAGS.matmul_size, FLAGS.repeats)
    rows.append(("(c) matmul again at the end, GFLOP/s: tf / numpy", f"{end_peak['tf.matmul']:.0f} / {end_peak['numpy']:.0f}"))
    rows.append(("total bench time; load average at start / end",
                 f"{time.perf_counter() - start_all:.0f} s; {load_start:.1f} / {os.getloadavg()[0]:.1f}"))
    width = max(len(r[0]) for r in rows) + 2
    print(f"\nbench_scoring, preset {FLAGS.preset}")
    for label, value in rows:
        print(f"{label:<{width}}{value}")


if __name__ == "__main__":
    cli.run(main)
