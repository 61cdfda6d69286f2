"""Per-image features on disk, so that a gallery is encoded once per network (`reid_tf.rank --cache`).

A gallery image's features (`scoring.ImageFeatures`: the feature maps and parts of every CSN level
and the embedding; 0.44 MB per image for l23) are what every pair it is scored in reuses, so they
are kept in one .npz per image: root/<model key>/<first two hex digits>/<content key>.npz.

A cache key is made of two parts, each chosen so that a hit can only ever return the features the
network would compute now:
- the model key (`model_key`): a SHA-256 of CACHE_FORMAT, the model's name and every weight's path
  and bytes. Another network, or the same one retrained (one weight changed), gets a folder of its
  own and never reads another's features; CACHE_FORMAT is bumped when what is stored changes, so a
  file of an older layout is never read as the new one.
- the content key (`FeatureCache.content_key`): a SHA-256 of the image file's bytes, not its path
  or time stamp. The same image under another name (a copied gallery) is a hit; a file rewritten in
  place with another image is a miss, even within the same second; only an added or changed image
  is computed.

A damaged cache file is a miss: warned about, removed, computed and written again. Files are
written atomically (`fileio.atomic_path`), so a reader never sees half of one. A cache folder that
cannot be made or written is warned about and the ranking runs without one (`FeatureCache.usable`).

Features in memory (`scoring.ImageFeatures`) and on disk (`CachedFeatures`) share one interface,
which `reid_tf.rank` and `reid_tf.shortlist` use: len(), .embedding (N, 256) and .take(index) →
ImageFeatures.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
from typing import TYPE_CHECKING, Sequence

import numpy as np
from absl import logging

from reid_tf import fileio
from reid_tf.images import bad_image

if TYPE_CHECKING:  # scoring loads TensorFlow; the cache itself does not need it
    from reid_tf.scoring import ImageFeatures

CACHE_FORMAT = "reid_tf-features-v1"  # part of every model key: bump when the stored features change


def default_dir() -> str:
    """Where `python -m reid_tf.rank` keeps features unless --cache says otherwise (XDG's cache folder)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "reid_tf", "features")


def model_key(model) -> str:
    """Fingerprint of a model's architecture and weights (the cache's model key)."""
    h = hashlib.sha256(f"{CACHE_FORMAT}:{model.name}".encode())
    for w in model.weights:
        h.update(w.path.encode())
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:24]


def to_arrays(f) -> dict[str, np.ndarray]:
    """ImageFeatures → the named arrays stored in a cache file (map_<level>, parts_<level>, embedding)."""
    return {**{f"map_{j}": m for j, m in f.maps.items()}, **{f"parts_{j}": p for j, p in f.parts.items()},
            "embedding": f.embedding}


def from_arrays(arrays: Sequence[dict], combine=np.stack) -> "ImageFeatures":
    """ImageFeatures from per-image (np.stack) or per-batch (np.concatenate) `to_arrays` dicts."""
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

    def look_up(self, paths: Sequence[str], bad_images: str = "skip") -> tuple[list[str | None], dict[str, np.ndarray]]:
        """Each file's content key (None: the file could not be read, named by images.bad_image per
        `bad_images`), and key -> cached embedding of the files that are in the cache."""
        keys: list[str | None] = []
        cached: dict[str, np.ndarray] = {}
        for path in paths:
            try:
                with open(path, "rb") as f:
                    key = self.content_key(f.read())
            except OSError as e:
                bad_image(path, e.strerror or str(e), bad_images)
                keys.append(None)
                continue
            keys.append(key)
            embedding = self.embedding(key)
            if embedding is not None:
                cached[key] = embedding
        return keys, cached

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
        return from_arrays([self.cache.load(k) for k in np.atleast_1d(keys)])
