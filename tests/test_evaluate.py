"""The evaluation numbers behind the tables (§4.1): which way each ranking is read, repeats, the mean
± std over trials, and when a finished trial's eval.json is reused — on hand-made score matrices."""
import json
import os

import numpy as np
import pytest

from reid_tf import evaluate, protocols, report, scoring
from reid_tf.run_folder import eval_prefix
from reid_tf.datasets import Record

IDENTITIES = [7, 8, 9]
# Per draw (repeat r uses seed + r): (Q, G) matrices, true matches on the diagonal. For each, the rank
# of every query's true match worked out by hand, then CMC = fraction with rank ≤ k and, one true
# match per query, mAP = mean of 1 / rank.
MATRICES = {
    0: {
        # d: q0 0.1 is the smallest → 1; q1 0.2 → 1; q2 0.8 behind 0.4 and 0.3 → 3. Read the wrong
        # way round (larger d = more similar) the ranks would be 3, 3, 1.
        "distance": [[0.1, 0.5, 0.9], [0.5, 0.2, 0.3], [0.4, 0.3, 0.8]],
        # p(match): q0 0.9 → 1; q1 0.4 behind 0.5 → 2; q2 0.6 → 1
        "p_match": [[0.9, 0.1, 0.2], [0.3, 0.4, 0.5], [0.1, 0.2, 0.6]],
        # Eq. 7: q0 0.2 behind 0.9 → 2; q1 0.8 → 1; q2 0.2 behind 0.5 → 2
        "score": [[0.2, 0.9, 0.1], [0.1, 0.8, 0.3], [0.5, 0.1, 0.2]],
    },
    1: {
        "distance": [[0.1, 0.9, 0.9], [0.9, 0.1, 0.9], [0.9, 0.9, 0.1]],  # every true match nearest → 1, 1, 1
        "p_match": [[0.9, 0.1, 0.2], [0.3, 0.4, 0.5], [0.1, 0.2, 0.6]],  # as draw 0: 1, 2, 1
        "score": [[0.1, 0.9, 0.9], [0.9, 0.1, 0.9], [0.9, 0.9, 0.1]],  # every true match last → 3, 3, 3
    },
}
CURVES = {0: {"distance": [2 / 3, 2 / 3, 1], "p_match": [2 / 3, 1, 1], "eq7": [1 / 3, 1, 1]},
          1: {"distance": [1, 1, 1], "p_match": [2 / 3, 1, 1], "eq7": [0, 0, 1]}}
MAPS = {0: {"distance": (1 + 1 + 1 / 3) / 3, "p_match": (1 + 1 / 2 + 1) / 3, "eq7": (1 / 2 + 1 + 1 / 2) / 3},
        1: {"distance": 1.0, "p_match": (1 + 1 / 2 + 1) / 3, "eq7": 1 / 3}}


class FakeEngine:
    """ScoringEngine's interface, returning the hand matrices of the draw the images came from."""

    def __init__(self, network):
        self.network = network

    def score_matrix(self, query, gallery):
        draw = int(query[0].split("_")[1])  # the fake images are their paths, "q<id>_<seed>"
        return {k: np.array(v, np.float32) for k, v in MATRICES[draw].items()}


@pytest.fixture
def fake_scoring(monkeypatch):
    """Replace the engine, image loading and the single-shot draw; record the draws asked for."""
    draws = []

    def single_shot(dataset, identities, trial, seed):
        draws.append((trial, seed))
        return ([Record(f"q{i}_{seed}", i, 0) for i in identities], [Record(f"g{i}_{seed}", i, 1) for i in identities])

    monkeypatch.setattr(scoring, "ScoringEngine", FakeEngine)
    monkeypatch.setattr(protocols, "load_images", lambda paths: list(paths))
    monkeypatch.setattr(protocols, "single_shot", single_shot)
    return draws


def test_each_ranking_read_the_right_way_and_repeats_draw_with_seed_plus_r(fake_scoring):
    out = protocols.evaluate_network("net", None, IDENTITIES, trial=3, seed=0, repeats=2)
    assert fake_scoring == [(3, 0), (3, 1)]
    for name in ("distance", "p_match", "eq7"):
        np.testing.assert_allclose(out[name]["curves"], [CURVES[0][name], CURVES[1][name]], err_msg=name)
        np.testing.assert_allclose(out[name]["map"], [MAPS[0][name], MAPS[1][name]], err_msg=name)


def test_summary_of_two_draws_by_hand(fake_scoring):
    summary = report.summarize([protocols.evaluate_network("net", None, IDENTITIES, trial=0, seed=0, repeats=2)])
    d = summary["distance"]
    # rank-1 by d: 2/3 and 1 → mean 5/6, sample std |1 − 2/3| / √2
    assert d["rank"]["1"]["mean"] == pytest.approx(100 * 5 / 6)
    assert d["rank"]["1"]["std"] == pytest.approx(100 * (1 / 3) / np.sqrt(2))
    assert summary["eq7"]["rank"]["1"]["mean"] == pytest.approx(100 * (1 / 3 + 0) / 2)
    assert summary["eq7"]["rank"]["5"]["mean"] == pytest.approx(100.0)  # a gallery of 3: all by rank 3
    assert d["map"]["mean"] == pytest.approx(100 * (7 / 9 + 1) / 2)
    np.testing.assert_allclose(summary["p_match"]["curve"], [100 * 2 / 3, 100, 100])
    assert d["n"] == 2


def write_trial(workdir, trial, draw, model_newer=False, protocol="single_shot"):
    """A finished run's workdir: run.json, model.keras and an eval json of hand curves: one draw's
    (draw: 0 or 1), or of a list of draws (e.g. the 10 gallery draws of protocol random_gallery)."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "run.json"), "w") as f:
        json.dump({"dataset": "synthetic", "model": "l23", "trial": trial}, f)
    draws = draw if isinstance(draw, list) else [draw]
    per_trial = {name: {"curves": [CURVES[d][name] for d in draws], "map": [MAPS[d][name] for d in draws]}
                 for name in protocols.RANKINGS}
    paths = [os.path.join(workdir, "model.keras"), eval_prefix(workdir, protocol) + ".json"]
    with open(paths[0], "w") as f:
        f.write("not a real model: it must not be loaded when eval.json is reused")
    with open(paths[1], "w") as f:
        json.dump({"dataset": "synthetic", "model": "l23", "trial": trial, "per_trial": per_trial,
                   **({} if protocol == "single_shot" else {"protocol": protocol})}, f)
    t = os.path.getmtime(paths[0])
    os.utime(paths[1], (t + 10, t + 10))
    if model_newer:
        os.utime(paths[0], (t + 20, t + 20))


def test_trials_mean_and_std_from_finished_eval_json(tmp_path, monkeypatch):
    workdirs = [str(tmp_path / "t0"), str(tmp_path / "t1")]
    write_trial(workdirs[0], 0, draw=0)
    write_trial(workdirs[1], 1, draw=1)
    monkeypatch.setattr(evaluate, "evaluate_workdir", lambda *a, **k: pytest.fail("a finished trial was re-evaluated"))
    body = evaluate.evaluate_workdirs(workdirs, str(tmp_path / "out" / "trials"))
    assert body["trials"] == [0, 1]
    d = body["summary"]["distance"]["rank"]["1"]
    assert (d["mean"], d["std"]) == (pytest.approx(100 * 5 / 6), pytest.approx(100 * (1 / 3) / np.sqrt(2)))
    p = body["summary"]["p_match"]["rank"]["1"]
    assert (p["mean"], p["std"]) == (pytest.approx(100 * 2 / 3), pytest.approx(0.0))
    with open(tmp_path / "out" / "trials.json") as f:
        assert json.load(f)["summary"] == body["summary"]
    assert "83.33 ± 23.57" in (tmp_path / "out" / "trials.md").read_text()  # rank-1 by d


def test_trials_map_std_is_the_sample_std_like_rank_k(tmp_path):
    """One spread rule in one table (mAP had the population std beside rank-k's sample std)."""
    workdirs = [str(tmp_path / "t0"), str(tmp_path / "t1")]
    write_trial(workdirs[0], 0, draw=0)
    write_trial(workdirs[1], 1, draw=1)
    body = evaluate.evaluate_workdirs(workdirs, str(tmp_path / "trials"))
    assert body["summary"]["distance"]["map"]["std"] == pytest.approx(100 * np.std([7 / 9, 1.0], ddof=1))


def test_finished_trials_are_reused_only_when_current(tmp_path, monkeypatch):
    """eval.json is reused when newer than model.keras and holding the repeats asked for."""
    evaluated = []

    def evaluate_workdir(workdir, repeats=1, **kwargs):
        evaluated.append((os.path.basename(workdir), repeats))
        with open(os.path.join(workdir, "eval.json")) as f:
            return json.load(f)

    monkeypatch.setattr(evaluate, "evaluate_workdir", evaluate_workdir)
    fresh, stale = str(tmp_path / "fresh"), str(tmp_path / "stale")
    write_trial(fresh, 0, draw=0)
    write_trial(stale, 1, draw=1, model_newer=True)  # retrained after its evaluation
    evaluate.evaluate_workdirs([fresh, stale], str(tmp_path / "a"))
    assert evaluated == [("stale", 1)]
    evaluated.clear()
    evaluate.evaluate_workdirs([fresh], str(tmp_path / "b"), repeats=2)  # eval.json holds 1 draw
    assert evaluated == [("fresh", 2)]
    evaluated.clear()
    evaluate.evaluate_workdirs([fresh], str(tmp_path / "c"), reuse=False)
    assert evaluated == [("fresh", 1)]


def test_random_gallery_trials_spread_is_over_the_trials_means(tmp_path, monkeypatch):
    """[31]'s protocol scores 10 gallery draws per trial; the paper's ± is over trials, so each trial
    counts once, as the mean of its draws. Trial 0's draws alternate the hand draws 0 and 1 (rank-1
    by d 2/3, 1, ...: mean 5/6), trial 1's are all draw 1 (rank-1 by d 1): mean 11/12, ± |1 − 5/6| / √2,
    n = 2 (pooling the 20 draws would give ± 0.17 over n = 20)."""
    workdirs = [str(tmp_path / "t0"), str(tmp_path / "t1")]
    write_trial(workdirs[0], 0, draw=[0, 1] * 5, protocol="random_gallery")
    write_trial(workdirs[1], 1, draw=[1] * 10, protocol="random_gallery")
    monkeypatch.setattr(evaluate, "evaluate_workdir", lambda *a, **k: pytest.fail("a finished trial was re-evaluated"))
    body = evaluate.evaluate_workdirs(workdirs, str(tmp_path / "trials_random_gallery"), protocol="random_gallery")
    d = body["summary"]["distance"]
    assert (d["rank"]["1"]["mean"], d["rank"]["1"]["std"]) == (pytest.approx(100 * 11 / 12),
                                                               pytest.approx(100 * (1 / 6) / np.sqrt(2)))
    trial_maps = [(MAPS[0]["distance"] + MAPS[1]["distance"]) / 2, MAPS[1]["distance"]]
    assert (d["map"]["mean"], d["map"]["std"]) == (pytest.approx(100 * np.mean(trial_maps)),
                                                   pytest.approx(100 * np.std(trial_maps, ddof=1)))
    np.testing.assert_allclose(d["curve"], 100 * np.mean([np.mean([CURVES[0]["distance"], CURVES[1]["distance"]], 0),
                                                          CURVES[1]["distance"]], 0))
    assert d["n"] == 2 and body["protocol"] == "random_gallery"
    # the single-shot protocol keeps its rule: one draw per trial, as before
    write_trial(workdirs[0], 0, draw=0)
    write_trial(workdirs[1], 1, draw=1)
    single = evaluate.evaluate_workdirs(workdirs, str(tmp_path / "trials"))["summary"]["distance"]["rank"]["1"]
    assert single["std"] == pytest.approx(100 * (1 / 3) / np.sqrt(2))


def test_random_gallery_eval_json_is_reused_only_with_all_its_draws_and_current(tmp_path, monkeypatch):
    """Under --protocol=random_gallery a run's eval_random_gallery.json is reused when newer than model.keras and
    holding repeats × 10 draws of that protocol; a single-shot eval.json never stands in for it."""
    evaluated = []

    def evaluate_workdir(workdir, repeats=1, protocol="single_shot", **kwargs):
        evaluated.append((os.path.basename(workdir), repeats, protocol))
        write_trial(workdir, 0, draw=[0] * 10 * repeats, protocol=protocol)
        with open(eval_prefix(workdir, protocol) + ".json") as f:
            return json.load(f)

    monkeypatch.setattr(evaluate, "evaluate_workdir", evaluate_workdir)
    done, stale, single, short = (str(tmp_path / n) for n in ("done", "stale", "single", "short"))
    write_trial(done, 0, draw=[0] * 10, protocol="random_gallery")
    write_trial(stale, 1, draw=[0] * 10, protocol="random_gallery", model_newer=True)  # retrained since
    write_trial(single, 2, draw=0)  # eval.json only: the single-shot protocol
    write_trial(short, 3, draw=[0] * 9, protocol="random_gallery")  # a draw short
    evaluate.evaluate_workdirs([done, stale, single, short], str(tmp_path / "a"), protocol="random_gallery")
    assert evaluated == [("stale", 1, "random_gallery"), ("single", 1, "random_gallery"), ("short", 1, "random_gallery")]
    evaluated.clear()
    evaluate.evaluate_workdirs([done], str(tmp_path / "b"), repeats=2, protocol="random_gallery")  # 20 draws asked
    assert evaluated == [("done", 2, "random_gallery")]
