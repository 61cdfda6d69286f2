"""reid_tf.protocols: the single-shot draw (ours, §4.1), [31]'s gallery draws and its same-camera /
cross-camera split, and the one rule for the spread over trials (reid_tf.report)."""
from __future__ import annotations

import logging

import keras
import numpy as np
import pytest

from data_tools.make_synthetic import make_synthetic
from reid_tf import config, datasets, metrics, protocols, report
from reid_tf.datasets import Dataset
from reid_tf.model import build_model
from reid_tf.pairs import load_images
from tests.test_datasets import fake


def test_spread_is_the_sample_std_and_zero_for_one_value():
    assert metrics.spread([0.5]) == 0.0
    assert metrics.spread([1.0, 3.0]) == pytest.approx(np.sqrt(2.0))  # ((1−2)² + (3−2)²) / (2 − 1)
    np.testing.assert_allclose(metrics.spread([[1.0, 0.0], [3.0, 0.0]]), [np.sqrt(2.0), 0.0])
    np.testing.assert_array_equal(metrics.spread([[1.0, 2.0]]), [0.0, 0.0])
    # report.summarize reports mAP with the same rule as rank-k
    fake = {name: {"curves": [[0.2, 1.0], [0.6, 1.0]], "map": [0.2, 0.6]} for name in protocols.RANKINGS}
    s = report.summarize([fake])["eq7"]
    assert s["map"]["std"] == pytest.approx(s["rank"]["1"]["std"]) == pytest.approx(100 * np.sqrt(0.08))


def _records(n_ids=6, per_camera=2):
    return [datasets.Record(f"{i}_{c}_{k}.png", i, c) for i in range(n_ids) for c in (0, 1)
            for k in range(per_camera)]


def test_random_gallery_draws_one_gallery_image_per_identity_from_either_camera():
    records = _records()
    draws = protocols.random_gallery_draws(records, seed=3)
    assert len(draws) == config.RANDOM_GALLERY_DRAWS
    cameras = set()
    for probes, gallery in draws:
        ids = np.array([records[g].identity for g in gallery])
        np.testing.assert_array_equal(ids, np.arange(6))  # one per identity, in identity order
        assert sorted([*probes, *gallery]) == list(range(len(records)))  # every other image a probe
        cameras |= {records[g].camera for g in gallery}
    assert cameras == {0, 1}
    assert len({tuple(g) for _, g in draws}) > 1  # the draws differ
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(draws, protocols.random_gallery_draws(records, seed=3)))


def test_random_gallery_protocol_equals_full_model_pairs_ranked_by_hand(tmp_path):
    """Each draw's CMC from the engine equals the full network's Eq. 7 on the explicit probe ×
    gallery pairs, ranked by a loop (pessimistic ties)."""
    root = make_synthetic(str(tmp_path / "s"), identities=5, seed=0)
    dataset = datasets.load_dataset("synthetic", root)
    ids = dataset.identities[:4]
    keras.utils.set_random_seed(0)
    network = build_model("l2")
    got = protocols.evaluate_network(network, dataset, ids, trial=0, seed=1, protocol="random_gallery")
    records = datasets.records_of(dataset, ids)
    images = load_images([r.path for r in records])
    identity = np.array([r.identity for r in records])
    for d, (probes, gallery) in enumerate(protocols.random_gallery_draws(records, seed=1)):
        a = np.repeat(probes, len(gallery))
        b = np.tile(gallery, len(probes))
        score = np.asarray(network({"image_a": images[a], "image_b": images[b]}, training=False)["score"])
        score = score.reshape(len(probes), len(gallery))
        curve = np.zeros(len(gallery))
        for q, p in enumerate(probes):
            true = score[q, identity[gallery] == identity[p]][0]
            rank = int(np.sum(score[q] >= true))  # pessimistic: ties rank before the match
            curve[rank - 1:] += 1
        np.testing.assert_allclose(got["eq7"]["curves"][d], curve / len(probes), atol=1e-6)


def test_single_shot(caplog):
    ds = fake("cuhk01", 50, per_camera=2)
    ids = [7, 3, 41, 12]
    queries, gallery = protocols.single_shot(ds, ids, trial=0, seed=0)
    assert [r.identity for r in queries] == ids == [r.identity for r in gallery]
    assert {r.camera for r in queries} == {0} and {r.camera for r in gallery} == {1}
    assert (queries, gallery) == protocols.single_shot(ds, ids, trial=0, seed=0)
    picks = {tuple(r.path for r in protocols.single_shot(ds, range(50), trial=t, seed=0)[0]) for t in range(3)}
    assert len(picks) == 3  # a different random pick per trial

    ds = Dataset(ds.spec, ds.root, [r for r in ds.records if not (r.identity == 3 and r.camera == 1)])
    with caplog.at_level(logging.WARNING):
        queries, gallery = protocols.single_shot(ds, ids, trial=0, seed=0)
    assert [r.identity for r in queries] == [7, 41, 12] == [r.identity for r in gallery]
    assert "1 identities lack an image in camera 0 or 1, skipped: [3]" in caplog.text


def loop_top1(score, q_ids, q_cams, g_ids, g_cams, same: bool) -> float:
    """Top-1 (%) of the probes of one kind, probe by probe (ties against the probe, as metrics.cmc)."""
    hits, n = 0, 0
    for i in range(len(q_ids)):
        j = int(np.flatnonzero(g_ids == q_ids[i])[0])
        if (q_cams[i] == g_cams[j]) != same:
            continue
        n += 1
        hits += all(score[i, j] > score[i, k] for k in range(len(g_ids)) if k != j)
    return 100 * hits / n


def test_camera_split_matches_a_probe_by_probe_count():
    """Would fail with the two kinds swapped, or with the probe's camera compared to the wrong
    gallery image."""
    rng = np.random.default_rng(0)
    g_ids = np.arange(12)
    g_cams = rng.integers(0, 2, 12)
    q_ids = np.repeat(g_ids, 3)
    q_cams = rng.integers(0, 2, 36)
    score = rng.standard_normal((36, 12))
    score[np.arange(36), q_ids] += 1.0  # better than chance, so that top-1 is neither 0 nor 100
    split = protocols.camera_split(score, q_ids, q_cams, g_ids, g_cams)
    for kind, same in (("same_camera", True), ("cross_camera", False)):
        assert split[kind]["rank1"] == pytest.approx(loop_top1(score, q_ids, q_cams, g_ids, g_cams, same))
    assert split["same_camera"]["probes"] == int(sum(q_cams == g_cams[q_ids]))
    assert split["same_camera"]["probes"] + split["cross_camera"]["probes"] == 36
    # the two kinds together are the whole draw's top-1
    overall = 100 * metrics.cmc(score, q_ids, g_ids, max_rank=1)[0]
    weighted = sum(split[k]["rank1"] * split[k]["probes"] for k in split) / 36
    assert weighted == pytest.approx(overall)


def test_camera_split_summary_is_the_mean_and_sample_std_over_draws():
    draws = [{"same_camera": {"rank1": a, "probes": 10}, "cross_camera": {"rank1": b, "probes": 20}}
             for a, b in ((80.0, 50.0), (90.0, 60.0), (70.0, 55.0))]
    split = report.summarize_camera_split([{"camera_split": draws}])
    assert split["same_camera"]["rank1"]["mean"] == pytest.approx(80.0)
    assert split["same_camera"]["rank1"]["std"] == pytest.approx(10.0)  # ddof = 1
    assert split["cross_camera"]["rank1"]["mean"] == pytest.approx(55.0)
    assert split["cross_camera"]["probes"] == 20 and split["same_camera"]["draws"] == 3
    assert report.summarize_camera_split([{"eq7": {}}]) is None  # single-shot: no split
