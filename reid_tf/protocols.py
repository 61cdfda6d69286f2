"""The test protocols: which test images are queries, which the gallery, and a network's CMC / mAP.

Three protocols, each defined once here and used by evaluation (reid_tf.evaluate), the validation
during training (reid_tf.callbacks.Validation), the shortlist study (reid_tf.shortlist), the
ranked-results pictures (reid_tf.visrank) and the accuracy curve (experiments/curve.py):

- "single_shot" (`single_shot`): the paper's §4.1 — "only one query image and one matched image in
  the gallery for each testing identity": a camera-A query and a camera-B gallery image per test
  identity (DESIGN "Protocols").
- "random_gallery" (`random_gallery_draws`): the test of [31], whose CUHK01 setting §4.1 follows (src/test.lua and
  src/doallTest.lua of InnovArul/personreid_normxcorr): per draw one random gallery image per
  identity from either camera, every other image a probe, CMC averaged over
  config.RANDOM_GALLERY_DRAWS draws.
- "standard" (`evaluate_standard`): the protocol of the standard benchmarks (Market-1501,
  DukeMTMC-reID, CUHK03-NP; reid_tf.metrics.standard_protocol) on their fixed query and gallery,
  scored in two stages (reid_tf.shortlist: Eq. 7 on each query's K nearest gallery images by d).

The network is scored by reid_tf.scoring.ScoringEngine, which loads TensorFlow: it is imported in
the functions that score, so that a command's --help or usage error does not wait for it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from absl import logging

from reid_tf import config, datasets, metrics
from reid_tf.datasets import Dataset, Record
from reid_tf.images import load_images

# The rankings of every protocol, by the score each reads (higher = more similar; d is negated):
# Eq. 7 (the paper's), p(match) alone and d alone.
RANKINGS = {"eq7": "score", "p_match": "p_match", "distance": "distance"}
# The protocols evaluate_network serves, chosen with --protocol (datasets of the paper's kind).
SINGLE_SHOT_PROTOCOLS = ("single_shot", "random_gallery")
PROTOCOL_TITLES = {
    "single_shot": "single-shot, camera-A query vs one camera-B image per identity (DESIGN \"Protocols\")",
    "random_gallery": "[31]'s test: one random gallery image per identity from either camera, every other "
             f"image a probe, mean over {config.RANDOM_GALLERY_DRAWS} gallery draws",
    # Not chosen with --protocol: the protocol of Market-1501, DukeMTMC-reID and CUHK03-NP, always theirs.
    "standard": "standard (Market-1501): every query against the gallery without same-camera matches "
                "and junk, Eq. 7 on the K nearest by d (reid_tf.shortlist)",
}


# ------------------------------------------------------------------------------------ single-shot
def single_shot(dataset: Dataset, identities: Iterable[int], trial: int, seed: int
                ) -> tuple[list[Record], list[Record]]:
    """The single-shot protocol of the paper's §4.1 (DESIGN "Protocols"): per identity one camera-0
    query and one camera-1 gallery image, drawn with (seed, trial, identity) where there are several.

    Returns (queries, gallery), aligned and in the order of `identities`; identities without an
    image in either camera are skipped with a warning.
    """
    queries, gallery, skipped = [], [], []
    for identity in identities:
        records = dataset.by_identity.get(identity, [])
        cams = [[r for r in records if r.camera == c] for c in (0, 1)]
        if not all(cams):
            skipped.append(identity)
            continue
        rng = np.random.default_rng([seed, trial, identity])
        queries.append(cams[0][rng.integers(len(cams[0]))])
        gallery.append(cams[1][rng.integers(len(cams[1]))])
    if skipped:
        logging.warning("%s: %d identities lack an image in camera 0 or 1, skipped: %s",
                        dataset.name, len(skipped), skipped[:10])
    return queries, gallery


def identities_of(records: Sequence[Record]) -> np.ndarray:
    """The identity of each record, as the label array the CMC and mAP compare."""
    return np.array([r.identity for r in records])


def single_shot_images(dataset: Dataset, identities: Iterable[int], trial: int, seed: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The single-shot draw (`single_shot`) read: (query images, gallery images, query identities,
    gallery identities)."""
    queries, gallery = single_shot(dataset, identities, trial, seed)
    return (load_images([q.path for q in queries]), load_images([g.path for g in gallery]),
            identities_of(queries), identities_of(gallery))


# ------------------------------------------------------------------------------------ [31]'s test
def random_gallery_draws(records: list[Record], seed: int, draws: int = config.RANDOM_GALLERY_DRAWS
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """[31]'s test protocol (src/test.lua, src/doallTest.lua of InnovArul/personreid_normxcorr):
    per draw, one image per identity, from either camera, is the gallery and every other image of
    every identity a probe. Returns, per draw, (probe positions, gallery positions) into records;
    the gallery in identity order, drawn from default_rng([seed, 4, draw])."""
    identities = identities_of(records)
    out = []
    for d in range(draws):
        rng = np.random.default_rng([seed, 4, d])
        gallery = np.array([rng.choice(np.flatnonzero(identities == i)) for i in np.unique(identities)])
        out.append((np.setdiff1d(np.arange(len(records)), gallery), gallery))
    return out


def camera_split(score: np.ndarray, q_ids: np.ndarray, q_cams: np.ndarray, g_ids: np.ndarray,
                 g_cams: np.ndarray) -> dict:
    """Top-1 (%) of one [31]-protocol draw for the probes whose gallery image of their identity is from
    their own camera ("same_camera", the easier kind) and from the other ("cross_camera"), with the
    number of probes of each kind."""
    gallery_camera = dict(zip(g_ids.tolist(), g_cams.tolist()))
    own = q_cams == np.array([gallery_camera[i] for i in q_ids.tolist()])
    return {kind: {"rank1": 100 * float(metrics.cmc(score[mask], q_ids[mask], g_ids, max_rank=1)[0])
                   if mask.any() else None, "probes": int(mask.sum())}
            for kind, mask in (("same_camera", own), ("cross_camera", ~own))}


# ------------------------------------------------------------------------------------ a network's CMC
def _add(out: dict, scores: dict, q_ids: np.ndarray, g_ids: np.ndarray) -> None:
    """Append the CMC curve and mAP of every ranking of one (queries × gallery) score dict."""
    for name, key in RANKINGS.items():
        s = -scores[key] if key == "distance" else scores[key]  # higher = more similar
        out[name]["curves"].append(metrics.cmc(s, q_ids, g_ids).tolist())
        out[name]["map"].append(float(metrics.mean_average_precision(s, q_ids, g_ids)))


def evaluate_network(network, dataset: Dataset, identities: list[int], trial: int,
                     seed: int, repeats: int = 1, protocol: str = "single_shot") -> dict:
    """CMC / mAP of `network` on the test identities under a protocol (PROTOCOL_TITLES).

    single_shot: repeat r draws its queries and gallery with seed + r (repeat 0 is the protocol's).
    random_gallery: every test image scored against every other once; each of the repeats ×
      RANDOM_GALLERY_DRAWS gallery draws is then read from that matrix (draw seed: seed + r).
    Returns {ranking: {"curves": [...], "map": [...]}} with one entry per draw.
    """
    from reid_tf.scoring import ScoringEngine  # loads TensorFlow: see the module docstring

    if protocol not in SINGLE_SHOT_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(SINGLE_SHOT_PROTOCOLS)} "
                         "(standard-protocol datasets: evaluate_standard)")
    engine = ScoringEngine(network)
    out = {name: {"curves": [], "map": []} for name in RANKINGS}
    if protocol == "random_gallery":
        records = datasets.records_of(dataset, identities)
        ids = identities_of(records)
        features = engine.image_features(load_images([r.path for r in records]))
        everything = engine.score_matrix(features, features)  # (N, N): image_a = probe, image_b = gallery
        cams, out["camera_split"] = np.array([r.camera for r in records]), []
        for r in range(repeats):
            for probes, gallery in random_gallery_draws(records, seed + r):
                scores = {k: everything[k][np.ix_(probes, gallery)] for k in RANKINGS.values()}
                _add(out, scores, ids[probes], ids[gallery])
                out["camera_split"].append(camera_split(scores["score"], ids[probes], cams[probes], ids[gallery],
                                                        cams[gallery]))
        return out
    for r in range(repeats):
        q_images, g_images, q_ids, g_ids = single_shot_images(dataset, identities, trial, seed + r)
        _add(out, engine.score_matrix(q_images, g_images), q_ids, g_ids)
    return out


# ------------------------------------------------------------------------------------ standard
def evaluate_standard(network, query: Sequence[Record], gallery: Sequence[Record],
                      k: int = config.SHORTLIST_K, **kwargs) -> dict:
    """The standard protocol (Market-1501 and since; reid_tf.metrics.standard_protocol) on a fixed
    query and gallery (records: path, identity, camera), scored in two stages
    (reid_tf.shortlist.score_shortlists: Eq. 7 on each query's K nearest gallery images by d; the
    "p_match" ranking re-orders that shortlist by p(match), "distance" ranks by d alone).

    Args:
      network: a network of reid_tf.model, or a ScoringEngine of one.
      kwargs: passed to score_shortlists (image_chunk, block_size, max_pairs).
    Returns the shape evaluate_network returns (one "repeat"), plus "standard": skipped queries,
    K, pairs scored, the numbers of queries and gallery images and the wall time per stage.
    """
    from reid_tf.scoring import ScoringEngine  # loads TensorFlow: see the module docstring
    from reid_tf.shortlist import score_shortlists

    engine = network if isinstance(network, ScoringEngine) else ScoringEngine(network)
    result = score_shortlists(engine, [r.path for r in query], [r.path for r in gallery], k, **kwargs)
    q_cams, g_cams = (np.array([r.camera for r in rs]) for rs in (query, gallery))
    out, skipped = {}, None
    for name, key in RANKINGS.items():
        m = metrics.standard_protocol(result.ranking(key), identities_of(query), q_cams, identities_of(gallery),
                                      g_cams)
        out[name] = {"curves": [m["curve"].tolist()], "map": [m["map"]]}
        skipped = m["skipped"] if skipped is None else skipped  # Eq. 7's, the first ranking
    out["standard"] = {"skipped_queries": skipped, "k": result.shortlist.shape[1], "pairs": result.pairs,
                       "queries": len(query), "gallery": len(gallery), "seconds": result.seconds}
    return out
