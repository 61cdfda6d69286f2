"""Two-stage scoring of large galleries (reid_tf.shortlist): time, and rank-1 / mAP against exhaustive.

    python -m benchmarks.bench_large_gallery                         # Market-1501-sized: 3,368 × 15,913
    python -m benchmarks.bench_large_gallery --queries=424 --gallery=2000 --ks=50,100,200
    python -m benchmarks.bench_large_gallery --mode=exhaustive --checkpoint=runs/x/model.keras \\
        --cuhk01=data/cuhk01 --gallery=1000

--mode=timing: query and gallery images are synthetic people (reid_tf.datasets.synthetic, written
as PNG files and decoded like real data), scored with --checkpoint (default: an untrained
Ours-(L2, L3); the cost does not depend on the weights except through which gallery images the
shortlists pick). Prints the time per stage for each K and, when the counts are smaller than
Market-1501's, the extrapolation to 3,368 × 15,913: per-image work scales with Q + G (+ the
shortlisted gallery images, computed again in stage 3), d with Q·G, Eq. 7 with Q·K pairs at the
measured pair rate. Keep Q/G at Market-1501's 0.212 so that a gallery image has as many
shortlisted partners (Q·K/G) as there, which sets the pair rate.

--mode=exhaustive: real CUHK01 as a multi-shot gallery: queries = one camera-A image of each of a
trial's 100 test identities; gallery = every camera-B image of them plus images of training
identities as distractors, up to --gallery images; standard protocol (reid_tf.metrics). Exhaustive
Eq. 7 (ScoringEngine.score_matrix) against two-stage at each K: rank-1/5/10, mAP and time.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import flags, logging

from reid_tf import cli, config, datasets, metrics
from reid_tf.pairs import load_images
from reid_tf.scoring import ScoringEngine
from reid_tf.shortlist import nearest, score_shortlists

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "timing", ["timing", "exhaustive"], "what to measure")
flags.DEFINE_string("checkpoint", None, "a saved network (.keras); default: untrained l23")
flags.DEFINE_integer("queries", 3368, "timing: query images (Market-1501: 3,368)")
flags.DEFINE_integer("gallery", 15913, "gallery images (Market-1501: 15,913 without junk)")
flags.DEFINE_list("ks", ["50", "100", "200"], "shortlist lengths K")
flags.DEFINE_string("cuhk01", None, "exhaustive: a prepared CUHK01 folder (data_tools.prepare_cuhk01)")
flags.DEFINE_string("workdir", None, "timing: where the synthetic images go (default: a temporary folder)")
flags.DEFINE_integer("block_size", None, "gallery images per stage-3 block (default: 2,048 scaled by "
                     "gallery / 15,913, so a smaller run has Market-1501's number of blocks)")

# An idle projection scales the times measured now to this machine when idle, from `make bench`'s
# rates on it (both given, or no projection).
flags.DEFINE_float("idle_pair_rate", 0, "the engine's dense pairs/s (pair part), idle")
flags.DEFINE_float("idle_image_rate", 0, "the per-image network's images/s, idle")

MARKET = (3368, 15913)



def network():
    from reid_tf.model import build_model
    from reid_tf.run_folder import load_network
    return load_network(FLAGS.checkpoint) if FLAGS.checkpoint else build_model("l23")


def synthetic_paths(root: str, n: int, seed: int) -> list[str]:
    from reid_tf.datasets.synthetic import make_synthetic
    per_identity = 4  # 2 cameras × 2 images
    folder = make_synthetic(os.path.join(root, f"seed{seed}"), identities=-(-n // per_identity), seed=seed)
    records = datasets.manifest_records(folder, datasets.read_manifest(folder))
    return [r.path for r in records][:n]


def dense_rate(engine: ScoringEngine, f) -> float:
    """pairs/s of pair_p_match on all 64 × 64 pairs of cached features: every image has 64 partners
    (the engine's own benchmark, as `make bench` measures it)."""
    q, g = np.repeat(np.arange(len(f)), len(f)), np.tile(np.arange(len(f)), len(f))
    t = time.monotonic()
    engine.pair_p_match(f, f, q, g)
    return len(q) / (time.monotonic() - t)


def timing(engine: ScoringEngine) -> None:
    Q, G = FLAGS.queries, FLAGS.gallery
    with tempfile.TemporaryDirectory(dir=FLAGS.workdir) as tmp:
        t = time.monotonic()
        query, gallery = synthetic_paths(tmp, Q, 1), synthetic_paths(tmp, G, 2)
        logging.info("%d + %d synthetic images written in %.0f s", Q, G, time.monotonic() - t)
        score_shortlists(engine, query[:64], gallery[:256], k=8)  # warm-up: tracing
        block = FLAGS.block_size or max(1, round(2048 * G / MARKET[1]))
        dense_f = engine.image_features(load_images(gallery[:64]))
        rows = []
        for k in map(int, FLAGS.ks):
            load = os.getloadavg()[0]
            dense = dense_rate(engine, dense_f)  # the engine's best case, under the same load
            r = score_shortlists(engine, query, gallery, k, block_size=block)
            rows.append((k, r.seconds, r.pairs, len(np.unique(r.shortlist)), dense))
            logging.info("K = %d: %s; dense 64 × 64: %.0f pairs/s (load average %.1f before, %.1f after)", k,
                         r.seconds, dense, load, os.getloadavg()[0])
    # Stage 2 at the full Market-1501 size, measured rather than extrapolated (it needs no network).
    rng = np.random.default_rng(0)
    unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.normal(size=(n, 256)).astype(np.float32))
    emb_q, emb_g = unit(MARKET[0]), unit(MARKET[1])
    full_d = {}
    for k in map(int, FLAGS.ks):
        t = time.monotonic()
        nearest(emb_q, emb_g, k)
        full_d[k] = time.monotonic() - t
    print(f"\nTwo-stage scoring, {Q} queries × {G} gallery images (Q/G = {Q / G:.3f}; Market-1501 "
          f"{MARKET[0] / MARKET[1]:.3f}), blocks of {block} gallery images; {os.cpu_count()} cores; "
          f"load average now {os.getloadavg()[0]:.1f}. Extrapolation: d measured at full size, the rest "
          "scaled (per-image work by image count, Eq. 7 by Q·K)\n")
    # At full size nothing is extrapolated; the idle projection needs the idle rates of this machine.
    project = (Q, G) != MARKET and FLAGS.idle_pair_rate > 0 and FLAGS.idle_image_rate > 0
    print("| K | pairs | shortlisted gallery images | features | d | Eq. 7 | pairs/s (dense 64 × 64 now) | total "
          "| extrapolated to 3,368 × 15,913, this load |" + (" idle projection |" if project else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if project else ""))
    for k, s, pairs, used, dense in rows:
        per_image = s["features"] / (Q + G)  # seconds per image of the per-image network (incl. decoding)
        image_speedup = max(1.0, FLAGS.idle_image_rate * per_image)  # idle images/s ÷ measured (decoding included here)
        again = per_image * used  # stage 3 computes the shortlisted gallery images' features again
        pair_only = s["pairs"] - again
        full = {"features": per_image * sum(MARKET), "again": again * MARKET[1] / G,
                "d": full_d[k], "eq7": pair_only * MARKET[0] / Q}
        idle = full["eq7"] * dense / max(FLAGS.idle_pair_rate, 1e-9) + full["d"] + (full["features"] + full["again"]) / image_speedup
        print(f"| {k} | {pairs:,} | {used:,} | {s['features']:.0f} s | {s['distance']:.1f} s | {s['pairs']:.0f} s "
              f"| {pairs / pair_only:.0f} ({dense:.0f}) | {s['total'] / 60:.1f} min | {sum(full.values()) / 60:.1f} min "
              f"(features {full['features'] / 60:.1f} + again {full['again'] / 60:.1f} + d {full['d'] / 60:.2f} "
              f"+ Eq. 7 {full['eq7'] / 60:.1f}) |" + (f" {idle / 60:.1f} min |" if project else ""))
    if project:
        print(f"\nIdle projection: every stage scaled by the idle/now speed of the same engine — pairs by "
              f"{FLAGS.idle_pair_rate:.0f} pairs/s ÷ the dense rate measured just before, images by "
              f"{FLAGS.idle_image_rate:.0f} images/s (--idle_image_rate; network only, so image decoding makes the projection "
              "of that part a lower bound) ÷ the rate measured here; d as measured.")


def exhaustive(engine: ScoringEngine) -> None:
    ds = datasets.load_dataset("cuhk01", FLAGS.cuhk01)
    split = ds.split(trial=0, seed=0)
    test = set(split.test)
    queries = [ds.by_identity[i][0] for i in split.test]  # image 001: camera A
    gallery = [r for r in ds.records if r.identity in test and r.camera == 1]
    rng = np.random.default_rng(0)
    others = [r for r in ds.records if r.identity not in test]
    extra = max(0, FLAGS.gallery - len(gallery))
    gallery += [others[i] for i in sorted(rng.choice(len(others), extra, replace=False))]
    ids = [np.array([r.identity for r in rs]) for rs in (queries, gallery)]
    cams = [np.zeros(len(queries), int), np.ones(len(gallery), int)]

    def evaluate(ranking):
        out = metrics.standard_protocol(ranking, ids[0], cams[0], ids[1], cams[1])
        return [100 * out["curve"][r - 1] for r in config.RANKS] + [100 * out["map"]]

    t = time.monotonic()
    fq = engine.image_features(load_images([r.path for r in queries]))
    fg = engine.image_features(load_images([r.path for r in gallery]))
    features = time.monotonic() - t
    t = time.monotonic()
    full = engine.score_matrix(fq, fg)
    rows = [("all (exhaustive)", len(queries) * len(gallery), features + time.monotonic() - t,
             evaluate(full["score"]))]
    for k in map(int, FLAGS.ks):
        r = score_shortlists(engine, [q.path for q in queries], [g.path for g in gallery], k)
        rows.append((str(k), r.pairs, r.seconds["total"], evaluate(r.ranking())))
    print(f"\nCUHK01 trial 0, standard protocol: {len(queries)} queries (one camera-A image of each test "
          f"identity) × {len(gallery)} gallery images ({len(gallery) - extra} camera-B images of the test "
          f"identities + {extra} of training identities)\n")
    print("| K | pairs through the network | rank-1 | rank-5 | rank-10 | mAP | Δ rank-1 | Δ mAP | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = rows[0][3]
    for name, pairs, seconds, m in rows:
        print(f"| {name} | {pairs:,} | " + " | ".join(f"{v:.1f}" for v in m) +
              f" | {m[0] - base[0]:+.1f} | {m[3] - base[3]:+.1f} | {seconds:.0f} s |")


def main(argv):
    del argv
    engine = ScoringEngine(network())
    (timing if FLAGS.mode == "timing" else exhaustive)(engine)


if __name__ == "__main__":
    cli.run(main)
