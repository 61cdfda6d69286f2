"""Training end to end on a tiny synthetic set: checkpoints, exact resume after SIGKILL, the NaN
guard, MirroredStrategy on two logical CPUs, evaluation outputs."""
import json
import os
import signal
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from reid_tf import callbacks, config, datasets, protocols, report
from reid_tf.run_folder import load_network
from reid_tf.pairs import load_images
from reid_tf.scoring import ScoringEngine

TINY = ["--synthetic_identities=24", "--batch_size=6", "--checkpoint_every=2", "--log_every_seconds=0",
        "--nofigures"]


def read(path):
    with open(path) as f:
        return f.read()


def train_cmd(data_dir, workdir, *extra):
    return [sys.executable, "-m", "reid_tf.train", f"--data_dir={data_dir}", f"--workdir={workdir}",
            *TINY, *extra]


def killed_train_cmd(step, data_dir, workdir, *extra):
    """train_cmd, SIGKILLed once the global step reaches `step` (tests/killed_training.py)."""
    return [sys.executable, "-m", "tests.killed_training", str(step), *train_cmd(data_dir, workdir, *extra)[3:]]


def run_train(data_dir, workdir, *extra, check=True):
    proc = subprocess.run(train_cmd(data_dir, workdir, *extra), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def checkpoint_weights(workdir, step=None):
    """name -> value of every variable (weights, BN statistics, Adam slots) of a checkpoint.

    tf.train.Checkpoint stores each variable once, under the first path that reaches it: the
    trainable weights appear under optimizer/_trainable_variables, the BN statistics under model/.
    """
    directory = os.path.join(workdir, "checkpoints")
    path = tf.train.latest_checkpoint(directory) if step is None else os.path.join(directory, f"ckpt-{step}")
    reader = tf.train.load_checkpoint(path)
    names = [n for n, _ in tf.train.list_variables(path) if n.startswith(("model/", "optimizer/"))]
    return path, {n: reader.get_tensor(n) for n in names}


def training_differences(got, ref, lr=config.LEARNING_RATE, steps=2) -> list[str]:
    """How two trainings that should compute the same mathematics in a different order differ beyond
    rounding (MirroredStrategy sums the replicas' gradients; one device sums the whole batch); [] when
    they agree.

    Adam turns a rounding-level difference in a near-zero gradient into a ±lr step, so a few
    scattered elements may differ by up to 2·steps·lr; how many depends on the machine's summation
    order (2 of a BN γ's 32 on a Zen 1 CPU; none or one on the others seen). A real fault (wrong data
    position, lost optimizer state, per-replica BN, one layer or head computed wrongly) moves a good
    part of the variables it touches. So: in each variable at most 1 + size/16 elements beyond the
    rounding tolerance (3 of 32, 1 of a θ head's 6, 17 of 256), at most 1 % pooled over all
    weights and BN statistics, and none beyond the 2·steps·lr bound.
    """
    assert set(got) == set(ref)
    found, beyond, total = [], 0, 0
    for name in ref:
        diff = np.abs(got[name] - ref[name])
        if "/_variables/" in name:  # Adam's moments: running averages of the (rounding-noisy) gradients
            if float(diff.max()) > 0.1 * float(np.abs(ref[name]).max()) + 1e-6:
                found.append(f"{name}: Adam moment off by {float(diff.max()):.3g}")
            continue
        tol = 1e-4 + 1e-2 * np.abs(ref[name])  # weights (optimizer/_trainable_variables) and BN statistics
        n = int(np.sum(diff > tol))
        beyond, total = beyond + n, total + diff.size
        if n > 1 + diff.size // 16:
            found.append(f"{name}: {n} of {diff.size} elements beyond rounding")
        if float(diff.max()) > 2 * steps * lr + float(tol.max()):
            found.append(f"{name}: off by {float(diff.max()):.3g}, more than {steps} Adam steps")
    if beyond > 0.01 * total:
        found.append(f"{beyond} of {total} elements beyond rounding")
    return found


def test_training_differences_sees_one_wrong_small_variable_but_not_near_tie_flips(reference_run):
    """The MirroredStrategy comparison's criterion on checkpoint 2 of the reference run: scattered
    near-tie flips as measured (2 of a BN γ's 32 elements, one element of a few other variables, each
    moved by up to 2·steps·lr) pass; a fault confined to one small variable fails, each moved by 3·lr
    (inside the reach of two Adam steps, so only the count can tell): a third of a 32-channel BN
    variable, 2 of a θ head bias's 6 (the STN's), 40 of the embedding bias's 256 — each passed the
    criterion before (under half of the variable, ≤ 1 % pooled)."""
    _, ref = checkpoint_weights(reference_run[0], step=2)
    lr = config.LEARNING_RATE
    weights = [n for n in sorted(ref) if "/_variables/" not in n and ref[n].size > 1]
    of_size = lambda size: [n for n in weights if ref[n].size == size and np.abs(ref[n]).min() < 1e-2]  # noqa: E731
    assert len(of_size(32)) >= 4 and len(of_size(6)) == 2 and len(of_size(256)) == 1  # l23: 2 θ heads

    def moved(changes):
        """ref with `count` elements of each named variable moved by `step`: its elements nearest 0,
        whose rounding tolerance is 1e-4 (γ ≈ 1 allows 1e-2: no count could see a fault there)."""
        out = {n: v.copy() for n, v in ref.items()}
        for name, count, step in changes:
            flat = out[name].reshape(-1)
            flat[np.argsort(np.abs(flat), kind="stable")[:count]] += step
        return out

    flips = [(of_size(32)[0], 2, 3.5 * lr)] + [(n, 1, -3.5 * lr) for n in weights[::max(1, len(weights) // 6)][:6]]
    assert training_differences(moved(flips), ref) == []
    for fault in [(of_size(32)[1], 11, 3 * lr), (of_size(6)[0], 2, 3 * lr), (of_size(256)[0], 40, 3 * lr)]:
        assert training_differences(moved([fault]), ref), fault


# A run repeated on one machine is bit-reproducible: the same 6-step run five times (two of them
# concurrently, the machine busy) and a SIGKILL + resume all gave identical checkpoints (max |Δ| = 0
# over every weight, BN statistic and Adam moment). The bound leaves room for rounding only; a resume
# that skips one step of data is off by ~2e-3 (median over the weights), 1000× outside it.
RESUME_RTOL, RESUME_ATOL = 1e-5, 1e-6


def assert_same_checkpoint(got, ref):
    """A resumed run and an uninterrupted one: every variable (weights, BN statistics, Adam's
    moments and step) equal up to float rounding."""
    assert set(got) == set(ref)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=RESUME_RTOL, atol=RESUME_ATOL, err_msg=name)


def logged_losses(stderr):
    """[(step, loss)] from the progress lines ("step 3/6 ... loss=1.2213 ...")."""
    import re
    return [(int(m.group(1)), float(m.group(2)))
            for m in re.finditer(r"step (\d+)/\d+ .*? loss=([0-9.]+)", stderr)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory):
    """6 uninterrupted steps, evaluated at the end."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    proc = run_train(data_dir, workdir, "--max_steps=6")
    return workdir, proc


def test_end_to_end_outputs(reference_run):
    workdir, proc = reference_run
    assert "training on the built-in synthetic dataset" not in proc.stderr  # synthetic asked for
    for name in ("run.json", "history.json", "model.keras", "eval.json", "eval.md"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "eval.json")) as f:
        body = json.load(f)
    assert body["test_identities"] == 6  # a quarter of 24 (synthetic protocol)
    curve = body["summary"]["eq7"]["curve"]
    assert len(curve) == 6 and curve[-1] == pytest.approx(100.0) and np.all(np.diff(curve) >= 0)
    assert set(body["summary"]) == {"eq7", "p_match", "distance"}
    path, _ = checkpoint_weights(workdir)
    assert path.endswith("ckpt-6")
    assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tb", "train")))
    assert "pairs/s" in proc.stderr and "ETA" in proc.stderr  # progress lines


def test_sigkill_then_resume_past_a_damaged_checkpoint_ends_where_the_uninterrupted_run_ends(
        data_dir, reference_run, tmp_path):
    """The run SIGKILLs itself after step 5 (tests/killed_training.py, so no race with the machine's speed):
    checkpoints 2 and 4 survive, step 5 is lost. Then the newest, ckpt-4, is damaged (its data file
    truncated) and killed checkpoint writes left ckpt-5_temp/ folders behind. The resume sets ckpt-4
    aside as found, deletes the partial writes, redoes steps 3-6 from checkpoint 2's data position
    and ends with every variable (weights, BN statistics, Adam's moments) of the uninterrupted run."""
    from reid_tf import checkpoints, run_folder

    workdir = str(tmp_path / "killed")
    proc = subprocess.run(killed_train_cmd(5, data_dir, workdir, "--max_steps=6", "--noevaluate"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "step 5/6" in proc.stderr and "step 6/6" not in proc.stderr
    killed_at, _ = checkpoint_weights(workdir)
    assert killed_at.endswith("ckpt-4")
    with open(os.path.join(workdir, "run.json")) as f:
        run_id = json.load(f)["run_id"]
    with open(os.path.join(reference_run[0], "run.json")) as f:
        assert run_id and len(run_id) == 16 and run_id != json.load(f)["run_id"]  # each fresh start its own
    ckpts = os.path.join(workdir, "checkpoints")
    data = os.path.join(ckpts, "ckpt-4.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    damaged_size = os.path.getsize(data)
    partial = [os.path.join(ckpts, "ckpt-5_temp"), os.path.join(ckpts, run_folder.KEPT_DIR, "ckpt-5_temp")]
    for folder in partial:
        os.makedirs(folder)
        open(os.path.join(folder, "part-00000-of-00001.data-00000-of-00001"), "w").close()

    resumed = run_train(data_dir, workdir, "--max_steps=6", "--resume", "--noevaluate")
    assert "ckpt-4 is damaged" in resumed.stderr and "ckpt-2 at step 2" in resumed.stderr
    aside = os.path.join(ckpts, checkpoints.DAMAGED_DIR, "ckpt-4")
    assert sorted(os.listdir(aside)) == ["ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    assert os.path.getsize(os.path.join(aside, "ckpt-4.data-00000-of-00001")) == damaged_size  # as found
    assert not any(os.path.exists(folder) for folder in partial)
    with open(os.path.join(workdir, "run.json")) as f:
        assert json.load(f)["run_id"] == run_id  # a resumed run is the same run
    ref_path, ref = checkpoint_weights(reference_run[0])
    path, got = checkpoint_weights(workdir)
    assert path.endswith("ckpt-6") and set(got) == set(ref)
    assert sum("_trainable_variables" in n for n in ref) > 50  # the weights themselves are compared
    assert_same_checkpoint(got, ref)


# The NaN guard does not depend on the network's size: the one-level preset traces faster.
def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path / "nan")
    proc = run_train(data_dir, workdir, "--model=l2", "--max_steps=8", "--checkpoint_every=1",
                     "--learning_rate=1e12", "--noevaluate", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "NaN" in proc.stderr or "nan" in proc.stderr
    assert "last good checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr and not os.path.exists(os.path.join(workdir, "model.keras"))
    path, weights = checkpoint_weights(workdir)
    assert all(np.all(np.isfinite(v)) for v in weights.values()), path


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_one_thread_trains_as_the_default_pool_does(data_dir, reference_run, tmp_path):
    """--threads=1 (two trainings sharing 2 cores) sets TensorFlow's pools, and trains the same
    steps as the reference run with the default pool, to summation-order noise."""
    proc = run_train(data_dir, str(tmp_path / "one_thread"), "--max_steps=2", "--noevaluate", "--threads=1")
    assert "TensorFlow threads: 1 intra-op, 1 inter-op" in proc.stderr
    single, one = logged_losses(reference_run[1].stderr), logged_losses(proc.stderr)
    assert [s for s, _ in one] == [1, 2]
    assert one[0][1] == pytest.approx(single[0][1], abs=1e-4)  # the same first step, before any update
    np.testing.assert_allclose([l for _, l in one], [l for _, l in single[:2]], atol=3e-3)


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_mirrored_strategy_matches_single_device(data_dir, reference_run, tmp_path):
    workdir = str(tmp_path / "mirrored")
    proc = run_train(data_dir, workdir, "--max_steps=6", "--noevaluate", "--strategy=mirrored", "--cpu_devices=2")
    assert "MirroredStrategy over 2 devices" in proc.stderr
    # Same initial weights and data: the per-step losses agree (both runs log every step) ...
    single, mirrored = logged_losses(reference_run[1].stderr), logged_losses(proc.stderr)
    assert [s for s, _ in mirrored] == [s for s, _ in single] == list(range(1, 7))
    assert mirrored[0][1] == pytest.approx(single[0][1], abs=1e-4)
    np.testing.assert_allclose([l for _, l in mirrored], [l for _, l in single], atol=3e-3)
    # ... and so do the weights and BN statistics after 2 steps, far inside the ±2·lr that two
    # Adam steps could move a weight (later, Adam amplifies summation-order noise in tiny gradients).
    _, ref = checkpoint_weights(reference_run[0], step=2)
    _, got = checkpoint_weights(workdir, step=2)
    assert training_differences(got, ref, steps=2) == []
    # the criterion sees a real fault: the same run two steps of data further on
    _, later = checkpoint_weights(reference_run[0], step=4)
    assert len(training_differences(got, later, steps=2)) > 1


def exhaustive_scores(workdir):
    """The run's test queries × gallery scored by every pair (the engine, tested against the model)."""
    with open(os.path.join(workdir, "run.json")) as f:
        run = json.load(f)
    dataset = datasets.load_dataset(run["dataset"], datasets.dataset_dir(run["dataset"], run["data_dir"]))
    split = dataset.split(run["trial"], run["seed"], run["val_identities"], run["test_identities"])
    queries, gallery = protocols.single_shot(dataset, split.test, run["trial"], run["seed"])
    scores = ScoringEngine(load_network(os.path.join(workdir, "model.keras"))).score_matrix(
        load_images([q.path for q in queries]), load_images([g.path for g in gallery]))
    return scores, np.array([q.identity for q in queries]), np.array([g.identity for g in gallery])


def shortlist_ranks_loop(scores, q_ids, g_ids, k):
    """Two-stage ranks by a plain loop: the true match's place among its query's k nearest gallery
    images by d, by Eq. 7 (ties against it); outside them it ranks last (−inf, tied with the rest)."""
    ranks = []
    for q in range(len(q_ids)):
        near = list(np.argsort(scores["distance"][q], kind="stable")[:k])
        true = int(np.nonzero(g_ids == q_ids[q])[0][0])
        s = scores["score"][q]
        ranks.append(1 + sum(s[g] >= s[true] for g in near if g != true) if true in near else len(g_ids))
    return np.array(ranks)


def test_evaluate_cli_loads_the_saved_network_and_compares_shortlists(reference_run):
    """A fresh process (nothing registered yet) loads model.keras; two-stage scoring at K < G equals
    a loop over the exhaustive scores."""
    workdir = reference_run[0]
    proc = subprocess.run([sys.executable, "-m", "reid_tf.evaluate", f"--workdir={workdir}", "--shortlist_study=2,5"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(workdir, "shortlist.json")) as f:
        rows = json.load(f)["rows"]
    exhaustive, k2, k5 = rows
    assert exhaustive["exhaustive"] and exhaustive["pairs"] == 36
    assert k2["pairs"] == 12 and k5["pairs"] == 30
    with open(os.path.join(workdir, "eval.json")) as f:
        assert exhaustive["rank1"] == pytest.approx(json.load(f)["summary"]["eq7"]["rank"]["1"]["mean"])
    scores, q_ids, g_ids = exhaustive_scores(workdir)
    for row, k in ((k2, 2), (k5, 5)):
        ranks = shortlist_ranks_loop(scores, q_ids, g_ids, k)
        for r in (1, 5, 10):
            assert row[f"rank{r}"] == pytest.approx(100 * np.mean(ranks <= r)), (k, r)
    assert "two-stage scoring" in proc.stdout


def test_evaluate_cli_checkpoint_evaluates_the_split_of_its_trial_and_seed(reference_run, data_dir, tmp_path):
    """--checkpoint evaluates a saved network on --dataset/--trial/--seed: with trial 1, seed 2, the
    numbers of that split and draw computed here, not those of the run's own (trial 0, seed 0);
    the in-process evaluation of trial 0 is the run's own eval.json, so both sides are one method."""
    workdir = reference_run[0]
    out = str(tmp_path / "checkpoint_eval")
    proc = subprocess.run([sys.executable, "-m", "reid_tf.evaluate", f"--checkpoint={workdir}/model.keras",
                           "--dataset=synthetic", f"--data_dir={data_dir}", "--trial=1", "--seed=2", f"--out={out}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out + ".json") as f:
        got = json.load(f)["summary"]
    with open(os.path.join(workdir, "eval.json")) as f:
        own = json.load(f)["summary"]
    network = load_network(os.path.join(workdir, "model.keras"))
    dataset = datasets.load_dataset("synthetic", datasets.dataset_dir("synthetic", data_dir))
    want, trial0 = (report.summarize([protocols.evaluate_network(network, dataset, dataset.split(t, s).test, t, s)])
                    for t, s in ((1, 2), (0, 0)))
    assert set(got) == set(want) == set(own) == {"eq7", "p_match", "distance"}
    for name in want:
        np.testing.assert_allclose(trial0[name]["curve"], own[name]["curve"], atol=1e-9, err_msg=name)
        np.testing.assert_allclose(got[name]["curve"], want[name]["curve"], atol=1e-9, err_msg=name)
        assert got[name]["map"]["mean"] == pytest.approx(want[name]["map"]["mean"]), name
    assert set(dataset.split(1, 2).test) != set(dataset.split(0, 0).test)
    assert any(not np.allclose(want[n]["curve"], own[n]["curve"]) or want[n]["map"]["mean"] != pytest.approx(
        own[n]["map"]["mean"]) for n in want)  # the two splits give different numbers: a slip shows


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
@pytest.mark.parametrize("pairing", ["shared", "per_pair"])
def test_epochs_become_steps_with_the_datasets_recipe(data_dir, tmp_path, pairing):
    """--epochs with no --batch_size: the synthetic recipe's batch (32) and crops (1), an epoch = every
    cross-camera positive of the train identities × crops, each with 2 negatives: per pair in whole
    batches of 32 pairs; shared (K = 1, its default) in whole batches of round(32 / 3) = 11 visits
    of one positive each (33 pairs)."""
    workdir = str(tmp_path / "epochs")
    proc = subprocess.run([sys.executable, "-m", "reid_tf.train", f"--data_dir={data_dir}", f"--workdir={workdir}",
                           "--synthetic_identities=24", "--checkpoint_every=2", "--log_every_seconds=0",
                           "--nofigures", "--noevaluate", "--epochs=0.5", f"--pairing={pairing}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dataset = datasets.load_dataset("synthetic", datasets.dataset_dir("synthetic", data_dir))
    train = set(dataset.split(0, 0).train)
    positives = 0
    for identity in train:
        cameras = [r.camera for r in dataset.records if r.identity == identity]
        positives += cameras.count(0) * cameras.count(1)
    per_epoch = 3 * positives * 1 // 32 if pairing == "per_pair" else positives * 1 // 11
    with open(os.path.join(workdir, "run.json")) as f:
        run = json.load(f)
    assert (run["batch_size"], run["steps_per_epoch"], run["pairing"]) == (32, per_epoch, pairing)
    assert ("of 33 pairs (shared images: 22 images a batch)" in proc.stderr) == (pairing == "shared")
    assert run["total_steps"] == -(-per_epoch // 2) > 1  # ⌈0.5 · per_epoch⌉
    path, _ = checkpoint_weights(workdir)
    assert path.endswith(f"ckpt-{run['total_steps']}")


def test_time_budget_stops_at_the_first_step_past_it(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    model = types.SimpleNamespace(stop_training=False)
    budget = callbacks.TimeBudget(0.5)  # --max_minutes=0.5: 30 s
    budget.set_model(model)
    budget.on_train_begin()
    for now, stop in ((110.0, False), (129.9, False), (130.1, True)):
        clock[0] = now
        budget.on_train_batch_end(0)
        assert (model.stop_training, budget.exhausted) == (stop, stop), now
    unbounded = callbacks.TimeBudget(None)
    unbounded.set_model(model := types.SimpleNamespace(stop_training=False))
    unbounded.on_train_begin()
    clock[0] = 1e9
    unbounded.on_train_batch_end(0)
    assert not model.stop_training and not unbounded.exhausted


@pytest.mark.parametrize("name,batch,crops,trials", [
    ("cuhk03_detected", 256, 2, 20), ("cuhk03_labeled", 256, 2, 20),  # §4.2: 256 and 2 for CUHK03
    ("cuhk01", 128, 5, 10), ("viper", 128, 5, 10),  # §4.2: 128 and 5 for the others; §4.1: 10 trials
    ("synthetic", 32, 1, 10)])  # ours (config.py: the synthetic recipe)
def test_per_dataset_recipe(name, batch, crops, trials):
    assert config.per_dataset(config.BATCH_SIZE, name) == batch
    assert config.per_dataset(config.CROPS_PER_IMAGE, name) == crops
    assert config.per_dataset(config.TRIALS, name) == trials


PAPER_DATASETS = ("viper", "cuhk01", "cuhk03_detected", "cuhk03_labeled")


@pytest.mark.parametrize("name", datasets.DATASETS)
def test_default_recipe_is_the_papers_on_its_datasets_and_ours_elsewhere(name):
    """[31]'s reading (config.PAPER_RECIPE) for VIPeR, CUHK01, CUHK03; ours for the synthetic set and
    the multi-camera datasets the paper does not use; --recipe overrides either."""
    from reid_tf.run_options import TrainOptions
    expected = "shifted_copies" if name in PAPER_DATASETS else "cross_camera"
    assert datasets.get_spec(name).recipe == expected
    assert TrainOptions(dataset=name).resolved_recipe() == expected
    for recipe in config.RECIPES:
        assert TrainOptions(dataset=name, recipe=recipe).resolved_recipe() == recipe


@pytest.mark.slow  # minutes: prepares VIPeR, trains a step, two refused resumes (the parts have fast tests)
def test_a_paper_dataset_trains_with_shifted_copies_unless_told_and_records_it(tmp_path):
    """VIPeR in its original layout, prepared, trained one step without --recipe or --pairing:
    run.json says shifted_copies on shared images (the recipe's pairing) and the log counts [31]'s
    epoch (316 identities × C(14, 2) positives, one a visit, 2 visits in a batch of 6 pairs);
    resuming it with another recipe or pairing is refused, naming the flag."""
    from tests import fixtures
    data = tmp_path / "data"
    src = fixtures.write_viper(str(tmp_path / "src"))
    prep = subprocess.run([sys.executable, "-m", "data_tools.prepare_viper", f"--src={src}",
                           f"--out={data / 'viper'}"], capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-2000:]
    work = str(tmp_path / "run")
    base = [sys.executable, "-m", "reid_tf.train", "--dataset=viper", f"--data_dir={data}", f"--workdir={work}",
            "--batch_size=6", "--max_steps=1", "--noevaluate", "--nofigures"]
    proc = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(work, "run.json")) as f:
        recorded = json.load(f)
    assert (recorded["recipe"], recorded["pairing"]) == ("shifted_copies", "shared")
    assert f"{316 * 91 // 2} steps per epoch of 6 pairs (shared images: 4 images a batch)" in proc.stderr
    for flag, said in [("--recipe=cross_camera", "--recipe=shifted_copies (now cross_camera)"),
                       ("--pairing=per_pair", "--pairing=shared (now per_pair)")]:
        again = subprocess.run(base + ["--resume", flag], capture_output=True, text=True, timeout=600)
        assert again.returncode != 0 and said in again.stderr, again.stderr[-2000:]


def test_curve_evaluates_every_checkpoint_under_both_protocols(reference_run, tmp_path):
    """experiments.curve over the run's checkpoints (2, 4, 6): one point each, both protocols; the
    last point's single-shot CMC is the run's own evaluation of the same weights (eval.json)."""
    workdir = reference_run[0]
    out = str(tmp_path / "curve")
    proc = subprocess.run([sys.executable, "-m", "experiments.curve", f"--workdir={workdir}", f"--out={out}",
                           "--paper_rank1=86.55"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out + ".json") as f:
        body = json.load(f)
    assert [p["step"] for p in body["points"]] == [2, 4, 6]
    assert all(set(p["results"]) == {"single_shot", "random_gallery"} for p in body["points"])
    assert body["points"][-1]["pairs_seen"] == 6 * 6  # batch 6, per pair
    assert body["run"]["pairing"] == "per_pair" and os.path.isfile(out + ".png") and os.path.isfile(out + ".md")
    with open(os.path.join(workdir, "eval.json")) as f:
        want = json.load(f)["summary"]["eq7"]
    last = body["points"][-1]["results"]["single_shot"]
    assert last["rank1"] == pytest.approx(want["rank"]["1"]["mean"]) and last["map"] == pytest.approx(want["map"]["mean"])
    refused = subprocess.run([sys.executable, "-m", "experiments.curve", f"--workdir={workdir}", f"--out={out}2",
                              "--protocols=standard"], capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "unknown --protocols standard" in refused.stderr
    assert not os.path.exists(out + "2.json")
    # another run's checkpoints (here: a folder outside the workdir) would be tested on this run's
    # split, which that run may have trained on: refused in one line, nothing written
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(os.path.join(workdir, "checkpoints"), elsewhere)
    foreign = subprocess.run([sys.executable, "-m", "experiments.curve", f"--workdir={workdir}", f"--out={out}3",
                              f"--checkpoints={elsewhere}"], capture_output=True, text=True, timeout=600)
    assert foreign.returncode != 0 and "Traceback" not in foreign.stderr
    assert f"--checkpoints {elsewhere} is not inside --workdir" in foreign.stderr and not os.path.exists(out + "3.json")
    # the same workdir started afresh (a new machine, say) is another run: its checkpoints are never
    # added to the curve of the first, whose points stay as they were
    assert body["run"]["run_id"] == json.loads(read(os.path.join(workdir, "run.json")))["run_id"]
    restarted = str(tmp_path / "restarted")
    shutil.copytree(workdir, restarted)
    record = json.loads(read(os.path.join(restarted, "run.json")))
    with open(os.path.join(restarted, "run.json"), "w") as f:
        json.dump({**record, "run_id": "0123456789abcdef"}, f)
    before = read(out + ".json")
    other = subprocess.run([sys.executable, "-m", "experiments.curve", f"--workdir={restarted}", f"--out={out}"],
                           capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "Traceback" not in other.stderr
    assert "holds points of another run" in other.stderr and read(out + ".json") == before


def bn_statistics(network):
    """BN layer path -> (moving mean, moving variance) of a network."""
    from reid_tf.precise_bn import batch_norm_layers
    return {layer.path: (layer.moving_mean.numpy(), layer.moving_variance.numpy())
            for layer in batch_norm_layers(network)}


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_train_precise_bn_rewrites_the_final_network_not_the_checkpoints(reference_run, data_dir, tmp_path):
    """--precise_bn=N on a finished run (--resume): model.keras gets the BN statistics re-estimated
    over the N training batches after its last step, model.json and eval.json say so, the checkpoints
    keep the moving averages; --precise_bn=0 brings those back. Evaluating it together with a run of
    the other kind is refused."""
    from reid_tf import precise_bn
    from reid_tf.model import build_model
    from reid_tf.pair_trainer import PairTrainer
    from reid_tf.run_options import TrainOptions, training_data

    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run[0], workdir)
    run_train(data_dir, workdir, "--max_steps=6", "--resume", "--precise_bn=2")
    with open(os.path.join(workdir, "model.json")) as f:
        assert json.load(f) == {"step": 6, "precise_bn": 2}
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["precise_bn"] == 2
    assert "BN statistics re-estimated over 2 training batches" in read(os.path.join(workdir, "eval.md"))
    got = bn_statistics(load_network(os.path.join(workdir, "model.keras")))

    opts = TrainOptions.load(workdir)  # the same statistics computed here from the checkpoint
    dataset = opts.load_dataset()
    network = build_model(config.get_model_config(opts.model))
    tf.train.Checkpoint(model=network).restore(os.path.join(workdir, "checkpoints", "ckpt-6")).expect_partial()
    moving = bn_statistics(network)
    records = datasets.records_of(dataset, opts.split(dataset).train)
    assert precise_bn.recalibrate(PairTrainer(network),
                                  training_data(opts, records, dataset.spec.crops_per_image, 6), 2) == 2
    want = bn_statistics(network)
    assert set(got) == set(want) and len(got) > 10
    for path in want:
        for g, w in zip(got[path], want[path]):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=path)
    assert any(not np.allclose(got[p][0], moving[p][0], atol=1e-4) for p in moving)  # not the moving averages
    kept, reference = checkpoint_weights(workdir)[1], checkpoint_weights(reference_run[0])[1]
    assert kept.keys() == reference.keys()
    for name, value in kept.items():  # the checkpoint untouched
        np.testing.assert_array_equal(value, reference[name], err_msg=name)

    mixed = subprocess.run([sys.executable, "-m", "reid_tf.evaluate", f"--workdir={reference_run[0]},{workdir}",
                            f"--out={tmp_path / 'both'}"], capture_output=True, text=True, timeout=600)
    assert mixed.returncode != 0 and "Traceback" not in mixed.stderr
    assert "BN statistics of different kinds (--precise_bn 0 in" in mixed.stderr

    run_train(data_dir, workdir, "--max_steps=6", "--resume")  # --precise_bn=0: as trained again
    back = bn_statistics(load_network(os.path.join(workdir, "model.keras")))
    for path in moving:
        for b, m in zip(back[path], moving[path]):
            np.testing.assert_array_equal(b, m, err_msg=path)
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f)["precise_bn"] == 0


def test_curve_re_estimates_bn_on_the_training_batches_that_follow_the_checkpoint(reference_run, monkeypatch):
    """experiments.curve --precise_bn=2 evaluates ckpt-4 on BN statistics re-estimated over the two
    training batches the run trains on after step 4 (its batches 5 and 6), not those of step 0 or
    any other: the batches recalibrate receives are compared with the run's own data stream."""
    import itertools

    from experiments import curve
    from reid_tf import precise_bn
    from reid_tf.run_options import TrainOptions, training_data

    workdir = reference_run[0]
    run = TrainOptions.load(workdir)
    dataset = run.load_dataset()
    split = run.split(dataset)
    records = datasets.records_of(dataset, split.train)
    received, recalibrate = [], precise_bn.recalibrate

    def recording(model, batches, n):
        received.extend(itertools.islice(batches, n))
        return recalibrate(model, received, n)

    monkeypatch.setattr(precise_bn, "recalibrate", recording)
    out = curve.evaluate_checkpoint(run, os.path.join(workdir, "checkpoints", "ckpt-4"), dataset, split.test,
                                    ["single_shot"], 2, records)
    assert set(out) == {"single_shot"} and 0 <= out["single_shot"]["map"] <= 100

    def stream(step):
        return [(x["image_a"].numpy(), x["image_b"].numpy(), y.numpy()) for x, y in itertools.islice(
            training_data(run, records, dataset.spec.crops_per_image, step), 2)]

    got = [(x["image_a"].numpy(), x["image_b"].numpy(), y.numpy()) for x, y in received]
    assert len(got) == 2
    for g, w in zip(got, stream(4)):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)
    for other in (stream(0), stream(6)):  # a slip of the data position shows
        assert not any(np.array_equal(g[0], o[0]) for g, o in zip(got, other))


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_curve_with_precise_bn_re_estimates_the_statistics_and_stays_out_of_the_table(reference_run, tmp_path):
    """--precise_bn=N: each checkpoint evaluated on BN statistics re-estimated over N of the run's
    training batches (reid_tf.precise_bn); the curve file says so, is never mixed with one evaluated
    as trained, and experiments.reproduce leaves it out of the paper's table."""
    from experiments import reproduce

    workdir = reference_run[0]
    out = str(tmp_path / "curve")
    base = [sys.executable, "-m", "experiments.curve", f"--workdir={workdir}", f"--out={out}",
            "--protocols=single_shot", "--every=6"]
    proc = subprocess.run(base + ["--precise_bn=2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ckpt-6: BN statistics re-estimated over 2 training batches from step 6" in proc.stderr
    with open(out + ".json") as f:
        body = json.load(f)
    assert body["run"]["precise_bn"] == 2 and [p["step"] for p in body["points"]] == [6]
    assert "BN statistics re-estimated over 2 training batches" in read(out + ".md")
    with open(os.path.join(workdir, "eval.json")) as f:  # the same weights evaluated as trained
        as_trained = json.load(f)["summary"]["eq7"]["map"]["mean"]
    assert body["points"][0]["results"]["single_shot"]["map"] != pytest.approx(as_trained)
    assert "precise_bn=2" in reproduce.off_protocol(body["run"])  # (batch_size=6 too: a small reference run)
    mixed = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert mixed.returncode != 0 and "Traceback" not in mixed.stderr
    assert "holds points with --precise_bn=2, not 0" in mixed.stderr
