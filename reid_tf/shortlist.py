"""Two-stage scoring of large galleries (Market-1501: 3,368 queries × 15,913 gallery images).

A Siamese model scores pairs; exhaustive Eq. 7 over Market-1501's 53.6 M pairs would take about
13 hours on 2 CPU cores. The paper's score has a cheap half: d (Eq. 5) needs only each image's
embedding. So, with reid_tf.scoring.ScoringEngine's public API:

1. Per-image pass (`ScoringEngine.image_features`, in chunks of images read from disk): the
   embeddings of every query and gallery image; the queries' full features are kept for stage 3.
2. d for every query × gallery pair in chunks of queries, as one matrix product per chunk
   (‖a‖² + ‖b‖² − 2a·b); each query's K nearest gallery images (a few extra candidates re-ranked
   by the exact difference form, `losses.embedding_distance`, the model's own d) form its
   shortlist, and the exact d of those pairs enters Eq. 7.
3. Eq. 7 on the shortlisted pairs only (`ScoringEngine.pair_p_match`), block by block of gallery
   images: the engine's cost per pair is lowest when all pairs of one image are scored in one call
   (its correlation patches are built once per image and call), and a gallery image is
   shortlisted by only Q·K/G queries on average (≈ 11 for Market-1501 at K = 50), so every pair of
   a gallery image goes into the same call. The blocks are k-means cells of the gallery
   embeddings, so that a query's shortlist, a ball in embedding space, falls into few blocks and
   its own patches are rebuilt only a few times. A block's gallery features are computed when it
   is scored (memory stays bounded; the per-image network runs twice for shortlisted gallery
   images). Progress (pairs done, rate, ETA) is logged as it goes.

The ranking of a query (`Shortlisted.ranking`): its shortlist ordered by Eq. 7, then every other
gallery image ordered by d — so CMC up to rank K is the two-stage ranking, and mAP sees every
true match (the engine's `score_matrix(shortlist=K)` gives the others −inf instead, which would tie
them all, pessimistically, at the end). The standard protocol reads it
(reid_tf.protocols.evaluate_standard); `shortlist_study` measures what the shortlist costs in rank-k
and gains in time against exhaustive scoring.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from reid_tf import config, losses, metrics
from reid_tf.images import load_images
from reid_tf.progress import Progress
from reid_tf.scoring import ImageFeatures, ScoringEngine

Images = Callable[[np.ndarray], np.ndarray]  # indices -> images (n, 160, 60, 3) float32 in [0, 1]


def image_source(images_or_paths) -> tuple[int, Images]:
    """(count, loader) for an array of images or a list of image paths (decoded on demand)."""
    if isinstance(images_or_paths, np.ndarray):
        return len(images_or_paths), lambda idx: images_or_paths[idx]
    paths = list(images_or_paths)
    return len(paths), lambda idx: load_images([paths[i] for i in idx])


def features_in_chunks(engine: ScoringEngine, count: int, load: Images, chunk: int, keep: bool,
                       what: str) -> tuple[np.ndarray, ImageFeatures | None]:
    """Embeddings (N, D) of every image, and all their features if `keep`."""
    progress = Progress(what, count, "images", every=30.0, at_end=True)
    embeddings, kept = [], []
    for s in range(0, count, chunk):
        f = engine.image_features(load(np.arange(s, min(s + chunk, count))))
        embeddings.append(f.embedding)
        if keep:
            kept.append(f)
        progress.update(len(f))
    features = None
    if keep:
        features = ImageFeatures({j: np.concatenate([f.maps[j] for f in kept]) for j in engine.levels},
                                 {j: np.concatenate([f.parts[j] for f in kept]) for j in engine.levels},
                                 np.concatenate(embeddings))
    return np.concatenate(embeddings), features


def nearest(emb_q: np.ndarray, emb_g: np.ndarray, k: int, chunk: int = 256, margin: int = 8
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 1: d for every pair in chunks of queries, and each query's k nearest gallery images.

    Returns (all_d (Q, G) float32 by the Gram form, shortlist (Q, k) gallery indices by exact d
    ascending (ties: lower index first, as a stable sort), exact d of those pairs (Q, k)).
    The Gram form is exact to ~1e-6 at the shortlist's boundary; `margin` extra candidates per query
    are re-ranked by the exact difference form, so the shortlist is the exact one.
    """
    Q, G = len(emb_q), len(emb_g)
    k = min(k, G)
    take = min(G, k + margin)
    all_d = np.empty((Q, G), np.float32)
    shortlist = np.empty((Q, k), np.int64)
    exact = np.empty((Q, k), np.float32)
    g_sq = np.sum(emb_g.astype(np.float64) ** 2, axis=1)
    for s in range(0, Q, chunk):
        q = emb_q[s:s + chunk]
        d2 = np.sum(q.astype(np.float64) ** 2, axis=1)[:, None] + g_sq[None] - 2.0 * (q @ emb_g.T)
        all_d[s:s + chunk] = np.sqrt(np.maximum(d2, 0.0))
        cand = np.argpartition(all_d[s:s + chunk], take - 1, axis=1)[:, :take] if take < G else \
            np.broadcast_to(np.arange(G), (len(q), G))
        rows = np.repeat(np.arange(len(q)), take)
        d = losses.embedding_distance(tf.constant(q[rows]), tf.constant(emb_g[cand.reshape(-1)])).numpy()
        d = d.reshape(len(q), take)
        order = np.lexsort((cand, d), axis=1)[:, :k]  # by exact d, then by gallery index
        shortlist[s:s + chunk] = np.take_along_axis(cand, order, axis=1)
        exact[s:s + chunk] = np.take_along_axis(d, order, axis=1)
        np.put_along_axis(all_d[s:s + chunk], shortlist[s:s + chunk], exact[s:s + chunk], axis=1)
    return all_d, shortlist, exact


def gallery_blocks(emb: np.ndarray, block_size: int, seed: int = 0, iterations: int = 8) -> list[np.ndarray]:
    """Partition images (rows of emb) into blocks of at most block_size: k-means cells (k-means++
    start, a few Lloyd steps), each cut into pieces of block_size. Returns sorted index arrays."""
    n = len(emb)
    k = max(1, math.ceil(n / block_size))
    if k == 1:
        return [np.arange(n)]
    rng = np.random.default_rng(seed)
    centres = [emb[rng.integers(n)]]
    d2 = np.sum((emb - centres[0]) ** 2, axis=1)
    for _ in range(k - 1):  # k-means++
        centres.append(emb[rng.choice(n, p=d2 / d2.sum()) if d2.sum() > 0 else rng.integers(n)])
        d2 = np.minimum(d2, np.sum((emb - centres[-1]) ** 2, axis=1))
    centres = np.stack(centres)
    for _ in range(iterations):
        label = np.argmin(np.sum(centres ** 2, axis=1)[None] - 2.0 * emb @ centres.T, axis=1)
        for c in range(k):
            members = emb[label == c]
            if len(members):
                centres[c] = members.mean(axis=0)
    blocks = []
    for c in range(k):
        members = np.flatnonzero(label == c)
        blocks += [members[s:s + block_size] for s in range(0, len(members), block_size)]
    return [b for b in blocks if len(b)]


@dataclasses.dataclass
class Shortlisted:
    """Two-stage scores of Q queries against G gallery images.

    Attributes:
      shortlist: (Q, K) gallery indices, nearest first by d.
      distance: (Q, K) d of those pairs; p_match, score: (Q, K) p(match) and Eq. 7 of those pairs.
      all_distance: (Q, G) d of every pair (stage 1).
      seconds: wall time per stage; pairs: pairs that went through the network.
    """

    shortlist: np.ndarray
    distance: np.ndarray
    p_match: np.ndarray
    score: np.ndarray
    all_distance: np.ndarray
    seconds: dict[str, float]
    pairs: int

    def ranking(self, key: str = "score") -> np.ndarray:
        """(Q, G) ranking scores, higher first: the shortlist by `key` ("score" = Eq. 7, or
        "p_match"), then the rest by d; key "distance" ranks everything by d alone."""
        if key == "distance":
            return -self.all_distance
        out = -1.0 - self.all_distance  # in [−3, −1]: below every shortlisted value (≥ 0)
        np.put_along_axis(out, self.shortlist, getattr(self, key), axis=1)
        return out


def score_shortlists(engine: ScoringEngine, query, gallery, k: int, image_chunk: int = 512,
                     block_size: int = 2048, max_pairs: int = 50_000) -> Shortlisted:
    """Stages 1–3 of the module docstring: Eq. 7 on each query's K nearest gallery images by d.

    Args:
      engine: a ScoringEngine of the model.
      query, gallery: images (N, 160, 60, 3) float32 in [0, 1], or lists of image paths.
      k: shortlist length K (≥ G: every pair, i.e. exhaustive).
      image_chunk: images per call of the per-image network (memory ≈ 0.44 MB per image held).
      block_size, max_pairs: see `score_features`.
    """
    t0 = time.monotonic()
    Q, load_q = image_source(query)
    G, load_g = image_source(gallery)
    if k < 1:
        raise ValueError(f"shortlist length must be ≥ 1, got {k}")
    _, fq = features_in_chunks(engine, Q, load_q, image_chunk, keep=True, what="query features")
    emb_g, _ = features_in_chunks(engine, G, load_g, image_chunk, keep=False, what="gallery embeddings")
    features = time.monotonic() - t0
    result = score_features(engine, fq, emb_g, lambda index: engine.image_features(load_g(index)), k,
                            block_size, max_pairs)
    result.seconds = {"features": features, **result.seconds, "total": time.monotonic() - t0}
    return result


def score_features(engine: ScoringEngine, fq, emb_g: np.ndarray,
                   gallery_features: Callable[[np.ndarray], ImageFeatures], k: int, block_size: int = 2048,
                   max_pairs: int = 50_000, progress: Callable[[int], None] | None = None) -> Shortlisted:
    """Stages 2–3 of the module docstring, from the queries' features and the gallery's embeddings.

    Args:
      engine: a ScoringEngine of the model.
      fq: the queries' features (ImageFeatures, or anything with `.embedding` (Q, D) and `.take`).
      emb_g: (G, D) the gallery's embeddings.
      gallery_features: gallery indices (sorted) -> their ImageFeatures; called once per block.
      k: shortlist length K (≥ G: every pair).
      block_size: gallery images whose features are held at once in stage 3.
      max_pairs: pairs per call of pair_p_match (≈ 5 KB each), cut between gallery images.
      progress: called with the number of pairs just scored (default: a Progress log line).
    """
    if k < 1:
        raise ValueError(f"shortlist length must be ≥ 1, got {k}")
    t = time.monotonic()
    all_d, shortlist, distance = nearest(fq.embedding, emb_g, k)
    seconds = {"distance": time.monotonic() - t}
    t = time.monotonic()
    Q, G, K = len(fq.embedding), len(emb_g), shortlist.shape[1]
    if progress is None:
        progress = Progress(f"Eq. 7 on {Q} × {K} shortlisted pairs", Q * K, "pairs", every=30.0,
                            at_end=True).update
    p_match = np.full((Q, K), np.nan, np.float32)
    pair_q = np.repeat(np.arange(Q), K)  # (Q·K,) pair i = (pair_q[i], shortlist.flat[i])
    pair_g = shortlist.reshape(-1)
    used = np.unique(pair_g)
    for block in gallery_blocks(emb_g[used], block_size):
        g_block = used[block]  # sorted gallery indices of this block
        fg = gallery_features(g_block)
        local_g = np.full(G, -1, np.int64)
        local_g[g_block] = np.arange(len(g_block))
        pairs = np.flatnonzero(local_g[pair_g] >= 0)
        pairs = pairs[np.argsort(local_g[pair_g[pairs]], kind="stable")]  # grouped by gallery image
        for piece in _cut(pairs, local_g[pair_g[pairs]], max_pairs):
            uq, q_local = np.unique(pair_q[piece], return_inverse=True)
            p = engine.pair_p_match(fq.take(uq), fg, q_local, local_g[pair_g[piece]])
            p_match.reshape(-1)[piece] = p
            progress(len(piece))
    seconds["pairs"] = time.monotonic() - t
    score = engine.score(p_match, distance)  # Eq. 7 (p(match) alone for "cls"), as the model's FinalScore
    return Shortlisted(shortlist, distance, p_match, score, all_d, seconds, Q * K)


def _cut(pairs: np.ndarray, owner: np.ndarray, max_pairs: int) -> list[np.ndarray]:
    """Split `pairs` (grouped by `owner`) into pieces of ≤ max_pairs that never split an owner's
    run (unless one owner alone has more)."""
    if len(pairs) <= max_pairs:
        return [pairs] if len(pairs) else []
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])  # first pair of each owner
    pieces, begin = [], 0
    while begin < len(pairs):
        end = begin + max_pairs
        if end < len(pairs):
            cut = starts[(starts > begin) & (starts <= end)]
            end = int(cut[-1]) if len(cut) else end
        pieces.append(pairs[begin:end])
        begin = end
    return pieces


def shortlist_study(engine: ScoringEngine, queries: Sequence, gallery: Sequence, ks: Sequence[int]) -> dict:
    """Two-stage scoring (top-K gallery by d, then Eq. 7 on those pairs) against exhaustive scoring
    (`python -m reid_tf.evaluate --shortlist_study=K1,K2,...` on a run's single-shot test draw).

    Per-image features of the records (path, identity) are computed once and shared, so the timings
    compare the pair scoring alone: exhaustive (Q·G pairs) against each K (Q·K pairs). Rankings by
    Eq. 7. Returns {"queries", "gallery", "rows": per K (exhaustive first) its pairs, seconds,
    speed-up and top-k (%)}.
    """
    q_ids, g_ids = np.array([q.identity for q in queries]), np.array([g.identity for g in gallery])
    fq = engine.image_features(load_images([q.path for q in queries]))
    fg = engine.image_features(load_images([g.path for g in gallery]))
    rows = []
    for k in [None, *ks]:
        engine.score_matrix(fq, fg, shortlist=k)  # warm-up (tracing)
        t = time.perf_counter()
        scores = engine.score_matrix(fq, fg, shortlist=k)
        seconds = time.perf_counter() - t
        ranks = metrics.rank_k(metrics.cmc(scores["score"], q_ids, g_ids), config.RANKS)
        rows.append({"k": k or len(gallery), "exhaustive": k is None, "seconds": seconds,
                     "pairs": int(scores["evaluated"].sum()),
                     **{f"rank{r}": 100 * v for r, v in ranks.items()}})
    for row in rows:
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
    return {"queries": len(queries), "gallery": len(gallery), "rows": rows}
