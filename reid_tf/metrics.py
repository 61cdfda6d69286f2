"""Single-shot CMC, rank-k accuracy and mAP (§4.1 "Cumulative Matching Characteristics").

§4.1: "There are only one query image and one matched image in the gallery for each testing
identity, i.e., single shot setting. Rank-k accuracy stands for the accuracy that the matched image
in the gallery is included in the top-k answers based on the similarity score." Tables 2–4 report
rank-1/5/10, averaged over 20 CUHK03 testsets or 10 random trials (DESIGN "Protocols").

Conventions, for a score matrix (Q, G) where higher means more similar:

* Rank of a query = the rank of its best-ranked true match (several true matches are allowed;
  single-shot is the case of exactly one). A query with no true match in the gallery is an error.
* Ties, "pessimistic" (the default): the true match's rank = 1 + the number of gallery items of
  another identity whose score is ≥ the true match's score. Ties are broken against the model, so
  a degenerate scorer can never look good: a constant scorer gets rank G for every query, i.e.
  curve = (0, …, 0, 1). Items of the same identity never push a true match down.
* Ties, "expected" (`cmc(..., ties="expected")`): the curve averaged over all orders of the tied
  items (random tie-breaking, in expectation): with n items of other identities strictly above the
  best true score, and t others and m true matches tied with it, P(rank ≤ k) = 1 − C(t, j)/C(t+m, j),
  j = k − n. A constant scorer then gets exactly the chance level, curve[k−1] = k/G.
  Without ties the two conventions agree.
* mAP: the usual (uninterpolated) average precision — the mean, over a query's true matches, of the
  precision at each match's position in the ranked gallery — averaged over queries, with ties
  pessimistic as above: inside a group of equal scores the other identities come first.

All functions are vectorised numpy: Q = G = 1000 takes well under a second.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from absl import logging
from scipy.special import gammaln

from reid_tf import config
from reid_tf.datasets.base import JUNK  # Market-1501's junk boxes: never counted

TIES = ("pessimistic", "expected")


def _validate(scores, query_ids, gallery_ids) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and values; return the scores (Q, G) float64 and the match mask (Q, G) bool."""
    scores = np.asarray(scores, dtype=np.float64)
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    if scores.ndim != 2 or query_ids.ndim != 1 or gallery_ids.ndim != 1:
        raise ValueError(f"need scores (Q, G) and 1-D ids, got scores {scores.shape}, "
                         f"query_ids {query_ids.shape}, gallery_ids {gallery_ids.shape}")
    if scores.shape != (len(query_ids), len(gallery_ids)):
        raise ValueError(f"scores {scores.shape} do not match {len(query_ids)} queries × "
                         f"{len(gallery_ids)} gallery items")
    if scores.size == 0:
        raise ValueError(f"empty score matrix {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"scores contain {int(np.isnan(scores).sum())} NaN value(s)")
    matches = query_ids[:, None] == gallery_ids[None, :]  # (Q, G)
    missing = int((~matches.any(axis=1)).sum())
    if missing:
        raise ValueError(f"{missing} of {len(query_ids)} queries have no true match in the gallery "
                         "(single-shot CMC needs every query identity in the gallery)")
    return scores, matches


def match_ranks(scores, query_ids, gallery_ids) -> np.ndarray:
    """1-based rank (Q,) int of each query's best true match, ties pessimistic (module docstring)."""
    scores, matches = _validate(scores, query_ids, gallery_ids)
    best = np.where(matches, scores, -np.inf).max(axis=1)  # (Q,) best true-match score
    return 1 + ((scores >= best[:, None]) & ~matches).sum(axis=1)


def cmc(scores, query_ids, gallery_ids, max_rank: int | None = None,
        ties: str = "pessimistic") -> np.ndarray:
    """Cumulative match curve (§4.1): entry k−1 = fraction of queries whose true match is in the top k.

    Args:
      scores: (Q, G), higher = more similar (e.g. Eq. 7's score).
      query_ids: (Q,) identity of each query.
      gallery_ids: (G,) identity of each gallery item; every query identity must appear.
      max_rank: length of the curve (default G).
      ties: "pessimistic" (default) or "expected" — see the module docstring.
    Returns:
      (max_rank,) float64, non-decreasing, in [0, 1].
    Raises:
      ValueError: NaN scores, shape mismatch, or queries with no true match (the message says how many).
    """
    scores, matches = _validate(scores, query_ids, gallery_ids)
    max_rank = scores.shape[1] if max_rank is None else int(max_rank)
    if max_rank < 1:
        raise ValueError(f"max_rank must be ≥ 1, got {max_rank}")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    best = np.where(matches, scores, -np.inf).max(axis=1, keepdims=True)  # (Q, 1)
    above = (scores > best).sum(axis=1)  # (Q,) other identities strictly above (matches can't be)
    tied_others = ((scores == best) & ~matches).sum(axis=1)  # (Q,)
    if ties == "pessimistic":
        return _curve(1 + above + tied_others, max_rank)
    tied_matches = ((scores == best) & matches).sum(axis=1)  # (Q,) ≥ 1
    return _expected_curve(above, tied_others, tied_matches, max_rank)


def _expected_curve(above: np.ndarray, t: np.ndarray, m: np.ndarray, max_rank: int) -> np.ndarray:
    """Mean over queries of P(rank ≤ k) under random tie-breaking, k = 1..max_rank."""
    k = np.arange(1, max_rank + 1)[None, :]  # (1, K)
    j = k - above[:, None]  # (Q, K) places of the tie group inside the top k
    t, m = t[:, None], m[:, None]
    inside = np.clip(j, 0, t)  # C(t, j) = 0 for j > t: the first match is certainly in
    # P(the first j tied items are all of other identities) = C(t, j) / C(t + m, j)
    log_none = (gammaln(t + 1) - gammaln(t - inside + 1)
                - gammaln(t + m + 1) + gammaln(t + m - inside + 1))
    p = np.where(j <= 0, 0.0, np.where(j > t, 1.0, 1.0 - np.exp(log_none)))
    return p.mean(axis=0)


def rank_k(curve: np.ndarray, ks: Sequence[int] = config.RANKS) -> dict[int, float]:
    """Rank-k accuracies {k: curve[k − 1]} (Tables 2–4 report k = 1, 5, 10).

    A full curve (max_rank = G) reaches every match by rank G, so rank-k for k > G is its last
    value (a gallery of 6 has rank-10 = rank-6); a curve cut short by max_rank can't answer k > len.
    """
    curve = np.asarray(curve)
    for k in ks:
        if k < 1:
            raise ValueError(f"rank-{k}: ranks start at 1")
    return {int(k): float(curve[min(k, len(curve)) - 1]) for k in ks}


def _curve(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """CMC (max_rank,) from each query's 1-based rank of its first true match."""
    counts = np.bincount(np.minimum(ranks, max_rank + 1), minlength=max_rank + 2)
    return np.cumsum(counts[1:max_rank + 1]) / len(ranks)


def _ranked_hits(scores: np.ndarray, matches: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """(Q, G) bool: whether rank position 1..G of each query holds a true match. Each row is sorted
    by score descending and, inside a tie, non-matches first (the pessimistic rule of the module
    docstring); items not in `keep` go last and are never matches (the standard protocol's
    exclusions). The one ranking rule of CMC ranks and AP, single-shot and standard protocol."""
    keys = (matches, -scores) if keep is None else (matches, -scores, ~keep)
    order = np.lexsort(keys, axis=1)  # (Q, G); np.lexsort sorts by its last key first
    return np.take_along_axis(matches if keep is None else matches & keep, order, axis=1)


def _average_precision(hits: np.ndarray) -> np.ndarray:
    """Uninterpolated AP (Q,) of ranked hits (`_ranked_hits`): the mean of the precision at each
    true match; NaN for a row without one."""
    n = hits.sum(axis=1)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)  # (Q, G)
    return np.where(n > 0, (precision * hits).sum(axis=1) / np.maximum(n, 1), np.nan)


def average_precisions(scores, query_ids, gallery_ids) -> np.ndarray:
    """Average precision (Q,) of every query, ties pessimistic (module docstring)."""
    scores, matches = _validate(scores, query_ids, gallery_ids)
    return _average_precision(_ranked_hits(scores, matches))


def mean_average_precision(scores, query_ids, gallery_ids) -> float:
    """mAP over the queries (standard, uninterpolated AP; ties pessimistic); single-shot AP = 1/rank."""
    return float(average_precisions(scores, query_ids, gallery_ids).mean())


def spread(values) -> np.ndarray | float:
    """The one rule for the spread over trials (or draws), for every number reported: the sample
    standard deviation (ddof = 1) along axis 0, and 0 for a single value."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return np.zeros(values.shape[1:]) if values.ndim > 1 else 0.0
    std = values.std(axis=0, ddof=1)
    return std if values.ndim > 1 else float(std)


def summarize_trials(curves: Sequence[np.ndarray], ks: Sequence[int] = config.RANKS) -> dict:
    """Mean and spread over trials (§4.1: 20 CUHK03 testsets, 10 random trials otherwise).

    Args:
      curves: one CMC curve per trial; curves of different lengths are cut to the shortest.
      ks: the rank-k accuracies to summarise.
    Returns:
      {"trials": n, "mean_curve": (K,), "std_curve": (K,), "mean": {k: float}, "std": {k: float}},
      std being the sample standard deviation over trials (ddof = 1; 0 for a single trial).
    """
    if not curves:
        raise ValueError("no curves to summarise")
    length = min(len(c) for c in curves)
    if any(len(c) != length for c in curves):
        logging.info("summarize_trials: curves of lengths %s cut to %d ranks",
                     sorted({len(c) for c in curves}), length)
    stacked = np.stack([np.asarray(c, dtype=np.float64)[:length] for c in curves])  # (n, K)
    mean = stacked.mean(axis=0)
    std = spread(stacked)
    return {"trials": len(curves), "mean_curve": mean, "std_curve": std,
            "mean": rank_k(mean, ks), "std": rank_k(std, ks)}


# ---------------------------------------------------------------------------------------------
# The standard protocol of Market-1501 (Zheng et al., ICCV 2015), DukeMTMC-reID and CUHK03-NP.
def standard_protocol(scores, query_ids, query_cameras, gallery_ids, gallery_cameras,
                      max_rank: int | None = None, chunk: int = 256) -> dict:
    """CMC and mAP with every query ranked against the whole gallery (multi-shot, multi-camera).

    For each query, the gallery images of its identity taken by its camera and every junk image
    (identity −1) are removed from its ranking, as in the Market-1501 paper's code and every toolkit
    since; distractors (identity 0) stay, as non-matches. A true match is then an image of the
    query's identity from another camera. Ties are pessimistic, as in the rest of this module: among
    equal scores the non-matches rank first. A query with no true match left (its identity seen only
    by its own camera in the gallery) is skipped, counted in "skipped", as those toolkits do.
    AP is the uninterpolated average precision (the mean of the precision at each true match), as
    in torchreid and open-reid; the original MATLAB code averages adjacent precisions instead.

    Args:
      scores: (Q, G), higher = more similar.
      query_ids, query_cameras: (Q,); gallery_ids, gallery_cameras: (G,).
      max_rank: length of the curve (default G).
      chunk: queries sorted at once (memory ~ chunk × G × 25 bytes).
    Returns:
      {"curve": (max_rank,) CMC over the valid queries, "map": mAP, "ap": (Q,) AP (NaN if skipped),
       "first_match": (Q,) 1-based rank of the first true match (0 if skipped),
       "valid": (Q,) bool, "skipped": number of skipped queries}.
    Raises:
      ValueError: shape mismatch, NaN scores, or no query with a true match.
    """
    scores = np.asarray(scores)
    q_ids, q_cams = np.asarray(query_ids), np.asarray(query_cameras)
    g_ids, g_cams = np.asarray(gallery_ids), np.asarray(gallery_cameras)
    if scores.ndim != 2 or scores.shape != (len(q_ids), len(g_ids)) or len(q_cams) != len(q_ids) \
            or len(g_cams) != len(g_ids) or scores.size == 0:
        raise ValueError(f"need scores (Q, G) with Q = {len(q_ids)} query ids / {len(q_cams)} cameras and "
                         f"G = {len(g_ids)} gallery ids / {len(g_cams)} cameras; got scores {scores.shape}")
    G = scores.shape[1]
    max_rank = G if max_rank is None else int(max_rank)
    first = np.zeros(len(q_ids), np.int64)
    ap = np.full(len(q_ids), np.nan)
    for s in range(0, len(q_ids), chunk):
        block = np.asarray(scores[s:s + chunk], np.float64)  # (c, G)
        if np.isnan(block).any():
            raise ValueError(f"scores contain NaN values (queries {s}–{s + len(block) - 1})")
        same_id = q_ids[s:s + chunk, None] == g_ids[None, :]  # (c, G)
        keep = ~(same_id & (q_cams[s:s + chunk, None] == g_cams[None, :])) & (g_ids != JUNK)[None, :]
        hits = _ranked_hits(block, same_id, keep)  # (c, G) true match at each rank, excluded items last
        first[s:s + chunk] = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)
        ap[s:s + chunk] = _average_precision(hits)
    valid = first > 0
    if not valid.any():
        raise ValueError(f"none of the {len(q_ids)} queries has a true match in the gallery from another camera")
    return {"curve": _curve(first[valid], max_rank), "map": float(np.mean(ap[valid])),
            "ap": ap, "first_match": first, "valid": valid, "skipped": int((~valid).sum())}
