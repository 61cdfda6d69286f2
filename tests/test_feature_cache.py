"""The feature cache's keys: a file's key is its bytes' (not its name's), an unreadable file has
none and is named, and a model's key changes with any weight."""
import os

import keras
import numpy as np
import pytest

from reid_tf import cli
from reid_tf.feature_cache import FeatureCache, model_key


def test_look_up_keys_files_by_their_bytes_and_names_an_unreadable_one(tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(b"one image")
    (tmp_path / "copy.png").write_bytes(b"one image")
    (tmp_path / "b.png").write_bytes(b"another image")
    paths = [str(tmp_path / n) for n in ("a.png", "copy.png", "b.png", "gone.png")]
    cache = FeatureCache(str(tmp_path / "cache"), "model")
    keys, cached = cache.look_up(paths)
    assert keys[0] == keys[1] != keys[2] and keys[3] is None and cached == {}
    assert "gone.png: cannot read this image" in caplog.text
    cache.save(keys[0], {"embedding": np.arange(3.0)})
    keys, cached = cache.look_up(paths[:3])
    assert list(cached) == [keys[0]]  # the copy under another name hits too
    np.testing.assert_array_equal(cached[keys[0]], np.arange(3.0))
    with pytest.raises(cli.UsageError, match="gone.png"):
        cache.look_up(paths, "stop")
    assert os.path.isfile(cache.path(keys[0]))


def test_model_key_changes_with_any_weight():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = model_key(model)
    assert model_key(model) == before
    bias = model.layers[0].bias
    bias.assign(bias.numpy() + 1e-3)
    assert model_key(model) != before
