"""CMC, rank-k and mAP (§4.1) against hand-worked answers and a plain loop reference."""
import numpy as np
import pytest

from reid_tf.metrics import (average_precisions, cmc, match_ranks, mean_average_precision, rank_k,
                             summarize_trials)

# Hand-worked single-shot example: 4 queries, a gallery of 5 identities, one tie.
#
#   gallery ids          1     2     3     4     5
#   q0 (id 1)          0.9   0.1   0.2   0.3   0.4   true 0.9, nothing ≥ it          → rank 1
#   q1 (id 2)          0.5   0.5   0.7   0.1   0.2   true 0.5; g3 0.7 > and g1 0.5 =
#                                                    (tie, counted against us)        → rank 3
#                                                    (an optimistic count would say 2)
#   q2 (id 3)          0.3   0.3   0.3   0.3   0.3   constant: 4 others tie           → rank 5
#   q3 (id 4)          0.1   0.8   0.2   0.6   0.0   true 0.6; g2 0.8 >               → rank 2
#
# ranks (1, 3, 5, 2) → CMC k=1..5: 1/4, 2/4, 3/4, 3/4, 4/4.
# AP with one true match = 1/rank → mAP = (1 + 1/3 + 1/5 + 1/2)/4 = 61/120.
# "expected" ties: q1's match ties with one other item after one strictly above → P(rank ≤ 2) = 1/2,
# q2 is uniform over 5 places → P(rank ≤ k) = k/5; so the curve is
#   k=1: (1 + 0 + 1/5 + 0)/4 = 0.3     k=2: (1 + 1/2 + 2/5 + 1)/4 = 0.725
#   k=3: (1 + 1 + 3/5 + 1)/4 = 0.9     k=4: (1 + 1 + 4/5 + 1)/4 = 0.95    k=5: 1.
HAND_SCORES = np.array([
    [0.9, 0.1, 0.2, 0.3, 0.4],
    [0.5, 0.5, 0.7, 0.1, 0.2],
    [0.3, 0.3, 0.3, 0.3, 0.3],
    [0.1, 0.8, 0.2, 0.6, 0.0],
])
HAND_QUERY = np.array([1, 2, 3, 4])
HAND_GALLERY = np.array([1, 2, 3, 4, 5])


def _loop_ranks(scores, query_ids, gallery_ids):
    """Reference: walk the gallery sorted by score, ties broken against the true matches."""
    ranks = []
    for q in range(len(query_ids)):
        order = sorted(range(len(gallery_ids)),
                       key=lambda g: (-scores[q, g], gallery_ids[g] == query_ids[q]))
        ranks.append(next(i + 1 for i, g in enumerate(order) if gallery_ids[g] == query_ids[q]))
    return np.array(ranks)


def test_hand_example_curve():
    np.testing.assert_array_equal(match_ranks(HAND_SCORES, HAND_QUERY, HAND_GALLERY), [1, 3, 5, 2])
    np.testing.assert_allclose(cmc(HAND_SCORES, HAND_QUERY, HAND_GALLERY), [0.25, 0.5, 0.75, 0.75, 1.0])
    np.testing.assert_allclose(cmc(HAND_SCORES, HAND_QUERY, HAND_GALLERY, max_rank=3), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(cmc(HAND_SCORES, HAND_QUERY, HAND_GALLERY, max_rank=7),
                               [0.25, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0])


def test_hand_example_expected_ties():
    np.testing.assert_allclose(cmc(HAND_SCORES, HAND_QUERY, HAND_GALLERY, ties="expected"),
                               [0.3, 0.725, 0.9, 0.95, 1.0])


def test_hand_example_map():
    assert mean_average_precision(HAND_SCORES, HAND_QUERY, HAND_GALLERY) == pytest.approx(61 / 120)


def test_map_with_several_true_matches():
    # gallery ids 1 1 2 2 3.
    # q id 1: scores .9 .5 .5 .7 .1 → order g0(M) g3 g2 g1(M, tie with g2, put after it) g4
    #         → matches at 1 and 4: AP = (1/1 + 2/4)/2 = 0.75; CMC rank 1 (the best match).
    # q id 2: scores .4 .4 .4 .2 .9 → order g4, g0, g1, g2(M, tied with g0, g1), g3(M)
    #         → matches at 4 and 5: AP = (1/4 + 2/5)/2 = 0.325; CMC rank 1 + 3 = 4.
    scores = np.array([[0.9, 0.5, 0.5, 0.7, 0.1], [0.4, 0.4, 0.4, 0.2, 0.9]])
    q, g = np.array([1, 2]), np.array([1, 1, 2, 2, 3])
    np.testing.assert_allclose(average_precisions(scores, q, g), [0.75, 0.325])
    np.testing.assert_array_equal(match_ranks(scores, q, g), [1, 4])
    np.testing.assert_allclose(cmc(scores, q, g), [0.5, 0.5, 0.5, 1.0, 1.0])


def test_perfect_scorer_is_all_ones():
    ids = np.arange(20)
    scores = np.eye(20) + 0.01 * np.random.default_rng(0).random((20, 20))
    np.testing.assert_array_equal(cmc(scores, ids, ids), np.ones(20))
    np.testing.assert_array_equal(cmc(scores, ids, ids, ties="expected"), np.ones(20))
    assert mean_average_precision(scores, ids, ids) == 1.0


@pytest.mark.parametrize("G", [1, 7, 100])
def test_constant_scorer(G):
    ids = np.arange(G)
    scores = np.full((G, G), 0.5)
    # Pessimistic: every true match sits behind all G − 1 ties → rank G for every query.
    expected = np.zeros(G)
    expected[-1] = 1.0
    np.testing.assert_array_equal(cmc(scores, ids, ids), expected)
    assert mean_average_precision(scores, ids, ids) == pytest.approx(1 / G)
    # Random tie-breaking in expectation: exactly chance, k / G.
    np.testing.assert_allclose(cmc(scores, ids, ids, ties="expected"), np.arange(1, G + 1) / G)


def test_matches_loop_reference_with_ties():
    rng = np.random.default_rng(1)
    gallery = rng.permutation(np.repeat(np.arange(30), 2))[:50]  # some identities twice
    query = rng.choice(np.unique(gallery), size=40)
    scores = rng.integers(0, 6, size=(40, 50)).astype(float)  # many ties
    ranks = _loop_ranks(scores, query, gallery)
    np.testing.assert_array_equal(match_ranks(scores, query, gallery), ranks)
    np.testing.assert_allclose(cmc(scores, query, gallery),
                               [(ranks <= k).mean() for k in range(1, 51)])


def test_expected_ties_matches_monte_carlo():
    rng = np.random.default_rng(2)
    query, gallery = np.arange(8), np.array([0, 0, 0, 1, 2, 3, 4, 5, 6, 7])  # id 0 three times
    scores = rng.integers(0, 3, size=(8, 10)).astype(float)
    trials = []
    for _ in range(4000):  # break ties by a random jitter smaller than any score gap
        jitter = scores + 1e-3 * rng.random(scores.shape)
        trials.append(cmc(jitter, query, gallery))
    np.testing.assert_allclose(cmc(scores, query, gallery, ties="expected"), np.mean(trials, axis=0),
                               atol=0.02)


def test_rank_k_and_summary():
    curve = cmc(HAND_SCORES, HAND_QUERY, HAND_GALLERY)
    assert rank_k(curve, ks=(1, 3, 5)) == {1: 0.25, 3: 0.75, 5: 1.0}
    assert rank_k(curve, ks=(10,)) == {10: 1.0}  # gallery of 5: every match is found by rank 5
    with pytest.raises(ValueError, match="start at 1"):
        rank_k(curve, ks=(0,))
    s = summarize_trials([np.array([0.2, 0.6, 1.0]), np.array([0.4, 0.8, 1.0, 1.0])], ks=(1, 3))
    assert s["trials"] == 2
    np.testing.assert_allclose(s["mean_curve"], [0.3, 0.7, 1.0])
    assert s["mean"] == pytest.approx({1: 0.3, 3: 1.0})
    assert s["std"] == pytest.approx({1: np.std([0.2, 0.4], ddof=1), 3: 0.0})
    assert summarize_trials([curve], ks=(1,))["std"] == {1: 0.0}


def test_errors():
    with pytest.raises(ValueError, match="2 of 3 queries have no true match"):
        cmc(np.zeros((3, 2)), [1, 5, 6], [1, 2])
    with pytest.raises(ValueError, match="no true match"):
        mean_average_precision(np.zeros((1, 2)), [9], [1, 2])
    nan_scores = HAND_SCORES.copy()
    nan_scores[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cmc(nan_scores, HAND_QUERY, HAND_GALLERY)
    with pytest.raises(ValueError, match="NaN"):
        mean_average_precision(nan_scores, HAND_QUERY, HAND_GALLERY)
    with pytest.raises(ValueError, match="do not match"):
        cmc(HAND_SCORES, HAND_QUERY[:3], HAND_GALLERY)
    with pytest.raises(ValueError, match="ties"):
        cmc(HAND_SCORES, HAND_QUERY, HAND_GALLERY, ties="optimistic")
    with pytest.raises(ValueError, match="max_rank"):
        cmc(HAND_SCORES, HAND_QUERY, HAND_GALLERY, max_rank=0)
    with pytest.raises(ValueError, match="no curves"):
        summarize_trials([])

