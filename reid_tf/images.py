"""Reading person images: one decoder and one conversion to 8-bit RGB, for every path.

Preparation (data_tools), training (reid_tf.pairs), evaluation, validation and ranking all read an
image through `decode`, so an image that passes preparation is read the same way everywhere and no
two paths can disagree about its pixels. The decoder is PIL, not `tf.io.decode_image`: TensorFlow
rejects 1-bit BMPs (an error naming no file, mid-training) and returns an 8-bit palette BMP as its
grey palette indices (wrong colours, silently), while PIL reads every mode the datasets use.

Conversion to 8-bit RGB (`to_rgb8`), per PIL mode:
- RGB: as stored; RGBA / LA / PA: the colour without the alpha (what TensorFlow's channels=3 did);
- L (greyscale), 1 (1-bit: 0 → 0, 1 → 255), P (palette: the palette's colours): PIL's conversion;
- I;16* / I (16-bit greyscale): the high byte (v >> 8), as PIL itself reduces 16-bit colour PNGs.
  PIL's own I;16 → RGB conversion clips every value above 255 to white, hence the explicit rule.
- anything else (CMYK, YCbCr, ...): PIL's conversion to RGB.

Size: images that are not 160 × 60 are resized with TensorFlow's bilinear resampling with
antialiasing, rounded to uint8 (`resize`); images of the right size are left untouched.

A user's own image files (a gallery to rank, ranked results): `find_images` lists those of a
folder, `read_images` reads them with the same decoder, and a file that cannot be read is named and
skipped or stops the command (`bad_image`, BAD_IMAGES).
"""
from __future__ import annotations

import concurrent.futures
import io
import os
from typing import Sequence

import numpy as np
from absl import logging
from PIL import Image

from reid_tf import cli, config

IMAGE_SHAPE = (config.INPUT_HEIGHT, config.INPUT_WIDTH, config.INPUT_CHANNELS)
_SIXTEEN_BIT_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageError(ValueError):
    """An image file cannot be decoded; the message names the file."""


def to_rgb8(image: Image.Image) -> np.ndarray:
    """A loaded PIL image of any mode -> uint8 (h, w, 3) RGB (rules in the module docstring)."""
    if image.mode in _SIXTEEN_BIT_GREY:
        grey = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8  # (h, w): high byte
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode != "RGB":
        image = image.convert("RGB")  # 1, L, P, RGBA, LA, PA, CMYK, ...; alpha is dropped
    return np.asarray(image, dtype=np.uint8)


def decode(source: str | bytes, name: str | None = None) -> np.ndarray:
    """An image file (path) or its bytes -> uint8 (h, w, 3) RGB at its own size.

    Raises ImageError naming the file (`name`, or the path) when it cannot be decoded completely.
    """
    name = name or (source if isinstance(source, str) else "<image bytes>")
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as image:
            image.load()  # decode everything now: a truncated file fails here, not later
            return to_rgb8(image)
    except (OSError, SyntaxError, ValueError) as e:  # PIL reports bad data as any of these
        raise ImageError(f"{name}: unreadable or truncated image ({e})") from None


def resize(images):
    """uint8 (h, w, 3) or (n, h, w, 3) -> uint8 (160, 60, 3) or (n, 160, 60, 3) tf.Tensor; unchanged
    when the size is already right, else bilinear with antialiasing, rounded. Eager or in tf.data."""
    import tensorflow as tf  # here, so that preparation (decode only) does not load TensorFlow
    images = tf.convert_to_tensor(images, tf.uint8)
    size = tf.shape(images)[-3:-1]

    def scaled() -> tf.Tensor:
        out = tf.image.resize(tf.cast(images, tf.float32), IMAGE_SHAPE[:2], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)

    same = tf.reduce_all(tf.equal(size, IMAGE_SHAPE[:2]))
    out = tf.cond(same, lambda: images, scaled)
    out.set_shape([*images.shape[:-3], *IMAGE_SHAPE])
    return out


def read_image(path):
    """A path as a string tf.Tensor -> uint8 (160, 60, 3), for tf.data pipelines (via `decode`)."""
    import tensorflow as tf  # see resize
    image = tf.numpy_function(lambda p: decode(p.decode()), [path], tf.uint8, stateful=False)
    image.set_shape([None, None, IMAGE_SHAPE[2]])
    return resize(image)


def resize_all(decoded: Sequence[np.ndarray]) -> np.ndarray:
    """Decoded images (`decode`) of any sizes, in order -> uint8 (N, 160, 60, 3), by `resize`:
    one batched resize per distinct size."""
    out = np.empty((len(decoded), *IMAGE_SHAPE), np.uint8)
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(decoded):
        by_shape.setdefault(image.shape, []).append(i)
    for index in by_shape.values():
        out[index] = resize(np.stack([decoded[i] for i in index])).numpy()
    return out


def load_uint8(paths: Sequence[str]) -> np.ndarray:
    """Decode and resize images, in order -> uint8 (N, 160, 60, 3)."""
    # PIL releases the GIL while decoding: one thread per core helps.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return resize_all(list(pool.map(decode, paths)))


def load_images(paths: Sequence[str]) -> np.ndarray:
    """Images for evaluation and ranking: decoded, resized, no augmentation -> float32
    (N, 160, 60, 3) in [0, 1]."""
    return load_uint8(paths).astype(np.float32) / 255.0


# Image files of a user's own (reid_tf.rank, ranked results): found in folders, read tolerantly,
# each bad file named.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # what training's decoder reads
BAD_IMAGES = ("skip", "stop")  # what to do with a file that cannot be read: `bad_image`


def find_images(path: str, what: str = "gallery", exclude: Sequence[str] = ()) -> list[str]:
    """Image files (IMAGE_SUFFIXES, any case) of a file or a folder searched recursively, sorted.

    Links are followed, but never into a folder already searched (a link loop such as `again -> .`
    adds nothing), and a file reached twice is listed once. `what` names `path` in the error when it
    does not exist; `exclude`: folders not to search (the command's own output and cache, when they
    lie inside).
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise cli.UsageError(f"{what} {path}: no such file or folder")
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


def decode_images(contents: Sequence[bytes]) -> tuple[np.ndarray, list[str | None]]:
    """Encoded images → (uint8 (N, 160, 60, 3), per image None or why it could not be decoded).

    The one decoder of training and evaluation (`decode`: PIL, one conversion to 8-bit RGB;
    `resize_all`: TensorFlow's resize); undecodable images are zeros.
    """
    out = np.zeros((len(contents), *IMAGE_SHAPE), np.uint8)
    errors: list[str | None] = [None] * len(contents)
    decoded = {}
    for i, data in enumerate(contents):
        try:
            decoded[i] = decode(data)
        except ImageError as e:
            errors[i] = str(e).split(": ", 1)[-1]  # the reason; the caller names the file
    if decoded:
        out[list(decoded)] = resize_all(list(decoded.values()))
    return out, errors


def read_images(paths: Sequence[str], bad_images: str = "skip") -> tuple[np.ndarray, list[int]]:
    """Read image files → (float32 (n, 160, 60, 3) in [0, 1], positions in `paths` of the n read).

    A file that cannot be read or decoded is named in a warning and left out ("skip"), or raises
    cli.UsageError ("stop").
    """
    contents, read, why = [], [], {}
    for i, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                contents.append(f.read())
            read.append(i)
        except OSError as e:
            why[i] = e.strerror or str(e)
    images, errors = decode_images(contents)
    why.update({read[k]: err for k, err in enumerate(errors) if err is not None})
    for i in sorted(why):  # in the order of `paths`
        bad_image(paths[i], why[i], bad_images)
    good = [k for k, err in enumerate(errors) if err is None]
    return images[good].astype(np.float32) / 255.0, [read[k] for k in good]


def bad_image(path: str, why: str, bad_images: str) -> None:
    """A file that cannot be read: a warning naming it ("skip"), or one usage error ("stop")."""
    if bad_images == "stop":
        raise cli.UsageError(f"{path}: cannot read this image ({why}); --bad_images=skip skips such files")
    logging.warning("%s: cannot read this image (%s); skipped", path, why)
