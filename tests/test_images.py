"""One decoder, one conversion to 8-bit RGB: every image mode a dataset may hold reads as
the same RGB in preparation, training (cached and decoding pipelines) and evaluation."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_tools import common
from reid_tf import cli, datasets, images, pairs

H, W = images.IMAGE_SHAPE[:2]
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (H, W), dtype=np.uint8)
BITS = RNG.random((H, W)) < 0.5
PALETTE = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
INDEX = RNG.integers(0, 256, (H, W), dtype=np.uint8)
LOW_BYTE = RNG.integers(0, 256, (H, W), dtype=np.uint16)


def _palette_image() -> Image.Image:
    image = Image.fromarray(INDEX, mode="P")
    image.putpalette(PALETTE.ravel().tolist())
    return image


def _rgba() -> np.ndarray:
    return np.concatenate([RGB, RNG.integers(0, 256, (H, W, 1), dtype=np.uint8)], axis=-1)


def _grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


# mode name -> (file name, writer of the file, the RGB every path must read), each independent of
# reid_tf.images: the expected pixels come from the arrays the file was made from.
MODES = {
    "rgb_bmp": ("x.bmp", lambda p: Image.fromarray(RGB).save(p), RGB),
    "rgb_png": ("x.png", lambda p: Image.fromarray(RGB).save(p), RGB),
    "greyscale_png": ("x.png", lambda p: Image.fromarray(GREY, mode="L").save(p), _grey3(GREY)),
    "greyscale_bmp": ("x.bmp", lambda p: Image.fromarray(GREY, mode="L").save(p), _grey3(GREY)),
    "palette_bmp": ("x.bmp", lambda p: _palette_image().save(p), PALETTE[INDEX]),
    "palette_png": ("x.png", lambda p: _palette_image().save(p), PALETTE[INDEX]),
    "1bit_bmp": ("x.bmp", lambda p: Image.fromarray(BITS).save(p), _grey3(np.where(BITS, 255, 0).astype(np.uint8))),
    "1bit_png": ("x.png", lambda p: Image.fromarray(BITS).save(p), _grey3(np.where(BITS, 255, 0).astype(np.uint8))),
    # 16-bit grey: value 257·g + noise in the low byte must read as g (the high byte).
    "16bit_png": ("x.png", lambda p: Image.fromarray((GREY.astype(np.uint16) << 8) | LOW_BYTE).save(p),
                  _grey3(GREY)),
    "rgba_png": ("x.png", lambda p: Image.fromarray(_rgba(), mode="RGBA").save(p), RGB),
}


@pytest.fixture(params=sorted(MODES))
def mode_file(request, tmp_path):
    name, write, expected = MODES[request.param]
    path = str(tmp_path / name)
    write(path)
    return path, expected


def test_every_mode_reads_as_the_same_rgb_everywhere(mode_file):
    path, expected = mode_file
    common.verify_image(path)  # preparation accepts it ...
    np.testing.assert_array_equal(images.decode(path), expected)
    # ... evaluation / ranking read it ...
    np.testing.assert_array_equal(pairs.load_images([path])[0], expected / np.float32(255))
    # ... and so do both training pipelines (decoded once into the cache, or per use in tf.data).
    records = [datasets.Record(path, 0, 0)]
    for cache in (True, False):
        fetch = pairs.image_source(records, cache)
        got = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(fetch).get_single_element()
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"cache_images={cache}")


def _bilinear_antialiased(rgb: np.ndarray) -> np.ndarray:
    """The resize the module docstring promises, stated on its own: bilinear with antialiasing to
    160 × 60, rounded to uint8."""
    out = tf.image.resize(rgb.astype(np.float32), (H, W), method="bilinear", antialias=True).numpy()
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(128, 48), (320, 120)])  # enlarged (Market-1501's 128 × 64 is) / shrunk
def test_resized_modes_agree(tmp_path, size):
    """A palette BMP of another size reads, resized, as the bilinear antialiased resize of its
    colours, the same as its RGB PNG twin, in evaluation, ranking and both training pipelines."""
    small = _palette_image().resize(size[::-1], Image.NEAREST)
    small.save(tmp_path / "p.bmp")
    small.convert("RGB").save(tmp_path / "p.png")
    expected = _bilinear_antialiased(PALETTE[np.asarray(small)])  # colours first, then resize
    paths = [str(tmp_path / "p.bmp"), str(tmp_path / "p.png")]
    out = pairs.load_images(paths)
    assert out.shape == (2, H, W, 3)
    for got in out:
        np.testing.assert_array_equal(got, expected / np.float32(255))
    ranked, kept = images.read_images(paths)
    assert kept == [0, 1]
    np.testing.assert_array_equal(ranked, out)
    records = [datasets.Record(p, 0, 0) for p in paths]
    for cache in (True, False):
        fetch = pairs.image_source(records, cache)
        for i in range(2):
            got = tf.data.Dataset.from_tensors(tf.constant(i, tf.int64)).map(fetch).get_single_element()
            np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"cache_images={cache}, image {i}")


def test_undecodable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    Image.fromarray(RGB).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(images.ImageError, match="broken.png"):
        pairs.load_images([str(bad)])
    with pytest.raises(common.DatasetError, match="broken.png"):
        common.verify_image(str(bad))


def test_bad_images_are_named_and_skipped_or_stop(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(RGB).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    paths = [str(good), str(truncated), str(text), str(tmp_path / "gone.png")]
    read, kept = images.read_images(paths, "skip")
    assert kept == [0] and read.shape == (1, 160, 60, 3)
    with pytest.raises(cli.UsageError, match="truncated.png"):
        images.read_images(paths, "stop")
