"""Fast test-time scoring: Eq. 7 for query × gallery pairs, with per-image work done once.

The network of §3.1 splits cleanly into
  * what depends on one image: conv1–3 (3b), each CSN's parts (STN output), the ranking net and
    its unit 256-d embedding r;
  * what depends on the pair: Eq. 2 (each image's map correlated with the other's parts, both
    directions, every level), max-pooling to 10 × 4, conv4–6, GAP, logits → p(match);
  * d = ‖r_q − r_g‖ (Eq. 5), which needs only the embeddings: one Q × G matrix.
`ScoringEngine` computes the first once per image and the second per pair (DESIGN "Speed levers").

How the per-pair part is made fast without changing the mathematics (tests/test_scoring.py checks
the engine against the full model to 1e-4):

1. Grouped by signal image. In direction a (x_q * parts_g) one query's map meets the parts of many
   gallery images; in direction b (x_g * parts_q) one gallery map meets many queries' parts. Each
   direction is therefore "one signal, many kernels": the signal's im2col patches (C, R, f·f) are
   built once per image and multiplied, per channel, by the (f·f, M·P) matrix of the M partner
   images' parts: one batched matmul (`correlate_and_pool`) instead of M·P depth-wise convolutions.
2. The patch rows are ordered window by window of the max-pooling that follows (2^n × 2^n windows,
   clipped at the map's end exactly as n successive 2 × 2 "same" poolings are), so pooling is a max
   over one axis of the matmul's output.
3. conv4 is a 1 × 1 convolution without bias (BN follows): linear in its input channels, and
   pooling acts per channel. So each direction's pooled maps are multiplied by their own rows of
   conv4's kernel right away (10 × 4 × 32 numbers per pair), and a pair's two directions are summed
   — exactly conv4 of the 1,152-channel concatenation, which is never built. The two directions can
   thus run in different orders (query-major, then gallery-major).
4. BN(conv4) → ReLU → conv5 → conv6 → GAP → logits → softmax on batches of `pair_batch` pairs, in a
   tf.function of fixed shape (the last batch padded), inference mode.

Steps 1–3 run in NumPy (the arithmetic: reid_tf.correlation_as_matmul), one signal image per worker thread (one
per core), each with a single-threaded BLAS (reid_tf.parallel). Of the forms of Eq. 2 for one signal
against many kernels that benchmarks/bench_scoring.py (f) compares — this one; the same im2col with
tf.matmul; TF's depth-wise convolution with a channel multiplier; FFT with every spectrum cached;
the model's folded depth-wise form — this one was the fastest, and its workers degrade gracefully
when another job holds a core, where OpenBLAS's own threads stall on their barrier (the figures:
docs/RESULTS.md, "Why the scoring engine is built as it is").
"""
from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from reid_tf import losses
from reid_tf.correlation_as_matmul import correlate_and_pool, kernel_matrix, signal_patches_numpy
from reid_tf.model import encoder_of, structure
from reid_tf.parallel import parallel_map

__all__ = ["ImageFeatures", "ScoringEngine"]


# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ImageFeatures:
    """What the network computes from one image alone, for N images (NumPy arrays).

    Attributes:
      maps: level j → x(j) (N, H_j, W_j, C), the signal of Eq. 2.
      parts: level j → (N, P, f_j, f_j, C), the STN parts (kernels of Eq. 2, ranking-net input).
      embedding: (N, 256) unit-norm ranking-net embedding r (Eq. 5).
    """

    maps: dict[int, np.ndarray]
    parts: dict[int, np.ndarray]
    embedding: np.ndarray

    def __len__(self) -> int:
        return int(self.embedding.shape[0])

    def take(self, index) -> "ImageFeatures":
        """The features of the images `index` (an index array or a slice)."""
        return ImageFeatures({j: m[index] for j, m in self.maps.items()},
                             {j: p[index] for j, p in self.parts.items()}, self.embedding[index])


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad axis 0 of x to n rows (the traced functions keep one fixed shape)."""
    if x.shape[0] == n:
        return x
    return np.concatenate([x, np.zeros((n - x.shape[0], *x.shape[1:]), x.dtype)])


def _groups(signal_idx: np.ndarray, kernel_idx: np.ndarray):
    """Pairs (signal_idx[i], kernel_idx[i]) → [(signal image, its partners' indices, pair numbers)]."""
    order = np.argsort(signal_idx, kind="stable")
    starts = np.flatnonzero(np.diff(signal_idx[order], prepend=-1))
    return [(int(signal_idx[order[a]]), kernel_idx[order[a:b]], order[a:b])
            for a, b in zip(starts, [*starts[1:], len(order)])]


class ScoringEngine:
    """Eq. 7 scores of a model for query × gallery pairs, with the per-image work done once.

    Args:
      model: a model of reid_tf.model.build_model, any preset (its layers are used, not copied).
      pair_batch: pairs per step of the head (BN of conv4 → logits) and of `score_pairs`.
      kernel_block: partner images per correlation step (one signal × kernel_block pairs; larger
        makes the matmul more efficient and its (C, R, kernel_block·P) output bigger).
      image_batch: images per step of the per-image network.
      max_buffer_pairs: pairs whose conv4 pre-activations (5 KB each) are held at once; more pairs
        are scored in chunks of queries (the gallery patches are then rebuilt per chunk).
      workers: threads for the correlation steps (default: one per CPU core), each with a
        single-threaded BLAS; 1 = the calling thread with NumPy's BLAS as configured.
    Example:
      >>> engine = ScoringEngine(build_model("l23"))
      >>> out = engine.score_matrix(query_images, gallery_images)  # out["score"]: (Q, G)
      >>> ranking = np.argsort(-out["score"], axis=1)
    """

    def __init__(self, model: keras.Model, pair_batch: int = 256, kernel_block: int = 64,
                 image_batch: int = 64, max_buffer_pairs: int = 100_000, workers: int | None = None):
        self.model = model
        parts = structure(model)  # the encoder and head pieces, found by reid_tf.model
        self.encoder = encoder_of(model)
        self.workers = int(workers or os.cpu_count() or 1)
        self.pair_batch, self.kernel_block = int(pair_batch), int(kernel_block)
        self.image_batch, self.max_buffer_pairs = int(image_batch), int(max_buffer_pairs)
        self.levels = list(parts.levels)
        self.trunk, self.csn, self.similarity = parts.trunk, parts.csn_parts, parts.similarity
        self.pools, self.after_conv4 = parts.pools, parts.after_conv4
        score = parts.score
        self.use_distance, self.lam, self.eps = bool(score.use_distance), float(score.lam), float(score.eps)
        self.conv4 = parts.conv4
        if self.conv4.kernel_size != 1 or self.conv4.pool:
            raise ValueError("the pair factorisation needs conv4 to be a 1×1 convolution without pooling")
        self.grid = tuple(self.conv4.output.shape[1:3])  # (10, 4)
        self.stats = {"pairs_evaluated": 0}  # pairs that went through Eq. 2 and the head
        self._features_fn = tf.function(self._features)
        self._head_fn = tf.function(self._head)
        self._pairs_fn = tf.function(self._pairs_pre)

    # ---- what depends on one image --------------------------------------------------------
    def _features(self, images):
        out = self.encoder(images, training=False)
        return ({j: out[f"map_{j}"] for j in self.levels}, {j: out[f"parts_{j}"] for j in self.levels},
                out["embedding"])

    def image_features(self, images) -> ImageFeatures:
        """images (N, 160, 60, 3) float32 in [0, 1] → ImageFeatures, in batches of image_batch."""
        images = np.asarray(images, dtype=np.float32)
        maps, parts, embedding = {j: [] for j in self.levels}, {j: [] for j in self.levels}, []
        for start in range(0, len(images), self.image_batch):
            batch = images[start:start + self.image_batch]
            m, p, e = self._features_fn(tf.constant(_pad_rows(batch, self.image_batch)))
            for j in self.levels:
                maps[j].append(m[j].numpy()[:len(batch)])
                parts[j].append(p[j].numpy()[:len(batch)])
            embedding.append(e.numpy()[:len(batch)])
        if not embedding:
            raise ValueError("no images")
        return ImageFeatures({j: np.concatenate(maps[j]) for j in self.levels},
                             {j: np.concatenate(parts[j]) for j in self.levels}, np.concatenate(embedding))

    def _as_features(self, images_or_features) -> ImageFeatures:
        if isinstance(images_or_features, ImageFeatures):
            return images_or_features
        return self.image_features(images_or_features)

    # ---- d (Eq. 5) for all pairs -----------------------------------------------------------
    @staticmethod
    def distance_matrix(emb_q: np.ndarray, emb_g: np.ndarray, chunk: int = 64) -> np.ndarray:
        """d[q, g] = ‖r_q − r_g‖ (Q, G) by exact differences, the model's EmbeddingDistance.

        (The Gram form sqrt(2 − 2 r_q·r_g) loses ~1e-4 to cancellation at small d, which Eq. 7's
        λ/(d + ε) magnifies; differences cost 3·256 FLOPs a pair, nothing next to Eq. 2.)
        """
        g = tf.constant(emb_g)[None]  # (1, G, D)
        rows = [losses.embedding_distance(tf.constant(emb_q[s:s + chunk])[:, None], g).numpy()
                for s in range(0, len(emb_q), chunk)]  # (chunk, G) each
        return np.concatenate(rows).astype(np.float32)

    # ---- Eq. 2 + pooling + conv4, grouped by signal image -----------------------------------
    def _level_geometry(self, j: int, map_hw: tuple[int, int]):
        """(part size f, pool window 2^n) of level j, whose maps are map_hw = (H, W)."""
        H, W = map_hw
        pool = 2 ** len(self.pools[j])
        if (-(-H // pool), -(-W // pool)) != self.grid:
            raise ValueError(f"level {j}: {H}×{W} pooled by {pool} is not the grid {self.grid}")
        return self.csn[j].part_size, pool

    def _direction_weights(self, direction: int) -> dict[int, np.ndarray]:
        """Rows of conv4's kernel that read one direction of each level, (P, C, 32) per level.

        The model concatenates per level [x_a * parts_b (P·C channels), x_b * parts_a (P·C)]
        (CSN.similarity), levels in order; direction 0: query map (image_a), 1: gallery map.
        """
        # Variable.numpy(): np.array(variable) (what convert_to_numpy does) warns under NumPy 2 (copy=).
        kernel = self.conv4.conv.kernel.numpy()[0, 0]  # (C_in, 32)
        weights, offset = {}, 0
        for j in self.levels:
            P, C = self.csn[j].num_parts, int(self.trunk[j - 1].filters)
            start = offset + direction * P * C
            weights[j] = kernel[start:start + P * C].reshape(P, C, -1)  # (P·C, O) -> (P, C, O)
            offset += 2 * P * C
        if offset != kernel.shape[0]:
            raise ValueError(f"conv4 reads {kernel.shape[0]} channels, the levels give {offset}")
        return weights

    def _accumulate(self, signal: ImageFeatures, kernel: ImageFeatures, signal_idx, kernel_idx,
                    weights, pre: np.ndarray):
        """pre[i] += one direction's share of conv4 for pair i = (signal_idx[i], kernel_idx[i])."""
        geometry = {j: self._level_geometry(j, signal.maps[j].shape[1:3]) for j in self.levels}
        kmats = {j: kernel_matrix(kernel.parts[j]) for j in self.levels}  # (C, f·f, N·P) per level
        gh, gw = self.grid

        def one_signal(group):  # every pair of one signal image; the groups' rows of pre are disjoint
            s, partners, rows = group
            patches = {j: signal_patches_numpy(signal.maps[j][s], (f, f), pool)
                       for j, (f, pool) in geometry.items()}
            for k0 in range(0, len(partners), self.kernel_block):
                ks = partners[k0:k0 + self.kernel_block]
                share = 0.0
                for j, (_, pool) in geometry.items():
                    P = self.csn[j].num_parts
                    cols = (ks[:, None] * P + np.arange(P)).reshape(-1)  # columns (k, p)
                    pooled = correlate_and_pool(patches[j], np.take(kmats[j], cols, axis=2),
                                                signal.maps[j].shape[1:3], pool)  # (C, gh·gw, k·P)
                    C = pooled.shape[0]
                    # Σ over (c, p) with conv4's rows: (C, cells, k, P) · (P, C, O) -> (cells, k, O)
                    share = share + np.tensordot(pooled.reshape(C, gh * gw, len(ks), P), weights[j],
                                                 axes=([0, 3], [1, 0]))
                pre[rows[k0:k0 + len(ks)]] += share.transpose(1, 0, 2).reshape(len(ks), gh, gw, -1)

        # Parallel over signal images, each worker with a single-threaded BLAS (reid_tf.parallel says why).
        parallel_map(one_signal, _groups(signal_idx, kernel_idx), self.workers)

    def _head(self, pre):
        """conv4 pre-activation (B, 10, 4, O) → BN, ReLU, conv5, conv6, GAP, logits; → p_match (B,)."""
        x = pre + self.conv4.conv.bias if self.conv4.conv.use_bias else pre
        x = keras.ops.relu(self.conv4.bn(x, training=False))
        for layer in self.after_conv4:  # conv5, conv6, GAP, logits, p(match)
            x = layer(x, training=False)
        return x

    def _p_match(self, pre: np.ndarray) -> np.ndarray:
        out = [self._head_fn(tf.constant(_pad_rows(pre[s:s + self.pair_batch], self.pair_batch))).numpy()
               for s in range(0, len(pre), self.pair_batch)]
        return np.concatenate(out)[:len(pre)]

    def pair_p_match(self, fq: ImageFeatures, fg: ImageFeatures, q_idx, g_idx) -> np.ndarray:
        """p(match) of the pairs (query q_idx[i] as image_a, gallery g_idx[i] as image_b), (n,)."""
        q_idx, g_idx = np.asarray(q_idx, np.int64), np.asarray(g_idx, np.int64)
        pre = np.zeros((len(q_idx), *self.grid, self.conv4.filters), np.float32)
        self._accumulate(fq, fg, q_idx, g_idx, self._direction_weights(0), pre)  # x_q * parts_g
        self._accumulate(fg, fq, g_idx, q_idx, self._direction_weights(1), pre)  # x_g * parts_q
        self.stats["pairs_evaluated"] += len(q_idx)
        return self._p_match(pre)

    def score(self, p_match: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """Eq. 7 (or p(match) alone for the "cls" preset), as the model's FinalScore."""
        if not self.use_distance:
            return p_match.copy()
        return np.asarray(losses.final_score(p_match, distance, self.lam, self.eps), np.float32)

    # ---- public API -----------------------------------------------------------------------
    def score_matrix(self, query, gallery, shortlist: int | None = None) -> dict[str, np.ndarray]:
        """Eq. 7 for every query × gallery pair; query = the model's image_a, gallery = image_b.

        Args:
          query, gallery: images (N, 160, 60, 3) float32 in [0, 1], or their ImageFeatures.
          shortlist: K → two stages: rank each query's gallery by d alone, then run the network only
            on its K nearest gallery images (Q·K pairs); the other pairs get p_match = score = −inf,
            so they rank below every shortlisted one. None (or K ≥ G): every pair.
        Returns:
          dict of (Q, G) arrays: p_match, distance (for every pair), score (float32); evaluated (bool).
        """
        fq, fg = self._as_features(query), self._as_features(gallery)
        Q, G = len(fq), len(fg)
        distance = self.distance_matrix(fq.embedding, fg.embedding)
        evaluated = np.ones((Q, G), bool)
        if shortlist is not None and shortlist < G:
            if shortlist < 1:
                raise ValueError(f"shortlist must be ≥ 1, got {shortlist}")
            nearest = np.argsort(distance, axis=1, kind="stable")[:, :shortlist]  # (Q, K)
            evaluated[:] = False
            np.put_along_axis(evaluated, nearest, True, axis=1)
        p_match = np.full((Q, G), -np.inf, np.float32)
        # Chunks of whole queries with at most max_buffer_pairs pairs each (at least one query).
        ends = np.cumsum(evaluated.sum(axis=1))
        start = 0
        while start < Q:
            done = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, done + self.max_buffer_pairs, side="right")))
            q_idx, g_idx = np.nonzero(evaluated[start:stop])
            p_match[q_idx + start, g_idx] = self.pair_p_match(fq, fg, q_idx + start, g_idx)
            start = stop
        score = np.where(evaluated, self.score(np.where(evaluated, p_match, 0), distance), -np.inf)
        return {"p_match": p_match, "distance": distance, "score": score.astype(np.float32),
                "evaluated": evaluated}

    def _pairs_pre(self, maps_a, maps_b, parts_a, parts_b):
        """Aligned pairs, the model's own path: CSN.similarity, pooling, concat, conv4 (pre-BN)."""
        pooled = []
        for j in self.levels:
            s = self.similarity[j]([maps_a[j], maps_b[j], parts_a[j], parts_b[j]])
            for pool in self.pools[j]:
                s = pool(s)
            pooled.append(s)
        return self.conv4.conv(pooled[0] if len(pooled) == 1 else tf.concat(pooled, axis=-1))

    def score_pairs(self, images_a, images_b) -> dict[str, np.ndarray]:
        """Eq. 7 for aligned pairs (images_a[i], images_b[i]): images or ImageFeatures; (N,) arrays."""
        fa, fb = self._as_features(images_a), self._as_features(images_b)
        if len(fa) != len(fb):
            raise ValueError(f"score_pairs needs as many a as b images, got {len(fa)} and {len(fb)}")
        n, B = len(fa), self.pair_batch
        pre = []
        for start in range(0, n, B):
            args = [{j: tf.constant(_pad_rows(x[j][start:start + B], B)) for j in self.levels}
                    for x in (fa.maps, fb.maps, fa.parts, fb.parts)]
            pre.append(self._pairs_fn(*args).numpy()[:min(B, n - start)])
        p_match = self._p_match(np.concatenate(pre))
        self.stats["pairs_evaluated"] += n
        distance = losses.embedding_distance(tf.constant(fa.embedding), tf.constant(fb.embedding)).numpy()
        return {"p_match": p_match, "distance": distance, "score": self.score(p_match, distance)}
