"""Rank a gallery with a trained model: `python -m reid_tf.rank` and the `Ranker` API.

    python -m reid_tf.rank --model=runs/x --query=IMG_OR_DIR --gallery=DIR --top=10 --out=DIR

Every query image is ranked against every gallery image by Eq. 7 (p(match) + λ / (d + ε)) with
`reid_tf.scoring.ScoringEngine`: each image's network (conv1–3, STN parts, embedding) runs once, only
Eq. 2 and the head run per pair. The query is the model's image_a and a gallery image its image_b,
as in the test protocol (p(match) is not symmetric).

Images: any size and format training reads (PNG, BMP, JPEG), found in folders searched recursively
and decoded and resized to 160 × 60 as training does (`reid_tf.images`: find_images, read_images).
An unreadable or truncated file is named in a warning and skipped (`bad_images="stop"`: an error
instead).

Two-stage scoring (`shortlist=K`, by `reid_tf.shortlist`): stage 1 orders each query's gallery by d
alone (Eq. 5, from the embeddings), stage 2 runs the network on its K nearest images only; the rest
rank below them. The
default (`shortlist=None`) is exhaustive up to `config.RANK_SHORTLIST_ABOVE` gallery images and
K = `config.SHORTLIST_K` above; why those numbers: docs/RESULTS.md "Ranking and two-stage scoring".

Feature cache (`cache_dir`, `reid_tf.feature_cache`): a gallery image's features are stored once
per (model weights, file bytes), so a second query against the same gallery reads them instead of
running the network, and an added or changed image is the only one computed. Exhaustive ranking
streams the gallery through memory in chunks of `gallery_chunk` images; the shortlist reads the
embeddings of all and the features of the images some query has among its K nearest, each once,
in blocks of `gallery_chunk`.

Outputs of the command in --out: ranking.json (per query the top-k gallery paths with score,
p_match and d), one ranked-results picture per query and index.html (`reid_tf.ranked_results`).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from absl import flags, logging

from reid_tf import cli, config, feature_cache, fileio
from reid_tf.datasets.file_names import identity_from_name
from reid_tf.feature_cache import CachedFeatures, FeatureCache
from reid_tf.images import BAD_IMAGES, IMAGE_SUFFIXES, find_images, read_images
from reid_tf.progress import Progress

if TYPE_CHECKING:  # scoring loads TensorFlow, which the command's --help does not need
    from reid_tf.scoring import ImageFeatures


# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Ranking:
    """Each query's top-k gallery images, best first: (Q, k) arrays.

    Attributes:
      index: gallery positions; score: Eq. 7 (p(match) alone for "cls" models); p_match; distance (d).
      shortlist: K of the two-stage scoring, or None when every pair was scored.
    """

    index: np.ndarray
    score: np.ndarray
    p_match: np.ndarray
    distance: np.ndarray
    shortlist: int | None = None


def _best(index: np.ndarray, out: dict[str, np.ndarray], top: int, best: Ranking | None = None) -> Ranking:
    """Top-`top` per row of scored columns `index` ((n,) shared by every row, or (Q, n)), merged with
    `best`: descending score, then ascending gallery position, i.e. the order of a stable argsort of
    −score over the whole gallery."""
    cand = {"index": np.broadcast_to(index, out["score"].shape),
            **{k: out[k] for k in ("score", "p_match", "distance")}}
    if best is not None:
        cand = {k: np.concatenate([getattr(best, k), v], axis=1) for k, v in cand.items()}
    order = np.lexsort((cand["index"], -cand["score"]), axis=-1)[:, :top]  # (Q, top)
    return Ranking(*(np.take_along_axis(cand[k], order, axis=1) for k in ("index", "score", "p_match", "distance")))


class Ranker:
    """Rank gallery images for query images by Eq. 7 with a trained reid_tf model.

    Args:
      model: a network of `reid_tf.model.build_model` (any preset), e.g. the model.keras training writes.
      cache_dir: where `encode_files` keeps per-image features (None: in memory only).
      gallery_chunk: gallery images scored (and held in memory) at once.
      **engine_kwargs: passed to `reid_tf.scoring.ScoringEngine`.
    Example:
      >>> ranker = Ranker.from_model("runs/x/model.keras")
      >>> gallery = ranker.encode(gallery_images)   # (G, 160, 60, 3) float in [0, 1]
      >>> ranking = ranker.rank(query_images, gallery, top=10)
      >>> ranking.index[0], ranking.score[0]        # query 0's best 10 gallery positions, scores
    """

    def __init__(self, model, cache_dir: str | None = None, gallery_chunk: int = 1024, **engine_kwargs):
        from reid_tf.scoring import ScoringEngine

        try:
            self.engine = ScoringEngine(model, **engine_kwargs)
        except (ValueError, KeyError) as e:  # no encoder / pair head of reid_tf.model
            raise cli.UsageError(f"{getattr(model, 'name', model)} is not a reid_tf network ({e})") from None
        self.model, self.gallery_chunk = model, int(gallery_chunk)
        self.cache = FeatureCache.usable(cache_dir, feature_cache.model_key(model)) if cache_dir else None

    @classmethod
    def from_model(cls, path: str, **kwargs) -> "Ranker":
        """A Ranker of a saved network: a .keras file, or a training workdir holding model.keras."""
        from reid_tf.run_folder import load_network

        return cls(load_network(path), **kwargs)

    # ---- features ----------------------------------------------------------------------------
    def encode(self, images) -> "ImageFeatures":
        """Images (N, 160, 60, 3) float in [0, 1] → their ImageFeatures (what `rank` reuses)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != (config.INPUT_HEIGHT, config.INPUT_WIDTH, config.INPUT_CHANNELS):
            raise ValueError(f"images must be (N, {config.INPUT_HEIGHT}, {config.INPUT_WIDTH}, 3), got {images.shape}")
        if not len(images):
            raise ValueError("no images to encode")
        return self.engine.image_features(images)

    def _features(self, x):
        return x if hasattr(x, "take") and hasattr(x, "embedding") else self.encode(x)

    def encode_files(self, paths: Sequence[str], bad_images: str = "skip", what: str = "gallery",
                     chunk: int = 256) -> tuple[object, list[int]]:
        """Features of image files, through the cache when there is one.

        Returns (features, kept): ImageFeatures (no cache) or CachedFeatures (None if no image could
        be read), and the positions in `paths` of the images read, in the features' order.
        """
        # keys: "" = to encode (no cache), None = unreadable; cached: key -> embedding of the hits
        keys, cached = self.cache.look_up(paths, bad_images) if self.cache is not None else ([""] * len(paths), {})
        todo = [i for i, k in enumerate(keys) if k == "" or (k and k not in cached)]
        if self.cache is not None:
            readable = sum(k is not None for k in keys)
            logging.info("%s: %d images, %d of them in the feature cache %s%s", what, readable,
                         readable - len(todo), self.cache.dir, f"; encoding {len(todo)}" if todo else "")
        progress, encoded = Progress(f"encoding {what}", len(todo), "images"), []
        for s in range(0, len(todo), chunk):
            batch = todo[s:s + chunk]
            images, ok = read_images([paths[i] for i in batch], bad_images)
            for i in set(range(len(batch))) - set(ok):
                keys[batch[i]] = None
            if ok:
                arrays = feature_cache.to_arrays(self.encode(images))
                if self.cache is None:
                    encoded.append(arrays)
                for row, i in enumerate(ok):
                    if self.cache is not None:
                        self.cache.save(keys[batch[i]], {n: a[row] for n, a in arrays.items()})
            progress.update(len(batch))
        kept = [i for i, k in enumerate(keys) if k is not None]
        if not kept:
            return None, []
        if self.cache is None:
            return feature_cache.from_arrays(encoded, np.concatenate), kept
        return CachedFeatures(self.cache, [keys[i] for i in kept], cached), kept

    # ---- ranking -----------------------------------------------------------------------------
    def shortlist_size(self, gallery_size: int, top: int, shortlist: int | None = None) -> int | None:
        """K of the two-stage scoring for a gallery, or None for exhaustive scoring.

        shortlist None: the default (exhaustive up to config.RANK_SHORTLIST_ABOVE images, else
        config.SHORTLIST_K); 0: exhaustive; K > 0: K. K is raised to `top`, so every shown
        image was scored by Eq. 7.
        """
        if shortlist is None:
            shortlist = config.SHORTLIST_K if gallery_size > config.RANK_SHORTLIST_ABOVE else 0
        if shortlist < 0:
            raise ValueError(f"shortlist must be ≥ 0, got {shortlist}")
        return None if shortlist == 0 else min(max(int(shortlist), top), gallery_size)

    def rank(self, query, gallery, top: int = 10, shortlist: int | None = None,
             progress: Callable[[int], None] | None = None) -> Ranking:
        """Each query's `top` best gallery images by Eq. 7.

        Args:
          query, gallery: images (N, 160, 60, 3) float in [0, 1], or features (`encode`, `encode_files`).
          top: how many gallery images per query (at most the gallery's size).
          shortlist: see `shortlist_size`.
          progress: called with the number of pairs just scored.
        Returns: a Ranking; its order is that of ScoringEngine.score_matrix (ties: lower gallery
          position first).
        """
        if gallery is None or not len(gallery):
            raise cli.UsageError("the gallery is empty")
        fq, fg = self._features(query), self._features(gallery)
        if top < 1:
            raise ValueError(f"top must be ≥ 1, got {top}")
        top = min(int(top), len(fg))
        K = self.shortlist_size(len(fg), top, shortlist)
        progress = progress or (lambda n: None)
        ranking = self._exhaustive(fq, fg, top, progress) if K is None else self._shortlisted(fq, fg, top, K, progress)
        ranking.shortlist = K
        return ranking

    def _exhaustive(self, fq, fg, top: int, progress) -> Ranking:
        best = None
        for start in range(0, len(fg), self.gallery_chunk):
            index = np.arange(start, min(start + self.gallery_chunk, len(fg)))
            best = _best(index, self.engine.score_matrix(fq, fg.take(index)), top, best)
            progress(len(fq) * len(index))
        return best

    def _shortlisted(self, fq, fg, top: int, K: int, progress) -> Ranking:
        """The two-stage scoring of reid_tf.shortlist on these features: each gallery image's
        features are read once (from the cache, or memory), in blocks of gallery_chunk images."""
        from reid_tf.shortlist import score_features

        result = score_features(self.engine, fq, fg.embedding, fg.take, K, block_size=self.gallery_chunk,
                                progress=progress)
        return _best(result.shortlist, {"score": result.score, "p_match": result.p_match,
                                        "distance": result.distance}, top)


# ---------------------------------------------------------------------------------------------
# The command
def ranking_json(ranking: Ranking, query_paths: Sequence[str], gallery_paths: Sequence[str],
                 identity_pattern: str | None = None, pictures: Sequence[str] | None = None,
                 identities: tuple[Sequence[int], Sequence[int]] | None = None, **header) -> dict:
    """The body of ranking.json.

    Identities (and whether each result is a match) from `identities` = (query ids, gallery ids)
    when given (a dataset's records), else where the file names give them; None otherwise.
    """
    def ids(paths, given):
        return [int(i) for i in given] if given is not None else [identity_from_name(p, identity_pattern) for p in paths]

    q_ids, g_ids = ids(query_paths, identities and identities[0]), ids(gallery_paths, identities and identities[1])
    queries = []
    for q, path in enumerate(query_paths):
        q_id = q_ids[q]
        results = []
        for r, g in enumerate(ranking.index[q]):
            g_id = g_ids[g]
            results.append({"rank": r + 1, "path": gallery_paths[g], "score": float(ranking.score[q, r]),
                            "p_match": float(ranking.p_match[q, r]), "distance": float(ranking.distance[q, r]),
                            "identity": g_id,
                            "match": None if q_id is None or g_id is None else bool(q_id == g_id)})
        entry = {"query": path, "identity": q_id, "results": results}
        if pictures is not None:
            entry["picture"] = pictures[q]
        queries.append(entry)
    return {**header, "shortlist": ranking.shortlist, "queries": queries}


def run(model: str, query: str, gallery: str, out: str, top: int = 10, shortlist: int | None = None,
        cache: str | None = None, bad_images: str = "skip", identity_pattern: str | None = None,
        pictures: bool = True) -> dict:
    """What `python -m reid_tf.rank` does; returns the ranking.json body."""
    from reid_tf import ranked_results

    t0 = time.monotonic()
    exclude = [out, cache]
    query_paths, gallery_paths = find_images(query, "query", exclude), find_images(gallery, "gallery", exclude)
    if not gallery_paths:
        raise cli.UsageError(f"gallery {gallery}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders")
    if not query_paths:
        raise cli.UsageError(f"query {query}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders")
    ranker = Ranker.from_model(model, cache_dir=cache)
    fg, kept_g = ranker.encode_files(gallery_paths, bad_images, "gallery")
    if not kept_g:
        raise cli.UsageError(f"gallery {gallery}: none of its {len(gallery_paths)} images could be read")
    images_q, kept_q = read_images(query_paths, bad_images)
    if not kept_q:
        raise cli.UsageError(f"query {query}: none of its {len(query_paths)} images could be read")
    gallery_paths = [gallery_paths[i] for i in kept_g]
    query_paths = [query_paths[i] for i in kept_q]
    fq = ranker.encode(images_q)
    t_rank = time.monotonic()
    K = ranker.shortlist_size(len(fg), min(top, len(fg)), shortlist)
    pairs = len(fq) * (K or len(fg))
    progress = Progress("ranking", pairs, "pairs")
    ranking = ranker.rank(fq, fg, top, shortlist, progress=progress.update)
    rank_seconds = time.monotonic() - t_rank
    logging.info("ranked %d %s against %d gallery images (%s) in %.2f s, %.0f pairs/s",
                 len(fq), "query" if len(fq) == 1 else "queries", len(fg), f"shortlist K = {K}" if K else "exhaustive", rank_seconds,
                 pairs / max(rank_seconds, 1e-9))

    os.makedirs(out, exist_ok=True)
    names = ranked_results.picture_names(query_paths) if pictures else None
    body = ranking_json(ranking, query_paths, gallery_paths, identity_pattern, names, model=model,
                        gallery=gallery, gallery_images=len(gallery_paths), top=int(ranking.index.shape[1]),
                        seconds={"total": time.monotonic() - t0, "ranking": rank_seconds})
    if pictures:
        ranked_results.write_all(out, body, images_q)
    fileio.write_json(os.path.join(out, "ranking.json"), body)
    return body


def define_flags() -> None:
    flags.DEFINE_string("model", None, "model.keras written by reid_tf.train, or its workdir")
    flags.DEFINE_string("query", None, "a query image, or a folder of them (searched recursively)")
    flags.DEFINE_string("gallery", None, "folder of gallery images (searched recursively)")
    flags.DEFINE_string("out", None, "output folder: ranking.json, ranked/*.png, index.html")
    flags.DEFINE_integer("top", 10, "gallery images shown per query")
    flags.DEFINE_integer("shortlist", None, "two-stage scoring: Eq. 7 on each query's K nearest by d; "
                         f"0 = every pair; default: exhaustive up to {config.RANK_SHORTLIST_ABOVE} gallery "
                         f"images, K = {config.SHORTLIST_K} above")
    flags.DEFINE_string("cache", feature_cache.default_dir(), "folder of cached gallery features ('' = no cache)")
    flags.DEFINE_enum("bad_images", "skip", list(BAD_IMAGES), "an unreadable image: skip it with a "
                      "warning, or stop")
    flags.DEFINE_string("identity_regex", None, "regular expression whose first group, on a file name "
                        "without suffix, is the identity (default: the datasets' naming)")
    flags.DEFINE_boolean("pictures", True, "write the ranked-results pictures and index.html")


def main(argv):
    del argv
    f = flags.FLAGS
    missing = [n for n in ("model", "query", "gallery", "out") if not f[n].value]
    if missing:
        raise cli.UsageError(f"missing --{' --'.join(missing)} — usage: python -m reid_tf.rank --model=M "
                             "--query=Q --gallery=G --out=DIR")
    body = run(f.model, f.query, f.gallery, f.out, f.top, f.shortlist, f.cache or None, f.bad_images,
               f.identity_regex, f.pictures)
    logging.info("wrote %s%s", os.path.join(f.out, "ranking.json"),
                 f" and {os.path.join(f.out, 'index.html')}" if f.pictures else "")
    for q in body["queries"][:3]:
        best = q["results"][0]
        logging.info("%s → #1 %s (score %.3f, p_match %.3f, d %.3f)", q["query"], best["path"], best["score"],
                     best["p_match"], best["distance"])


if __name__ == "__main__":
    define_flags()
    cli.run(main)
