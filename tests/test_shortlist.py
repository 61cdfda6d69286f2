"""reid_tf.shortlist: two-stage scoring in blocks equals the engine's own shortlist scoring; the
ranking it gives the standard protocol (reid_tf.protocols.evaluate_standard); progress lines."""
import logging

import numpy as np
import pytest

from reid_tf import metrics, protocols, shortlist
from reid_tf.datasets import Record
from reid_tf.model import build_model
from reid_tf.scoring import ScoringEngine


@pytest.fixture(scope="module")
def engine():
    return ScoringEngine(build_model("l23"), pair_batch=32, kernel_block=16, image_batch=8)


def images(n, seed):
    """Random images with a per-image brightness and colour, so the embeddings spread out."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 1, 1, 3)) * rng.random((n, 1, 1, 1))
    return np.clip(base + 0.2 * rng.random((n, 160, 60, 3)), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def data(engine):
    q, g = images(5, 1), images(26, 2)
    return q, g, engine.score_matrix(q, g, shortlist=6), engine.score_matrix(q, g)


def test_blocks_and_pieces_equal_the_engine(engine, data, caplog):
    q, g, reference, _ = data
    with caplog.at_level(logging.INFO):
        got = shortlist.score_shortlists(engine, q, g, k=6, image_chunk=4, block_size=7, max_pairs=9)
    assert got.shortlist.shape == (5, 6) and got.pairs == 30
    for i in range(5):  # the same K nearest gallery images as the engine's stage 1
        assert set(got.shortlist[i]) == set(np.flatnonzero(reference["evaluated"][i]))
        assert np.all(np.diff(got.distance[i]) >= 0)
    rows = np.arange(5)[:, None]
    np.testing.assert_allclose(got.p_match, reference["p_match"][rows, got.shortlist], atol=1e-5)
    np.testing.assert_allclose(got.score, reference["score"][rows, got.shortlist], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.distance, reference["distance"][rows, got.shortlist], atol=1e-6)
    np.testing.assert_allclose(got.all_distance, reference["distance"], atol=1e-5)
    assert "Eq. 7 on 5 × 6 shortlisted pairs: 30/30 pairs (100%)" in caplog.text and "ETA" in caplog.text


def test_k_at_least_g_is_exhaustive(engine, data):
    q, g, _, full = data
    got = shortlist.score_shortlists(engine, q, g, k=100, block_size=10, max_pairs=40)
    rows = np.arange(5)[:, None]
    assert got.shortlist.shape == (5, 26)
    np.testing.assert_allclose(got.score, full["score"][rows, got.shortlist], rtol=1e-5, atol=1e-4)
    ranking = got.ranking()
    np.testing.assert_allclose(ranking, full["score"], rtol=1e-5, atol=1e-4)


def test_ranking_puts_the_shortlist_first_then_the_rest_by_d():
    result = shortlist.Shortlisted(
        shortlist=np.array([[2, 0]]), distance=np.array([[0.1, 0.3]]), p_match=np.array([[0.2, 0.9]]),
        score=np.array([[1.6, 2.2]]), all_distance=np.array([[0.3, 1.5, 0.1, 0.7]]), seconds={}, pairs=2)
    assert np.argsort(-result.ranking("score")[0]).tolist() == [0, 2, 3, 1]  # differs from d's order
    assert np.argsort(-result.ranking("p_match")[0]).tolist() == [0, 2, 3, 1]
    assert np.argsort(-result.ranking("distance")[0]).tolist() == [2, 0, 3, 1]


def test_near_ties_at_the_boundary_are_shortlisted_by_exact_distance():
    """Embeddings of near-duplicate images (one person seen many times) are closer than the Gram form
    ‖q‖² + ‖g‖² − 2q·g resolves in float32: stage 1 must still shortlist each query's K nearest by
    exact d (here in float64), which needs the re-ranked margin of extra candidates (with none, the
    Gram form's rounding picks the wrong images for several of these queries)."""
    rng = np.random.default_rng(0)
    unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    centre = rng.normal(size=256)
    gallery = unit(centre + 1e-4 * rng.normal(size=(40, 256)) * np.linalg.norm(centre))
    queries = unit(centre + 1e-4 * rng.normal(size=(16, 256)) * np.linalg.norm(centre))
    exact = np.linalg.norm(queries.astype(np.float64)[:, None] - gallery.astype(np.float64)[None], axis=-1)
    _, got, got_d = shortlist.nearest(queries, gallery, 5)
    np.testing.assert_array_equal(got, np.argsort(exact, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(got_d, np.sort(exact, axis=1)[:, :5], rtol=1e-3)


def test_cut_keeps_an_images_pairs_together():
    owner = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    pieces = shortlist._cut(np.arange(10), owner, 4)
    assert [p.tolist() for p in pieces] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [p.tolist() for p in shortlist._cut(np.arange(3), owner[:3], 2)] == [[0, 1], [2]]


def test_gallery_blocks_partition():
    emb = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    blocks = shortlist.gallery_blocks(emb, 30)
    assert sorted(np.concatenate(blocks).tolist()) == list(range(100)) and max(map(len, blocks)) <= 30


def _protocol_by_hand(order_key, q_ids, q_cams, g_ids, g_cams):
    """First-match rank and AP of each query, written out per query: gallery images sorted by
    order_key(q) ascending, minus the query's identity from its own camera and the junk (-1)."""
    first, ap = [], []
    for q in range(len(q_ids)):
        kept = [g for g in sorted(range(len(g_ids)), key=order_key(q))
                if g_ids[g] != -1 and not (g_ids[g] == q_ids[q] and g_cams[g] == q_cams[q])]
        hits = [r + 1 for r, g in enumerate(kept) if g_ids[g] == q_ids[q]]
        first.append(hits[0])
        ap.append(np.mean([(n + 1) / r for n, r in enumerate(hits)]))
    return first, ap


def test_evaluate_standard_on_records(engine, tmp_path):
    """Records written as files, two-stage K = 4: each ranking's first matches and APs equal a
    by-hand protocol on the engine's exhaustive scores of the same files (shortlist = 4 nearest by d,
    ordered by Eq. 7 or p(match), then the rest by d; or d alone), and the standard protocol
    (reid_tf.protocols.evaluate_standard) reports their CMC and mAP. The gallery holds a same-camera
    image of query 0's and query 2's identity (excluded), junk (excluded) and two distractors (kept)."""
    from PIL import Image

    from reid_tf.images import load_images

    q, g = images(3, 3), images(9, 4)
    layout = (("q", q, [1, 2, 3], [0, 0, 1]), ("g", g, [1, 1, 2, 2, 3, -1, 0, 0, 3], [0, 1, 1, 2, 0, 1, 2, 0, 1]))
    recs = []
    for name, imgs, ids, cams in layout:
        rs = []
        for k, (img, i, c) in enumerate(zip(imgs, ids, cams)):
            path = str(tmp_path / f"{name}{k}.png")
            Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
            rs.append(Record(path, i, c))
        recs.append(rs)
    out = protocols.evaluate_standard(engine, recs[0], recs[1], k=4)
    standard = out["standard"]
    assert standard["pairs"] == 12 and standard["k"] == 4
    assert set(standard["seconds"]) >= {"features", "distance", "pairs"}
    assert (standard["queries"], standard["gallery"], standard["skipped_queries"]) == (3, 9, 0)
    two_stage_scores = shortlist.score_shortlists(engine, [r.path for r in recs[0]], [r.path for r in recs[1]], k=4)

    full = engine.score_matrix(load_images([r.path for r in recs[0]]), load_images([r.path for r in recs[1]]))
    d = full["distance"]
    near = [set(np.argsort(d[i], kind="stable")[:4].tolist()) for i in range(3)]

    def two_stage(key):  # shortlisted first by `key` descending, then the rest by d
        return lambda i: lambda gi: (0, -full[key][i, gi]) if gi in near[i] else (1, d[i, gi])

    ids_cams = (layout[0][2], layout[0][3], layout[1][2], layout[1][3])
    for name, order in (("eq7", two_stage("score")), ("p_match", two_stage("p_match")),
                        ("distance", lambda i: lambda gi: d[i, gi])):
        first, ap = _protocol_by_hand(order, *ids_cams)
        got = metrics.standard_protocol(two_stage_scores.ranking(protocols.RANKINGS[name]), *ids_cams)
        assert got["skipped"] == 0
        assert got["first_match"].tolist() == first, name
        np.testing.assert_allclose(got["ap"], ap, rtol=1e-6, err_msg=name)
        curve = [np.mean(np.array(first) <= r) for r in range(1, 10)]  # CMC over the 9 gallery images
        np.testing.assert_allclose(out[name]["curves"], [curve], atol=1e-9, err_msg=name)
        np.testing.assert_allclose(out[name]["map"], [np.mean(ap)], rtol=1e-6, err_msg=name)


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_large_gallery_bench_runs_small_and_prints_one_row_per_k(tmp_path):
    """benchmarks/bench_large_gallery.py (the Market-1501-sized timing) at a tiny size: it runs end to end and
    its table has every K with its pair count Q·K, and the idle projection column of a reduced run."""
    import os
    import subprocess
    import sys
    from tests import fixtures
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_large_gallery", "--queries=6", "--gallery=30",
                           "--ks=3,5", f"--workdir={tmp_path}", "--idle_pair_rate=1191", "--idle_image_rate=269"],
                          capture_output=True, text=True, cwd=fixtures.REPO,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| 3 |") or line.startswith("| 5 |")]
    assert [(r[0], r[1]) for r in rows] == [("| 3", "18"), ("| 5", "30")], proc.stdout
    assert all(len(r) == 10 for r in rows) and "Idle projection" in proc.stdout
    assert os.listdir(tmp_path) == []  # the synthetic images are removed
