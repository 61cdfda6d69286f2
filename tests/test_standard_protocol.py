"""metrics.standard_protocol (Market-1501's evaluation) against hand-worked rankings: same-camera and
junk exclusion, distractors, ties, queries whose only true matches are excluded."""
import numpy as np
import pytest

from reid_tf.metrics import JUNK, average_precisions, cmc, match_ranks, standard_protocol

# One query (identity 1, camera 0) and seven gallery images: (identity, camera, score).
GALLERY = [
    (1, 0, 0.99),    # its own camera: excluded, although it scores highest
    (JUNK, 1, 0.95),  # junk: excluded
    (0, 2, 0.90),    # distractor: stays, a non-match
    (1, 1, 0.80),    # true match
    (2, 1, 0.70),    # another identity
    (1, 2, 0.60),    # true match
    (3, 0, 0.10),
]


def evaluate(rows, queries=((1, 0),), **kw):
    g_ids, g_cams, scores = (np.array(c) for c in zip(*rows))
    q_ids, q_cams = (np.array(c) for c in zip(*queries))
    return standard_protocol(np.tile(scores, (len(q_ids), 1)), q_ids, q_cams, g_ids, g_cams, **kw)


def test_exclusions_and_distractors_by_hand():
    out = evaluate(GALLERY)
    # Ranking after exclusion: distractor 0.90, match 0.80, other 0.70, match 0.60, other 0.10.
    assert out["first_match"].tolist() == [2]
    np.testing.assert_allclose(out["curve"], [0, 1, 1, 1, 1, 1, 1])
    assert out["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)  # precision at the two matches
    assert out["skipped"] == 0


def test_without_exclusion_the_same_camera_image_would_count():
    """The excluded same-camera image scores highest: counting it would give rank-1 and AP 1/1, 2/3, 3/5."""
    moved = [(i, 3 if (i, c) == (1, 0) else c, s) for i, c, s in GALLERY]  # same image, another camera
    out = evaluate(moved)
    assert out["first_match"].tolist() == [1]
    assert out["map"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_ties_are_pessimistic():
    rows = [(1, 1, 0.5), (2, 1, 0.5), (3, 2, 0.5), (4, 2, 0.9)]
    out = evaluate(rows)
    # 0.9 first, then the tie of three: both non-matches before the match -> rank 4, AP 1/4.
    assert out["first_match"].tolist() == [4] and out["map"] == pytest.approx(0.25)
    np.testing.assert_allclose(out["curve"], [0, 0, 0, 1])
    # Two matches inside the tie group: both come after the non-match there.
    out = evaluate([(1, 1, 0.5), (1, 2, 0.5), (2, 1, 0.5)])
    assert out["first_match"].tolist() == [2] and out["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_query_whose_only_matches_are_excluded_is_skipped():
    rows = [(1, 0, 0.9), (5, 0, 0.8), (2, 1, 0.3), (5, 2, 0.2)]
    # Query identity 1 (camera 0) has only an image of its own camera: no true match is left.
    out = evaluate(rows, queries=((1, 0), (5, 0)))
    assert out["valid"].tolist() == [False, True] and out["skipped"] == 1
    # Query 5 keeps (1, 0, 0.9), (2, 1, 0.3), (5, 2, 0.2): its match is third.
    assert out["first_match"].tolist() == [0, 3] and np.isnan(out["ap"][0])
    assert out["map"] == pytest.approx(1 / 3) and out["curve"][2] == 1.0 and out["curve"][1] == 0.0
    with pytest.raises(ValueError, match="none of the 1 queries has a true match"):
        evaluate(rows, queries=((1, 0),))


def test_several_queries_chunked_and_max_rank():
    rng = np.random.default_rng(0)
    g_ids, g_cams = rng.integers(-1, 6, 300), rng.integers(0, 6, 300)
    q_ids, q_cams = rng.integers(1, 6, 40), rng.integers(0, 6, 40)
    scores = rng.normal(size=(40, 300))
    whole = standard_protocol(scores, q_ids, q_cams, g_ids, g_cams, max_rank=10)
    chunked = standard_protocol(scores, q_ids, q_cams, g_ids, g_cams, max_rank=10, chunk=7)
    np.testing.assert_array_equal(whole["first_match"], chunked["first_match"])
    assert whole["map"] == pytest.approx(chunked["map"]) and len(whole["curve"]) == 10
    for q in range(40):  # a per-query loop, written independently
        keep = ~((g_ids == q_ids[q]) & (g_cams == q_cams[q])) & (g_ids != JUNK)
        s, m = scores[q][keep], (g_ids == q_ids[q])[keep]
        ranked = m[np.argsort(-s, kind="stable")]
        hits = np.flatnonzero(ranked) + 1
        assert whole["first_match"][q] == (hits[0] if len(hits) else 0)
        if len(hits):
            assert whole["ap"][q] == pytest.approx(np.mean(np.arange(1, len(hits) + 1) / hits))


def test_without_exclusions_it_is_the_single_shot_metrics_ties_included():
    """Nothing to exclude (the gallery's cameras differ from every query's, no junk): first match, AP
    and CMC are exactly match_ranks, average_precisions and cmc of the single-shot metrics, on scores
    with many ties and several true matches per query: one tie rule, one AP."""
    rng = np.random.default_rng(3)
    g_ids = rng.permutation(np.repeat(np.arange(1, 16), 3))[:40]  # some identities 3 times, distractors none
    q_ids = rng.choice(np.unique(g_ids), size=25)
    scores = rng.integers(0, 4, size=(25, 40)).astype(float)  # four values: ties everywhere
    out = standard_protocol(scores, q_ids, np.zeros(25, int), g_ids, np.ones(40, int), chunk=6)
    assert out["skipped"] == 0
    np.testing.assert_array_equal(out["first_match"], match_ranks(scores, q_ids, g_ids))
    np.testing.assert_allclose(out["ap"], average_precisions(scores, q_ids, g_ids))
    np.testing.assert_allclose(out["curve"], cmc(scores, q_ids, g_ids))


def test_bad_input():
    with pytest.raises(ValueError, match="need scores"):
        standard_protocol(np.zeros((2, 3)), [1, 2], [0, 0], [1, 2], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        standard_protocol(np.full((1, 2), np.nan), [1], [0], [1, 2], [1, 1])
