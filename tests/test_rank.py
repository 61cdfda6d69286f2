"""Ranking a gallery with a trained model: the Ranker against the scoring engine, the shortlist,
the Ranker through the feature cache, the pictures, and the command's answers to bad input (one
line, non-zero exit, no traceback). Identities from file names: tests/test_datasets.py; finding and
reading image files: tests/test_images.py; the cache's keys: tests/test_feature_cache.py."""
import json
import os
import shutil
import subprocess
import re
import sys
import types

import keras
import numpy as np
import pytest
from PIL import Image

from data_tools.make_synthetic import render
from reid_tf import callbacks, cli, config, images, progress, rank, ranked_results
from reid_tf.model import build_model
from reid_tf.scoring import ScoringEngine

# Gallery: 4 identities × 2 images of camera B; queries: image 0 of camera A of identities 0 and 2.
GALLERY_KEYS = np.array([(i, 1, k) for i in range(4) for k in range(2)])
QUERY_KEYS = np.array([(0, 0, 0), (2, 0, 0)])


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return build_model("l23")


@pytest.fixture(scope="module")
def synthetic():
    return render(0, QUERY_KEYS).astype(np.float32) / 255.0, render(0, GALLERY_KEYS).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    """A saved model, a query folder and a gallery folder (sub-folders, PNG and a resized JPEG)."""
    root = tmp_path_factory.mktemp("rank")
    model_path = str(root / "model.keras")
    model.save(model_path)
    for sub in ("query", "gallery/a", "gallery/b/c"):
        os.makedirs(root / sub)
    for (i, _, k), image in zip(QUERY_KEYS, render(0, QUERY_KEYS)):
        Image.fromarray(image).save(root / "query" / f"{i:04d}_{k}.png")
    for n, ((i, _, k), image) in enumerate(zip(GALLERY_KEYS, render(0, GALLERY_KEYS))):
        if n == 3:  # another format and size: resized exactly as training does
            Image.fromarray(image).resize((30, 80)).save(root / "gallery/b/c" / f"{i:04d}_{k}.jpg", quality=95)
        else:
            Image.fromarray(image).save(root / ("gallery/a" if n % 2 else "gallery/b") / f"{i:04d}_{k}.png")
    return root, model_path


def run_cli(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "reid_tf.rank", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return proc


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


# ---- the Ranker against the engine ------------------------------------------------------------
def test_ranking_equals_the_engines_score_matrix_order(model, synthetic):
    query, gallery = synthetic
    ranker = rank.Ranker(model, gallery_chunk=3)  # the gallery streamed in 3 chunks, merged
    want = ScoringEngine(model).score_matrix(query, gallery)
    got = ranker.rank(query, gallery, top=5, shortlist=0)
    order = np.argsort(-want["score"], axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got.index, order)
    for key in ("score", "p_match", "distance"):
        np.testing.assert_allclose(getattr(got, key), np.take_along_axis(want[key], order, axis=1), atol=1e-5)
    assert got.shortlist is None
    np.testing.assert_array_equal(ranker.rank(query, gallery, top=100, shortlist=0).index,
                                  np.argsort(-want["score"], axis=1, kind="stable"))  # top > G: all of it


def test_shortlist_of_at_least_the_gallery_equals_exhaustive(model, synthetic):
    query, gallery = synthetic
    ranker = rank.Ranker(model, gallery_chunk=4)
    fq, fg = ranker.encode(query), ranker.encode(gallery)
    exhaustive = ranker.rank(fq, fg, top=8, shortlist=0)
    for K in (len(gallery), len(gallery) + 5):
        short = ranker.rank(fq, fg, top=8, shortlist=K)
        assert short.shortlist == len(gallery)  # the shortlist path ran, on the whole gallery
        np.testing.assert_array_equal(short.index, exhaustive.index)
        np.testing.assert_allclose(short.score, exhaustive.score, atol=1e-5)


def test_shortlist_smaller_than_the_gallery_is_the_engines_two_stage_order(model, synthetic):
    """Six queries against gallery blocks of two images (reid_tf.shortlist through the Ranker): the
    engine's two-stage order and values, every query's K nearest scored once, and each gallery
    image's features read once although several queries share it."""
    gallery = synthetic[1]
    query = gallery[[2, 3, 4, 5, 6, 0]]  # each its own nearest: shortlists that differ (an untrained
    # model's d otherwise puts the same three gallery images first for every query)
    ranker = rank.Ranker(model, gallery_chunk=2)
    fq, fg = ranker.encode(query), ranker.encode(gallery)
    fetched = []

    class CountedGallery:  # the interface of CachedFeatures, counting what is read
        embedding = fg.embedding

        def __len__(self):
            return len(fg)

        def take(self, index):
            fetched.extend(np.atleast_1d(index).tolist())
            return fg.take(index)

    K = 3
    want = ScoringEngine(model).score_matrix(query, gallery, shortlist=K)
    before = ranker.engine.stats["pairs_evaluated"]
    got = ranker.rank(fq, CountedGallery(), top=K, shortlist=K)
    order = np.argsort(-want["score"], axis=1, kind="stable")[:, :K]
    np.testing.assert_array_equal(got.index, order)
    for key in ("score", "p_match", "distance"):
        np.testing.assert_allclose(getattr(got, key), np.take_along_axis(want[key], order, axis=1), atol=1e-5)
    assert ranker.engine.stats["pairs_evaluated"] - before == len(query) * K
    assert sorted(fetched) == sorted(set(np.flatnonzero(want["evaluated"].any(axis=0))))  # each once
    assert ranker.rank(query, gallery, top=5, shortlist=3).shortlist == 5  # K ≥ top: every shown image scored


def test_default_shortlist_by_gallery_size(model, monkeypatch):
    ranker = rank.Ranker(model)
    monkeypatch.setattr(config, "RANK_SHORTLIST_ABOVE", 6)
    monkeypatch.setattr(config, "SHORTLIST_K", 4)
    assert ranker.shortlist_size(6, top=2) is None
    assert ranker.shortlist_size(7, top=2) == 4
    assert ranker.shortlist_size(7, top=5) == 5
    assert ranker.shortlist_size(100, top=2, shortlist=0) is None
    with pytest.raises(ValueError):
        ranker.shortlist_size(7, top=2, shortlist=-1)


def test_in_memory_inputs_are_checked(model, synthetic):
    ranker = rank.Ranker(model)
    with pytest.raises(ValueError, match=r"\(N, 160, 60, 3\)"):
        ranker.encode(np.zeros((2, 80, 30, 3)))
    with pytest.raises(cli.UsageError, match="empty"):
        ranker.rank(synthetic[0], None)
    with pytest.raises(cli.UsageError, match="not a reid_tf network"):
        rank.Ranker(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))


# ---- files, cache, identities ------------------------------------------------------------------
def test_feature_cache_skips_the_network_and_recomputes_only_changed_files(model, files, tmp_path, monkeypatch):
    root, _ = files
    paths = images.find_images(str(root / "gallery"))
    assert len(paths) == len(GALLERY_KEYS) and any(p.endswith(".jpg") for p in paths)
    ranker = rank.Ranker(model, cache_dir=str(tmp_path / "cache"))
    first, kept = ranker.encode_files(paths)
    direct = rank.Ranker(model).encode(images.read_images(paths)[0])
    np.testing.assert_allclose(first.take(np.arange(len(paths))).maps[2], direct.maps[2], atol=1e-6)
    np.testing.assert_allclose(first.embedding, direct.embedding, atol=1e-6)

    calls = []
    encode = ranker.encode
    monkeypatch.setattr(ranker, "encode", lambda images: calls.append(len(images)) or encode(images))
    again, _ = ranker.encode_files(paths)
    assert calls == []  # a second query against the same gallery: nothing recomputed
    np.testing.assert_array_equal(again.embedding, first.embedding)
    copy = tmp_path / "changed.png"
    Image.fromarray(render(0, np.array([(9, 1, 0)]))[0]).save(copy)
    ranker.encode_files(paths + [str(copy)])
    assert calls == [1]  # only the new file

    # keyed on the bytes: the same image under another name is not encoded again; a file rewritten
    # in place with another image is, and its features are the new image's
    renamed = tmp_path / "renamed.png"
    shutil.copyfile(copy, renamed)
    ranker.encode_files([str(renamed)])
    assert calls == [1]
    Image.fromarray(render(0, np.array([(5, 0, 1)]))[0]).save(renamed)
    rewritten, _ = ranker.encode_files([str(renamed)])
    assert calls == [1, 1]
    np.testing.assert_allclose(rewritten.embedding, rank.Ranker(model).encode(images.read_images([str(renamed)])[0]).embedding,
                               atol=1e-6)


def test_feature_cache_is_per_model(model, files, tmp_path):
    """Another network (here: the same one with one bias changed, as retraining would) sharing the
    cache folder encodes every image afresh and ranks with its own features, never the first's."""
    root, _ = files
    paths = images.find_images(str(root / "gallery"))
    cache = str(tmp_path / "cache")
    first, _ = rank.Ranker(model, cache_dir=cache).encode_files(paths)
    bias = model.get_layer("encoder").get_layer("embedding").bias
    kept = bias.numpy()
    try:
        bias.assign(kept + 0.5)
        retrained = rank.Ranker(model, cache_dir=cache)
        got, _ = retrained.encode_files(paths)
        want = rank.Ranker(model).encode(images.read_images(paths)[0])
    finally:
        bias.assign(kept)
    np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-6)
    assert np.abs(got.embedding - first.embedding).max() > 1e-2


def test_an_unreadable_file_through_the_cache_is_named_and_skipped_or_stops(model, files, tmp_path):
    """With a feature cache the files are read first for their cache keys: a file that cannot be
    opened there is named and skipped, or stops the ranking, as without a cache."""
    root, _ = files
    paths = images.find_images(str(root / "gallery"))[:2] + [str(tmp_path / "gone.png")]
    ranker = rank.Ranker(model, cache_dir=str(tmp_path / "cache"))
    features, kept = ranker.encode_files(paths, "skip")
    assert kept == [0, 1] and features.embedding.shape[0] == 2
    with pytest.raises(cli.UsageError, match="gone.png"):
        ranker.encode_files(paths, "stop")


def test_progress_line_has_rate_and_eta(caplog):
    progress = rank.Progress("encoding gallery", 10, "images", every=0.0)
    with caplog.at_level("INFO"):
        progress.update(4)
        progress.update(6)  # done: no line
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "encoding gallery: 4/10 images (40%)" in lines[0]
    assert "images/s" in lines[0] and "ETA" in lines[0]


def test_training_progress_line_has_the_same_eta(caplog):
    """Training's ProgressLogger writes its ETA with progress.hms, the H:MM:SS of the other loops."""
    assert (progress.hms(3725.4), progress.hms(36000 * 3), progress.hms(float("inf"))) == ("1:02:05", "30:00:00", "?")
    step = types.SimpleNamespace(value=0)
    iterations = types.SimpleNamespace(numpy=lambda: step.value)
    logger = callbacks.ProgressLogger(total_steps=10, batch_size=4, every_seconds=0.0)
    logger.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=iterations)))
    with caplog.at_level("INFO"):
        logger.on_train_begin()
        step.value = 4
        logger.on_epoch_end(0)  # the first checkpoint: steady state from here (tests/test_cli.py)
        step.value = 9
        logger.on_train_batch_end(8, {"loss": 0.5})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("step 9/10") and "loss=0.5000" in lines[0]
    assert re.search(r"ETA \d+:\d\d:\d\d$", lines[0])


# ---- pictures -------------------------------------------------------------------------------
def test_ranked_picture_frames_and_layout(synthetic):
    query, gallery = synthetic
    picture = ranked_results.ranked_picture(query[0], gallery[:3], [["#1", "a"], ["#2", "b"], ["#3", "c"]],
                                            [True, False, None], ["query", "x"], zoom=2)
    tile_w = 60 * 2 + 2 * 4
    assert picture.dtype == np.uint8 and picture.shape[1] == 4 * tile_w + 2 * 6 + 24
    x0 = tile_w + 24  # first gallery tile; its frame's top-left pixel
    assert tuple(picture[0, 0]) == ranked_results.QUERY
    assert tuple(picture[0, x0]) == ranked_results.MATCH
    assert tuple(picture[0, x0 + tile_w + 6]) == ranked_results.NON_MATCH
    assert tuple(picture[0, x0 + 2 * (tile_w + 6)]) == ranked_results.UNKNOWN
    inner = picture[4:4 + 320, 4:4 + 120].astype(float) / 255  # the query, zoomed ×2
    zoomed = np.asarray(Image.fromarray((query[0] * 255).round().astype(np.uint8)).resize((120, 320))) / 255
    assert np.abs(inner - zoomed).mean() < 0.02


def test_evaluate_visrank_writes_pictures_page_and_tensorboard(model, tmp_path):
    import glob

    import tensorflow as tf

    from data_tools.make_synthetic import make_synthetic
    from reid_tf import evaluate

    data = tmp_path / "data"
    make_synthetic(str(data / "synthetic"), identities=8, seed=0, images_per_camera=1)
    workdir = tmp_path / "run"
    workdir.mkdir()
    model.save(workdir / "model.keras")
    (workdir / "run.json").write_text(json.dumps({"dataset": "synthetic", "data_dir": str(data), "trial": 0,
                                                  "seed": 0, "val_identities": 1, "test_identities": 4}))
    (workdir / "history.json").write_text(json.dumps([{"step": 5}, {"step": 9}]))
    folder = evaluate.visrank(2, workdir=str(workdir))
    body = json.loads((workdir / "visrank" / "ranking.json").read_text())
    assert len(body["queries"]) == 2 and all(len(q["results"]) == 4 for q in body["queries"])  # whole gallery
    for q in body["queries"]:  # identities from the dataset: exactly one true match among 4
        assert sum(r["match"] for r in q["results"]) == 1
        assert os.path.isfile(os.path.join(folder, q["picture"]))
    assert (workdir / "visrank" / "index.html").is_file()
    found = {}
    for path in glob.glob(str(workdir / "tb" / "test" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found[value.tag] = event.step
    assert len(found) == 2 and all(t.startswith("visrank/") for t in found) and set(found.values()) == {9}


# ---- the command -------------------------------------------------------------------------------
def test_command_ranks_writes_json_pictures_and_page(files, tmp_path, model, synthetic):
    root, model_path = files
    gallery_dir = tmp_path / "gallery"
    shutil.copytree(root / "gallery", gallery_dir)
    (gallery_dir / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = gallery_dir / "out"  # inside the gallery: its pictures must not join the gallery
    for _ in range(2):  # the second run reads the gallery from the cache
        proc = run_cli(f"--model={model_path}", f"--query={root / 'query'}", f"--gallery={gallery_dir}",
                       f"--out={out}", "--top=4", f"--cache={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "broken.png: cannot read this image" in proc.stderr  # named, skipped
    body = json.loads((out / "ranking.json").read_text())
    assert [os.path.basename(q["query"]) for q in body["queries"]] == ["0000_0.png", "0002_0.png"]
    assert body["gallery_images"] == len(GALLERY_KEYS) and body["shortlist"] is None
    # the same ranking as the Ranker on the same decoded images
    paths = [p for p in images.find_images(str(gallery_dir), exclude=[str(out)]) if "broken" not in p]
    g_images, _ = images.read_images(paths)
    want = rank.Ranker(model).rank(synthetic[0], g_images, top=4, shortlist=0)
    for q, entry in enumerate(body["queries"]):
        assert [r["path"] for r in entry["results"]] == [paths[i] for i in want.index[q]]
        np.testing.assert_allclose([r["score"] for r in entry["results"]], want.score[q], atol=1e-4)
        assert all(r["match"] == (r["identity"] == entry["identity"]) for r in entry["results"])
        with Image.open(out / entry["picture"]) as picture:
            assert picture.size[0] > 5 * 120 and picture.size[1] > 320
    page = (out / "index.html").read_text()
    assert all(entry["picture"] in page for entry in body["queries"]) and page.count("<section>") == 2


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_command_bad_input_gives_one_line_and_nonzero_exit(files, tmp_path):
    root, model_path = files
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    common = [f"--query={root / 'query'}", f"--out={tmp_path / 'out'}", "--cache="]
    assert_one_line_error(run_cli(f"--model={model_path}", f"--gallery={empty}", *common), "gallery", "no images")
    assert_one_line_error(run_cli(f"--model={tmp_path / 'missing.keras'}", f"--gallery={root / 'gallery'}", *common),
                          "missing.keras", "no such file")
    fake = tmp_path / "fake.keras"
    fake.write_text("this is not a Keras archive")
    assert_one_line_error(run_cli(f"--model={fake}", f"--gallery={root / 'gallery'}", *common),
                          "fake.keras", "is not a Keras model file")
    bad_gallery = tmp_path / "bad_gallery"
    bad_gallery.mkdir()
    png = next((root / "gallery" / "a").iterdir()).read_bytes()
    (bad_gallery / "0001_0.png").write_bytes(png)
    (bad_gallery / "0001_1.png").write_bytes(png[:len(png) // 2])
    assert_one_line_error(run_cli(f"--model={model_path}", f"--gallery={bad_gallery}", "--bad_images=stop", *common),
                          "0001_1.png", "cannot read this image")
