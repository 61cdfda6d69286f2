"""The two test protocols of issue 11 (ours and [31]'s) and the one rule for the spread over trials."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from data_tools.make_synthetic import make_synthetic
from reid_tf import config, datasets, evaluate, metrics
from reid_tf.model import build_model
from reid_tf.pairs import load_images


def test_spread_is_the_sample_std_and_zero_for_one_value():
    assert metrics.spread([0.5]) == 0.0
    assert metrics.spread([1.0, 3.0]) == pytest.approx(np.sqrt(2.0))  # ((1−2)² + (3−2)²) / (2 − 1)
    np.testing.assert_allclose(metrics.spread([[1.0, 0.0], [3.0, 0.0]]), [np.sqrt(2.0), 0.0])
    np.testing.assert_array_equal(metrics.spread([[1.0, 2.0]]), [0.0, 0.0])
    # evaluate.summarize reports mAP with the same rule as rank-k
    fake = {name: {"curves": [[0.2, 1.0], [0.6, 1.0]], "map": [0.2, 0.6]} for name in evaluate.RANKINGS}
    s = evaluate.summarize([fake])["eq7"]
    assert s["map"]["std"] == pytest.approx(s["rank"]["1"]["std"]) == pytest.approx(100 * np.sqrt(0.08))


def _records(n_ids=6, per_camera=2):
    return [datasets.Record(f"{i}_{c}_{k}.png", i, c) for i in range(n_ids) for c in (0, 1)
            for k in range(per_camera)]


def test_xcorr_draws_one_gallery_image_per_identity_from_either_camera():
    records = _records()
    draws = evaluate.xcorr_draws(records, seed=3)
    assert len(draws) == config.XCORR_GALLERY_DRAWS
    cameras = set()
    for probes, gallery in draws:
        ids = np.array([records[g].identity for g in gallery])
        np.testing.assert_array_equal(ids, np.arange(6))  # one per identity, in identity order
        assert sorted([*probes, *gallery]) == list(range(len(records)))  # every other image a probe
        cameras |= {records[g].camera for g in gallery}
    assert cameras == {0, 1}
    assert len({tuple(g) for _, g in draws}) > 1  # the draws differ
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(draws, evaluate.xcorr_draws(records, seed=3)))


def test_xcorr_protocol_equals_full_model_pairs_ranked_by_hand(tmp_path):
    """Each draw's CMC from the engine equals the full network's Eq. 7 on the explicit probe ×
    gallery pairs, ranked by a loop (pessimistic ties)."""
    root = make_synthetic(str(tmp_path / "s"), identities=5, seed=0)
    dataset = datasets.load_dataset("synthetic", root)
    ids = dataset.identities[:4]
    keras.utils.set_random_seed(0)
    network = build_model("l2")
    got = evaluate.evaluate_network(network, dataset, ids, trial=0, seed=1, protocol="xcorr")
    records = datasets.records_of(dataset, ids)
    images = load_images([r.path for r in records])
    identity = np.array([r.identity for r in records])
    for d, (probes, gallery) in enumerate(evaluate.xcorr_draws(records, seed=1)):
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
