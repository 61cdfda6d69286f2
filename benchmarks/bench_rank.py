"""Ranking one query against a large gallery: exhaustive against two-stage scoring, and
what the shortlist costs in accuracy — the measurements behind config.RANK_SHORTLIST_ABOVE / _K.

    python -m benchmarks.bench_rank --model=runs/x/model.keras --work=/tmp/bench_rank

Data: synthetic people (data_tools.make_synthetic.render, seed 0) of identities offset, offset + 1, …
(those below `offset`, 400, are the default training set's, so no test image was trained on): the
camera-B image of 1,000 identities, and for larger galleries each of them in several copies, the
k-th shifted k pixels to the right (wrapping round), so every file and its features differ; the
queries are camera-A images of the same identities.

(a) Per gallery size, through the feature cache as `python -m reid_tf.rank` uses it: encoding the
    gallery into an empty cache (once per gallery), opening it again (hashing the files, reading the
    embeddings: every later query pays this), then ranking one query exhaustively and with each K
    (the median of --repeats runs, all in this one process, so their ratio holds even on a busy machine).
(b) Accuracy: --queries queries against the first gallery size, CMC rank-1/5/10 exhaustive and with
    each K. One exhaustive score matrix; a K's result is that matrix restricted to each query's K
    nearest by d (what the two-stage scoring computes, pair for pair).
Prints a markdown table per part and writes them to --work/bench_rank.md.
"""
from __future__ import annotations

import functools
import os
import time

import numpy as np
from absl import flags, logging

from reid_tf import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "model.keras (or a training workdir)", required=True)
flags.DEFINE_string("work", "/tmp/bench_rank", "folder for the synthetic data, galleries and feature cache")
flags.DEFINE_list("sizes", ["1000", "10000"], "gallery sizes")
flags.DEFINE_list("shortlists", ["20", "50", "100", "200"], "K of the two-stage scoring")
flags.DEFINE_integer("offset", 400, "first identity used (those below are the default training set's)")
flags.DEFINE_integer("queries", 100, "queries of the accuracy part (b); 0 skips it")
flags.DEFINE_integer("repeats", 3, "timed runs per shortlisted ranking (median)")
flags.DEFINE_integer("exhaustive_repeats", 1, "timed runs per exhaustive ranking (median)")


@functools.lru_cache(maxsize=None)
def _rendered(offset: int, n: int, camera: int) -> np.ndarray:
    """uint8 (n, 160, 60, 3): image 0 of `camera` of identities offset … offset + n − 1."""
    from data_tools.make_synthetic import render

    ids = np.arange(offset, offset + n)
    return render(0, np.stack([ids, np.full(n, camera), np.zeros(n, int)], axis=1))


def _gallery_folder(work: str, offset: int, size: int, base: int = 1000) -> str:
    """`size` PNGs: the camera-B image of identities offset … offset + base − 1, each in size / base
    copies shifted 0, 1, … pixels (named IIIII_K.png: identity, copy)."""
    from PIL import Image

    folder = os.path.join(work, f"gallery_{size}")
    if os.path.isdir(folder) and len(os.listdir(folder)) == size:
        return folder
    os.makedirs(folder, exist_ok=True)
    ids = np.arange(offset, offset + min(size, base))
    images = _rendered(offset, len(ids), 1)
    for n in range(size):
        i, k = n % len(ids), n // len(ids)
        Image.fromarray(np.roll(images[i], k, axis=1)).save(os.path.join(folder, f"{ids[i]:05d}_{k}.png"),
                                                           compress_level=1)
    return folder


def _median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds (this process, all threads) of `repeats` calls of fn: on a shared
    machine the CPU time moves much less with the load than the wall time."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu))


def timing(ranker, query, folder: str, ks: list[int], repeats: int, exhaustive_repeats: int) -> dict:
    from reid_tf.images import find_images

    paths = find_images(folder)
    encode = _median_seconds(lambda: ranker.encode_files(paths), 1)  # into the (empty) cache
    gallery = None

    def open_cache():
        nonlocal gallery
        gallery, _ = ranker.encode_files(paths)  # from the cache

    open_cache = _median_seconds(open_cache, 1)
    fq = ranker.encode(query)
    ranker.rank(fq, gallery.take(np.arange(8)), top=5, shortlist=0)  # warm-up: tracing
    row = {"gallery": len(paths), "encode": encode, "open": open_cache,
           "exhaustive": _median_seconds(lambda: ranker.rank(fq, gallery, top=10, shortlist=0), exhaustive_repeats)}
    for k in ks:
        row[k] = _median_seconds(lambda: ranker.rank(fq, gallery, top=10, shortlist=k), repeats)
    logging.info("%s", row)
    return row


def accuracy(ranker, offset: int, size: int, queries: int, ks: list[int]) -> list[dict]:
    from reid_tf import config, metrics

    ids = np.arange(offset, offset + size)
    q, g = (_rendered(offset, queries, 0) / 255.0).astype(np.float32), (_rendered(offset, size, 1) / 255.0).astype(np.float32)
    t, c = time.perf_counter(), time.process_time()
    out = ranker.engine.score_matrix(q, g)
    logging.info("accuracy: %d × %d pairs in %.0f s (%.0f CPU s)", queries, size, time.perf_counter() - t,
                 time.process_time() - c)
    nearest = np.argsort(out["distance"], axis=1, kind="stable")
    rows = []
    for k in [None, *ks]:
        score = out["score"].copy()
        if k is not None:
            keep = np.zeros_like(score, bool)
            np.put_along_axis(keep, nearest[:, :k], True, axis=1)
            score[~keep] = -np.inf
        ranks = metrics.rank_k(metrics.cmc(score, ids[:queries], ids), config.RANKS)
        rows.append({"k": k, **{r: 100 * v for r, v in ranks.items()}})
    return rows


def main(argv):
    del argv
    from reid_tf import config, rank

    f = FLAGS
    sizes, ks = [int(s) for s in f.sizes], [int(k) for k in f.shortlists]
    query = (_rendered(f.offset, 1, 0) / 255.0).astype(np.float32)
    lines = [f"load average at start: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores; "
             "wall seconds (CPU seconds of this process)", "",
             "| gallery | encode gallery (once) | open cached gallery | rank: exhaustive | "
             + " | ".join(f"rank: K = {k}" for k in ks) + " | exhaustive / K = 100, wall (CPU) |",
             "|---|---|---|---|" + "---|" * len(ks) + "---|"]
    for size in sizes:
        cache = os.path.join(f.work, f"cache_{size}_{time.time_ns()}")  # empty: the encoding is timed
        ranker = rank.Ranker.from_model(f.model, cache_dir=cache)
        row = timing(ranker, query, _gallery_folder(f.work, f.offset, size), ks, f.repeats, f.exhaustive_repeats)
        ratio = (f"{row['exhaustive'][0] / row[100][0]:.0f}× ({row['exhaustive'][1] / row[100][1]:.0f}×)"
                 if 100 in row else "")
        cell = lambda t: f"{t[0]:.2f} s ({t[1]:.2f})"  # noqa: E731
        lines.append(f"| {size:,} | {cell(row['encode'])}, {size / row['encode'][0]:.0f} images/s | {cell(row['open'])}"
                     f" | {cell(row['exhaustive'])} | " + " | ".join(cell(row[k]) for k in ks) + f" | {ratio} |")
        logging.info("%s", lines[-1])
    if f.queries:
        ranker = rank.Ranker.from_model(f.model)
        rows = accuracy(ranker, f.offset, sizes[0], f.queries, ks)
        lines += ["", f"{f.queries} queries × {sizes[0]:,} gallery images (chance rank-1 {100 / sizes[0]:.2f} %):", "",
                  "| scoring | " + " | ".join(f"rank-{r}" for r in config.RANKS) + " |",
                  "|---|" + "---|" * len(config.RANKS)]
        for r in rows:
            name = "exhaustive" if r["k"] is None else f"K = {r['k']}"
            lines.append(f"| {name} | " + " | ".join(f"{r[k]:.1f}" for k in config.RANKS) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(f.work, "bench_rank.md"), "w") as out:
        out.write(text)
    print(text)


if __name__ == "__main__":
    cli.run(main)
