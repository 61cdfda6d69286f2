"""Rank a gallery with a trained model: `python -m reid_tf.rank` and the `Ranker` API (issue 12).

    python -m reid_tf.rank --model=runs/x --query=IMG_OR_DIR --gallery=DIR --top=10 --out=DIR

Every query image is ranked against every gallery image by Eq. 7 (p(match) + λ / (d + ε)) with
`reid_tf.scoring.ScoringEngine`: each image's network (conv1–3, STN parts, embedding) runs once, only
Eq. 2 and the head run per pair. The query is the model's image_a and a gallery image its image_b,
as in the test protocol (p(match) is not symmetric).

Images: any size and format training reads (PNG, BMP, JPEG), decoded and resized to 160 × 60 as
training does (`reid_tf.images`); folders are searched recursively, following links but never into
a folder already searched (a link loop such as `again -> .` adds nothing), and a file reached twice
is listed once. An unreadable or truncated file is named in a warning and skipped
(`bad_images="stop"`: an error instead).

Two-stage scoring (`shortlist=K`, by `reid_tf.shortlist`): stage 1 orders each query's gallery by d
alone (Eq. 5, from the embeddings), stage 2 runs the network on its K nearest images only; the rest
rank below them. The
default (`shortlist=None`) is exhaustive up to `config.RANK_SHORTLIST_ABOVE` gallery images and
K = `config.RANK_SHORTLIST_K` above; why those numbers: docs/RESULTS.md "Ranking a gallery".

Feature cache (`cache_dir`): a gallery image's features (`ImageFeatures`: maps, parts, embedding;
0.44 MB per image for l23) are stored once per (model weights, file bytes), so a second query
against the same gallery reads them instead of running the network, and an added or changed image
is the only one computed. A damaged cache file is a cache miss (warned about, computed and written
again); a --cache that cannot be used is warned about and the ranking runs without one. Exhaustive
ranking streams the gallery through memory in chunks of
`gallery_chunk` images; the shortlist reads the embeddings of all and the features of the images
some query has among its K nearest, each once, in blocks of `gallery_chunk`.

Outputs of the command in --out: ranking.json (per query the top-k gallery paths with score,
p_match and d), one ranked-results picture per query and index.html (`reid_tf.ranked_results`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import time
import zipfile
from typing import Callable, Sequence

import numpy as np
from absl import flags, logging

from reid_tf import cli, config, fileio
from reid_tf.images import bad_image, read_images  # rank.read_images: its callers use that name too
from reid_tf.progress import Progress

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # what training's decoder reads
CACHE_FORMAT = "reid_tf-features-v1"  # part of every cache key: bump when the stored features change
BAD_IMAGES = ("skip", "stop")


class RankError(cli.UsageError):
    """A user error: the CLI prints its message as one line and exits non-zero (reid_tf.cli)."""


# ---------------------------------------------------------------------------------------------
# Files and images
def find_images(path: str, what: str = "gallery", exclude: Sequence[str] = ()) -> list[str]:
    """Image files (IMAGE_SUFFIXES, any case) of a file or a folder searched recursively, sorted.

    `exclude`: folders not to search (the command's own output and cache, when they lie inside).
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise RankError(f"{what} {path}: no such file or folder")
    skip = {os.path.realpath(p) for p in exclude if p}
    visited, seen, found = {os.path.realpath(path)}, set(), []
    for root, dirs, files in os.walk(path, followlinks=True):
        kept = []
        for d in sorted(dirs):  # a folder already searched (a link loop, two links to one folder): not again
            real = os.path.realpath(os.path.join(root, d))
            if real not in skip and real not in visited:
                visited.add(real)
                kept.append(d)
        dirs[:] = kept
        for f in sorted(files):
            real = os.path.realpath(os.path.join(root, f))
            if f.lower().endswith(IMAGE_SUFFIXES) and real not in seen:  # one file, one gallery entry
                seen.add(real)
                found.append(os.path.join(root, f))
    return found


# Identities from file names: the datasets' own naming. Each pattern's groups → one integer.
_IDENTITY_PATTERNS = (
    (re.compile(r"^(\d)_(\d{3})_\d_\d+$"), lambda g: 1000 * int(g[0]) + int(g[1])),  # CUHK03 (prepare_cuhk03)
    (re.compile(r"^(\d{4})\d{3}$"), lambda g: int(g[0])),  # CUHK01 campus/NNNNIII
    (re.compile(r"^(-?\d+)_"), lambda g: int(g[0])),  # VIPeR NNN_angle, synthetic, Market-1501, Duke
)


def identity_from_name(path: str, pattern: str | None = None) -> int | None:
    """A person's identity read from an image's file name, or None when the name does not say.

    Default: the datasets' conventions above (CUHK03 as prepared here: 1000 · pair + identity). A
    `pattern` (regular expression on the file name without suffix) uses its first group instead.
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    if pattern:
        m = re.search(pattern, stem)
        return int(m.group(1)) if m and m.group(1) is not None and m.group(1).lstrip("-").isdigit() else None
    for regex, identity in _IDENTITY_PATTERNS:
        m = regex.match(stem)
        if m:
            return identity(m.groups())
    return None


# ---------------------------------------------------------------------------------------------
# Features: in memory (scoring.ImageFeatures) or on disk (CachedFeatures), one interface:
# len(), .embedding (N, 256) and .take(index) → ImageFeatures.
def model_key(model) -> str:
    """Fingerprint of a model's architecture and weights (the cache's model key)."""
    h = hashlib.sha256(f"{CACHE_FORMAT}:{model.name}".encode())
    for w in model.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:24]


def _to_arrays(f) -> dict[str, np.ndarray]:
    return {**{f"map_{j}": m for j, m in f.maps.items()}, **{f"parts_{j}": p for j, p in f.parts.items()},
            "embedding": f.embedding}


def _join(arrays: Sequence[dict], combine=np.stack) -> "ImageFeatures":
    """ImageFeatures from per-image (np.stack) or per-batch (np.concatenate) `_to_arrays` dicts."""
    from reid_tf.scoring import ImageFeatures

    levels = sorted(int(k.split("_")[1]) for k in arrays[0] if k.startswith("map_"))
    joined = {k: combine([a[k] for a in arrays]) for k in arrays[0]}
    return ImageFeatures({j: joined[f"map_{j}"] for j in levels}, {j: joined[f"parts_{j}"] for j in levels},
                         joined["embedding"])


class FeatureCache:
    """One .npz of per-image features per (model, image bytes): root/<model key>/<ab>/<sha256>.npz."""

    def __init__(self, root: str, key: str):
        self.dir = os.path.join(root, key)

    @staticmethod
    def content_key(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def path(self, key: str) -> str:
        return os.path.join(self.dir, key[:2], key + ".npz")

    def has(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        path = self.path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with fileio.atomic_path(path, ".npz") as tmp:  # np.savez adds .npz to names without it
            np.savez(tmp, **arrays)  # a reader never sees half a file

    def load(self, key: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        try:
            # Our own file object: np.load leaves the file it opened unclosed when the archive is damaged.
            with open(self.path(key), "rb") as f, np.load(f) as z:
                return {n: z[n] for n in (names or z.files)}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise OSError(f"feature cache file {self.path(key)} is damaged ({type(e).__name__}); delete it "
                          "(it is computed again), or rank with --cache=''") from None

    def embedding(self, key: str) -> np.ndarray | None:
        """The cached embedding of `key`, or None on a miss; a damaged file (truncated, not a .npz)
        is a miss too, said in a warning and removed, so that it is computed and written again."""
        if not self.has(key):
            return None
        try:
            return self.load(key, ["embedding"])["embedding"]
        except OSError as e:
            logging.warning("%s; computing it again", str(e).split("; delete it")[0])
            with contextlib.suppress(OSError):
                os.remove(self.path(key))
            return None

    @classmethod
    def usable(cls, root: str, key: str) -> "FeatureCache | None":
        """A cache in root, or None (with a warning naming --cache) when that folder cannot be made
        or written: the ranking then runs without one, as with --cache=''."""
        cache = cls(root, key)
        try:
            os.makedirs(cache.dir, exist_ok=True)
            if not os.access(cache.dir, os.W_OK):
                raise PermissionError(13, "not writable", cache.dir)
        except OSError as e:
            logging.warning("--cache=%s cannot be used (%s); ranking without a feature cache", root,
                            e.strerror or e)
            return None
        return cache


class CachedFeatures:
    """The features of N cached images: embeddings in memory, the rest read from disk on `take`."""

    def __init__(self, cache: FeatureCache, keys: Sequence[str], embeddings: dict[str, np.ndarray] | None = None):
        self.cache, self.keys = cache, list(keys)
        embeddings = embeddings or {}
        self.embedding = np.stack([embeddings[k] if k in embeddings else cache.load(k, ["embedding"])["embedding"]
                                   for k in self.keys])

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, index):
        keys = np.asarray(self.keys, dtype=object)[index]
        return _join([self.cache.load(k) for k in np.atleast_1d(keys)])


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
            raise RankError(f"{getattr(model, 'name', model)} is not a reid_tf network ({e})") from None
        self.model, self.gallery_chunk = model, int(gallery_chunk)
        self.cache = FeatureCache.usable(cache_dir, model_key(model)) if cache_dir else None

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
        keys: list[str | None] = [""] * len(paths)  # "" = to encode, None = unreadable
        cached: dict[str, np.ndarray] = {}  # key -> embedding, of the cache files that read
        if self.cache is not None:
            for i, path in enumerate(paths):
                try:
                    with open(path, "rb") as f:
                        keys[i] = FeatureCache.content_key(f.read())
                except OSError as e:
                    bad_image(path, e.strerror or str(e), bad_images)
                    keys[i] = None
                    continue
                embedding = self.cache.embedding(keys[i])
                if embedding is not None:
                    cached[keys[i]] = embedding
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
                arrays = _to_arrays(self.encode(images))
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
            return _join(encoded, np.concatenate), kept
        return CachedFeatures(self.cache, [keys[i] for i in kept], cached), kept

    # ---- ranking -----------------------------------------------------------------------------
    def shortlist_size(self, gallery_size: int, top: int, shortlist: int | None = None) -> int | None:
        """K of the two-stage scoring for a gallery, or None for exhaustive scoring.

        shortlist None: the default (exhaustive up to config.RANK_SHORTLIST_ABOVE images, else
        config.RANK_SHORTLIST_K); 0: exhaustive; K > 0: K. K is raised to `top`, so every shown
        image was scored by Eq. 7.
        """
        if shortlist is None:
            shortlist = config.RANK_SHORTLIST_K if gallery_size > config.RANK_SHORTLIST_ABOVE else 0
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
            raise RankError("the gallery is empty")
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
        raise RankError(f"gallery {gallery}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders")
    if not query_paths:
        raise RankError(f"query {query}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders")
    ranker = Ranker.from_model(model, cache_dir=cache)
    fg, kept_g = ranker.encode_files(gallery_paths, bad_images, "gallery")
    if not kept_g:
        raise RankError(f"gallery {gallery}: none of its {len(gallery_paths)} images could be read")
    images_q, kept_q = read_images(query_paths, bad_images)
    if not kept_q:
        raise RankError(f"query {query}: none of its {len(query_paths)} images could be read")
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


def visrank_trial(network, dataset, identities: Sequence[int], trial: int, seed: int, n: int, out: str,
                  tb_dir: str | None = None, step: int = 0, title: str = "") -> dict:
    """`evaluate --visrank=N`: pictures of N test queries of a trial, ranked against its gallery.

    The trial's single-shot draw (datasets.single_shot, as evaluation uses), every pair scored; the
    first N queries; identities from the dataset. Writes out/ranking.json, out/ranked/*.png and
    out/index.html, and logs each picture to TensorBoard in tb_dir as "visrank/<query>" at `step`.
    """
    from reid_tf import datasets, ranked_results
    from reid_tf.images import load_images
    from reid_tf.visualize import image_summary

    queries, gallery = datasets.single_shot(dataset, identities, trial, seed)
    queries = queries[:n]
    q_paths, g_paths = [r.path for r in queries], [r.path for r in gallery]
    q_images, g_images = load_images(q_paths), load_images(g_paths)
    ranking = Ranker(network).rank(q_images, g_images, top=max(config.RANKS), shortlist=0)
    body = ranking_json(ranking, q_paths, g_paths, pictures=ranked_results.picture_names(q_paths),
                        identities=([r.identity for r in queries], [r.identity for r in gallery]),
                        title=title or f"{dataset.name} trial {trial}: ranked test queries",
                        model=getattr(network, "name", ""), gallery=dataset.root, gallery_images=len(gallery),
                        top=int(ranking.index.shape[1]))
    pictures = ranked_results.write_all(out, body, q_images, dict(zip(g_paths, g_images)))
    fileio.write_json(os.path.join(out, "ranking.json"), body)
    if tb_dir:
        import tensorflow as tf

        writer = tf.summary.create_file_writer(tb_dir)
        with writer.as_default():
            for entry, picture in zip(body["queries"], pictures):
                image_summary(f"visrank/{os.path.splitext(os.path.basename(entry['picture']))[0]}", picture, step)
        writer.flush()
    return body


def _default_cache() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "reid_tf", "features")


def define_flags() -> None:
    flags.DEFINE_string("model", None, "model.keras written by reid_tf.train, or its workdir")
    flags.DEFINE_string("query", None, "a query image, or a folder of them (searched recursively)")
    flags.DEFINE_string("gallery", None, "folder of gallery images (searched recursively)")
    flags.DEFINE_string("out", None, "output folder: ranking.json, ranked/*.png, index.html")
    flags.DEFINE_integer("top", 10, "gallery images shown per query")
    flags.DEFINE_integer("shortlist", None, "two-stage scoring: Eq. 7 on each query's K nearest by d; "
                         f"0 = every pair; default: exhaustive up to {config.RANK_SHORTLIST_ABOVE} gallery "
                         f"images, K = {config.RANK_SHORTLIST_K} above")
    flags.DEFINE_string("cache", _default_cache(), "folder of cached gallery features ('' = no cache)")
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
