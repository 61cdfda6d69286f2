"""No silent wrong results: what a run, an evaluation or a curve reads is what it says it
read, and nothing already computed is lost. Each test names the wrong number or the loss it guards
against ("Before: ..."). Tiny synthetic data (12 identities) and one 6-step training shared by the
module."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_tools import common, prepare_cuhk01, prepare_viper
from data_tools.common import DatasetError
from reid_tf import cli, datasets, evaluate, fileio, protocols, run_folder, run_options, train
from reid_tf.datasets.synthetic import make_synthetic
from tests import fixtures

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
TINY = dict(synthetic_identities=12, batch_size=6, evaluate=False, figures=False, log_every_seconds=0)


def command(module, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600,
                          cwd=fixtures.REPO, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def error_lines(stderr):
    """Our error lines (reid_tf.cli: "error: <what> — <what to do>")."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def one_error_line(proc, *words):
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = error_lines(proc.stderr)
    for word in words:
        assert word in line, line
    return line


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """6 steps on 12 synthetic identities (seed 0), checkpoints at 2, 4, 6, all kept; model.keras."""
    root = tmp_path_factory.mktemp("run")
    opts = run_options.TrainOptions(data_dir=str(root / "data"), workdir=str(root / "run"), max_steps=6,
                              checkpoint_every=2, keep_every=2, **TINY)
    train.run(opts)
    return opts


@pytest.fixture
def copy_of(finished_run, tmp_path):
    """A copy of the finished run (same data) that a test may change. Its .lock names this process,
    which trained it and is alive: without it the copy is not taken for a run in progress."""
    def copy():
        work = shutil.copytree(finished_run.workdir, str(tmp_path / "copy"))
        os.remove(os.path.join(work, run_folder.LOCK_FILE))
        return work
    return copy


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------ 1. the synthetic set under a run stays the run's
def test_synthetic_set_of_other_settings_is_refused_before_anything_is_regenerated(tmp_path):
    """Before: another --seed or --synthetic_identities regenerated DATA/synthetic under a finished
    run (even for a --resume then refused), whose evaluation then scored other images."""
    root = str(tmp_path / "synthetic")
    make_synthetic(root, identities=12, seed=0)
    stamps = {name: os.stat(os.path.join(root, "cam_a", name)).st_mtime_ns
              for name in os.listdir(os.path.join(root, "cam_a"))}
    for other in (dict(seed=1), dict(synthetic_identities=16)):
        opts = run_options.TrainOptions(data_dir=str(tmp_path), workdir=str(tmp_path / "w"), resume=True,
                                  **{**TINY, **other})
        with pytest.raises(cli.UsageError, match="holds the synthetic set of 12 identities, seed 0"):
            opts.check()  # run() checks this first: before the lock, the workdir and any data
        with pytest.raises(ValueError, match="another folder"):
            make_synthetic(root, identities=opts.synthetic_identities, seed=opts.seed)
    assert {n: os.stat(os.path.join(root, "cam_a", n)).st_mtime_ns for n in stamps} == stamps
    assert not os.path.exists(tmp_path / "w")
    run_options.TrainOptions(data_dir=str(tmp_path), workdir=str(tmp_path / "w"), **TINY).check()  # its own: fine


def test_evaluate_refuses_data_that_is_not_what_the_run_trained_on(copy_of, tmp_path):
    """Before: evaluating a run over a regenerated set gave rank-1 25 instead of 50, without a word."""
    from reid_tf.model import build_model

    work = copy_of()
    other = str(tmp_path / "other_data")
    make_synthetic(os.path.join(other, "synthetic"), identities=12, seed=1)  # same names, other people
    run = read_json(os.path.join(work, "run.json"))
    fileio.write_json(os.path.join(work, "run.json"), {**run, "data_dir": other})
    with pytest.raises(cli.UsageError, match=r"is not the data the run .* 12 identities, seed 1.*--seed=0"):
        evaluate.evaluate_workdir(work, network=build_model("l2"))
    assert not os.path.exists(os.path.join(work, "eval.json"))


def test_a_changed_manifest_is_refused_by_its_data_signature(copy_of, tmp_path):
    """Any dataset: run.json records the signature of the manifest trained on."""
    work = copy_of()
    run = read_json(os.path.join(work, "run.json"))
    assert run["data_signature"] == run_options.data_signature(os.path.join(run["data_dir"], "synthetic"))
    moved = str(tmp_path / "moved")  # the data moved elsewhere (a new --data_dir): still the same data
    shutil.copytree(run["data_dir"], moved)
    fileio.write_json(os.path.join(work, "run.json"), {**run, "data_dir": moved})
    run_options.run_dataset(work)
    manifest = os.path.join(moved, "synthetic", datasets.MANIFEST)
    body = read_json(manifest)
    fileio.write_json(manifest, {**body, "records": body["records"][:-2]})  # re-prepared differently
    with pytest.raises(cli.UsageError, match="lists other images"):
        run_options.run_dataset(work)


# ------------------------------------------------- 2. a mean over trials is over distinct trials of one setting
def write_evaluated(work, **run):
    """A workdir with run.json, a model.keras stand-in and an eval.json that evaluate_workdirs reuses."""
    os.makedirs(work)
    fileio.write_json(os.path.join(work, "run.json"), {"dataset": "synthetic", "model": "l23", "trial": 0,
                                                              "seed": 0, "recipe": "cross_camera", **run})
    with open(os.path.join(work, "model.keras"), "w") as f:
        f.write("never loaded: the eval.json beside it is reused")
    curve = list(np.linspace(0.5, 1.0, 12))
    per_trial = {name: {"curves": [curve], "map": [0.6]} for name in protocols.RANKINGS}
    path = os.path.join(work, "eval.json")
    fileio.write_json(path, {"protocol": "single_shot", "dataset": "synthetic", "trial": run.get("trial", 0),
                                   "model": run.get("model", "l23"), "per_trial": per_trial})
    t = os.path.getmtime(os.path.join(work, "model.keras"))
    os.utime(path, (t + 10, t + 10))
    return work


@pytest.mark.parametrize("second, words", [
    (dict(model="l234", trial=1), "model l23 in"),  # l23 and l234 averaged as "l23, n = 2"
    (dict(recipe="shifted_copies", trial=1), "recipe cross_camera in"),
    (dict(trial=0, run_id="other"), r"same trial \(trial 0, seed 0\)"),
])
def test_trials_of_other_settings_or_the_same_trial_are_not_averaged(tmp_path, second, words):
    a = write_evaluated(str(tmp_path / "a"), run_id="a")
    b = write_evaluated(str(tmp_path / "b"), **second)
    with pytest.raises(cli.UsageError, match=words):
        evaluate.evaluate_workdirs([a, b], str(tmp_path / "mean"))
    assert not os.path.exists(tmp_path / "mean.json")


def test_the_same_workdir_or_run_twice_is_not_two_trials(tmp_path):
    a = write_evaluated(str(tmp_path / "a"), run_id="a")
    with pytest.raises(cli.UsageError, match="lists .* twice"):
        evaluate.evaluate_workdirs([a, a + "/"], str(tmp_path / "mean"))
    copy = shutil.copytree(a, str(tmp_path / "copy"))
    with pytest.raises(cli.UsageError, match="same run"):
        evaluate.evaluate_workdirs([a, copy], str(tmp_path / "mean"))
    b = write_evaluated(str(tmp_path / "b"), run_id="b", trial=1)
    assert evaluate.evaluate_workdirs([a, b], str(tmp_path / "mean"))["summary"]["eq7"]["n"] == 2


# ------------------------------------------------------------------------------- 3. curves
def test_a_second_curve_on_one_out_is_refused(finished_run, tmp_path):
    """Before: two curves on one --out, the last writer won (one kept only the random_gallery points)."""
    work = finished_run.workdir
    out = str(tmp_path / "results" / "curve")
    args = [f"--workdir={work}", f"--checkpoints={work}/checkpoints/kept", f"--out={out}"]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from reid_tf import run_folder; "
                               "lock = run_folder.lock_file(sys.argv[1], '--out'); print('locked', flush=True); "
                               "time.sleep(600)", out + ".json"], stdout=subprocess.PIPE, text=True,
                              cwd=fixtures.REPO, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        one_error_line(command("experiments.curve", *args, check=False), "curve.json is being written",
                       f"pid {holder.pid}", "--out")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert not os.path.exists(out + ".json")


def test_a_curve_merges_protocols_and_sets_damaged_checkpoints_aside(copy_of, tmp_path):
    """Before: another --protocols added nothing; a truncated kept checkpoint stopped the curve for
    ever (IndexError)."""
    work = copy_of()
    kept = os.path.join(work, "checkpoints", "kept")
    data = os.path.join(kept, "ckpt-2.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    out = str(tmp_path / "results" / "curve")
    args = [f"--workdir={work}", f"--checkpoints={kept}", f"--out={out}"]
    proc = command("experiments.curve", *args, "--protocols=single_shot")
    assert "ckpt-2 is damaged" in proc.stderr and "curve goes on" in proc.stderr
    assert sorted(os.listdir(os.path.join(kept, "damaged", "ckpt-2"))) == ["ckpt-2.data-00000-of-00001",
                                                                           "ckpt-2.index"]
    first = read_json(out + ".json")
    assert [(p["step"], list(p["results"])) for p in first["points"]] == [(4, ["single_shot"]), (6, ["single_shot"])]
    command("experiments.curve", *args, "--protocols=random_gallery")
    points = read_json(out + ".json")["points"]
    assert [(p["step"], sorted(p["results"])) for p in points] == [(4, ["random_gallery", "single_shot"]),
                                                                  (6, ["random_gallery", "single_shot"])]
    assert [p["results"]["single_shot"] for p in points] == [p["results"]["single_shot"] for p in first["points"]]


def test_a_curve_without_checkpoints_is_an_error(finished_run, tmp_path):
    """Before: a missing checkpoints/kept exited 0 with an empty table and wrote nothing."""
    work = finished_run.workdir
    out = str(tmp_path / "curve")
    one_error_line(command("experiments.curve", f"--workdir={work}", f"--checkpoints={work}/checkpoints/nowhere",
                           f"--out={out}", check=False), "no such folder", "--checkpoints")
    empty = os.path.join(work, "checkpoints", "empty")
    os.makedirs(empty, exist_ok=True)
    try:
        one_error_line(command("experiments.curve", f"--workdir={work}", f"--checkpoints={empty}", f"--out={out}",
                               check=False), "no checkpoint gave a point", "nothing written")
    finally:
        os.rmdir(empty)
    assert not os.path.exists(out + ".json")


# -------------------------------------------------- 4. a lost checkpoint state file is rebuilt
def test_resume_without_the_checkpoint_state_file_continues_the_run(copy_of, finished_run):
    """Before: "holds no checkpoint; starting a fresh run" over ckpt-2/4/6, with a new run_id."""
    work = copy_of()
    os.remove(os.path.join(work, "checkpoints", "checkpoint"))
    run_id = read_json(os.path.join(work, "run.json"))["run_id"]
    summary = train.run(run_options.TrainOptions(data_dir=finished_run.data_dir, workdir=work, resume=True, max_steps=8,
                                           checkpoint_every=2, keep_every=2, **TINY))
    assert summary["step"] == 8 and read_json(os.path.join(work, "run.json"))["run_id"] == run_id
    import tensorflow as tf
    state = tf.train.get_checkpoint_state(os.path.join(work, "checkpoints"))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-4", "ckpt-6", "ckpt-8"]


def test_an_empty_state_file_is_rebuilt_and_a_fresh_start_over_checkpoints_is_refused(copy_of, finished_run):
    from reid_tf import checkpoints as checkpoints_lib

    work = copy_of()
    checkpoints = os.path.join(work, "checkpoints")
    open(os.path.join(checkpoints, "checkpoint"), "w").close()  # "Invalid checkpoint state", no hint
    fresh = run_options.TrainOptions(data_dir=finished_run.data_dir, workdir=work, max_steps=2, **TINY)
    with pytest.raises(train.RunFinished):  # a finished run: said so (the command exits 0), nothing trained
        train.run(fresh)
    os.rename(os.path.join(work, "model.json"), os.path.join(work, "model.json.away"))
    with pytest.raises(FileExistsError, match="holds an unfinished run"):  # its checkpoints, not finished
        train.run(fresh)
    os.rename(os.path.join(work, "model.json.away"), os.path.join(work, "model.json"))
    assert checkpoints_lib.rebuild_state(checkpoints) == ["ckpt-2", "ckpt-4", "ckpt-6"]
    assert [os.path.basename(p) for p in checkpoints_lib.checkpoint_paths(checkpoints)] == ["ckpt-2", "ckpt-4", "ckpt-6"]
    for name in os.listdir(checkpoints):  # no checkpoint left, but the run's model.keras and kept ones
        if name.startswith("ckpt-") or name == "checkpoint":
            os.remove(os.path.join(checkpoints, name))
    with pytest.raises(FileExistsError, match="no checkpoint .* to continue from"):
        train.run(run_options.TrainOptions(data_dir=finished_run.data_dir, workdir=work, resume=True, max_steps=2, **TINY))


# ---------------------------------------------------------------- 5. link loops in a gallery
def test_a_link_loop_in_a_gallery_adds_no_image(tmp_path):
    """Before: 3 images and `again -> .` became 123 entries; the top 5 was one image five times."""
    from reid_tf.images import find_images

    gallery = tmp_path / "gallery"
    (gallery / "sub").mkdir(parents=True)
    for name in ("0001_0.png", "0002_0.png", "sub/0003_0.png"):
        (gallery / name).write_bytes(b"image")
    os.symlink(".", gallery / "again")
    os.symlink("0001_0.png", gallery / "same.png")  # one file under two names: one entry
    found = find_images(str(gallery))
    assert [os.path.relpath(p, gallery) for p in found] == ["0001_0.png", "0002_0.png", "sub/0003_0.png"]
    (tmp_path / "other").mkdir()  # a link to a folder not searched yet is followed
    (tmp_path / "other" / "0004_0.png").write_bytes(b"image")
    os.symlink("../../other", gallery / "sub" / "ext")
    found = find_images(str(gallery))
    assert [os.path.relpath(p, gallery) for p in found] == ["0001_0.png", "0002_0.png", "sub/0003_0.png",
                                                           "sub/ext/0004_0.png"]


# -------------------------------------------------- 6. a failed preparation keeps the good one
@pytest.fixture(scope="module")
def viper_src(tmp_path_factory):
    return fixtures.write_viper(str(tmp_path_factory.mktemp("viper")))


def test_a_failed_prepare_rerun_keeps_the_good_manifest(viper_src, tmp_path):
    """Before: the old manifest was deleted before the images were checked."""
    out = str(tmp_path / "viper")
    prepare_viper.prepare(viper_src, out)
    good = read_json(os.path.join(out, datasets.MANIFEST))
    broken = shutil.copytree(viper_src, str(tmp_path / "VIPeR"))
    name = fixtures.viper_names("b")[4]
    with open(os.path.join(broken, "cam_b", name), "r+b") as f:
        f.truncate(20)
    with pytest.raises(DatasetError, match="unreadable or truncated"):
        prepare_viper.prepare(broken, out)
    assert read_json(os.path.join(out, datasets.MANIFEST)) == good
    assert datasets.load_dataset("viper", out).records


def test_prepare_refuses_an_out_holding_another_dataset(viper_src, tmp_path):
    """Before: preparing CUHK01 into VIPeR's --out replaced its manifest without a word."""
    out = str(tmp_path / "viper")
    prepare_viper.prepare(viper_src, out)
    src = fixtures.write_cuhk01(str(tmp_path), identities=3)
    with pytest.raises(DatasetError, match="holds the prepared dataset 'viper'"):
        prepare_cuhk01.prepare(src, out, expect_identities=3)
    assert read_json(os.path.join(out, datasets.MANIFEST))["dataset"] == "viper"
    common.claim_output(out, "viper")  # its own dataset again: fine


# ------------------------------------------------------- 7. --init_from of another preset
@pytest.fixture(scope="module")
def l234_model(tmp_path_factory):
    from reid_tf.model import build_model

    path = str(tmp_path_factory.mktemp("l234") / "model.keras")
    build_model("l234").save(path)
    return path


def test_init_from_another_preset_is_an_error_unless_asked_for(l234_model, caplog):
    """Before: l234 into l23 loaded part of the network and exited 0; the only notice was an INFO line."""
    from reid_tf.model import build_model

    with pytest.raises(cli.UsageError, match=r"no weights .* for \d+ of .* layers \(.*conv4.*\).*--init_partial"):
        train.init_from(build_model("l23"), l234_model)
    caplog.set_level("INFO", logger="absl")
    train.init_from(build_model("l23"), l234_model, partial=True)
    lines = [r.getMessage() for r in caplog.records]
    loaded = next(line for line in lines if line.startswith("initialised"))
    not_loaded = next(line for line in lines if "not loaded" in line)
    assert "conv1" in loaded and "conv4" in not_loaded and "conv4" not in loaded


# ------------------------------------------------- 8–10. one line, and what to do about it
def test_infinite_epochs_is_one_line_and_leaves_no_workdir(tmp_path):
    """Before: OverflowError traceback, and a workdir holding only .lock."""
    opts = run_options.TrainOptions(data_dir=str(tmp_path), workdir=str(tmp_path / "w"), epochs=float("inf"), **TINY)
    with pytest.raises(cli.UsageError, match="--epochs=inf: must be a finite number"):
        train.run(opts)
    with pytest.raises(RuntimeError), run_folder.lock(str(tmp_path / "w2")):  # a failure after the lock
        raise RuntimeError
    assert not os.path.exists(tmp_path / "w") and not os.path.exists(tmp_path / "w2")
    os.makedirs(tmp_path / "w3")  # a workdir that was there stays
    with pytest.raises(RuntimeError), run_folder.lock(str(tmp_path / "w3")):
        raise RuntimeError
    assert os.path.isdir(tmp_path / "w3")


def test_a_busy_workdir_is_refused_before_tensorflow_loads(finished_run, tmp_path):
    """Before: ≈ 20 s of imports and tracing before the refusal."""
    script = ("import sys\nfrom absl import flags\nfrom reid_tf import run_folder, train\n"
              "lock = run_folder.lock(sys.argv[1])\ntrain.define_flags()\n"
              "flags.FLAGS(['train', '--workdir=' + sys.argv[1], '--data_dir=' + sys.argv[2], '--synthetic_identities=12'])\n"
              "try:\n    train.main([])\nexcept OSError as e:\n    print('refused:', e)\n"
              "print('tensorflow loaded:', 'tensorflow' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "w"), finished_run.data_dir],
                          capture_output=True, text=True, cwd=fixtures.REPO, env=ENV, timeout=300)
    assert "refused:" in proc.stdout and "in use by another training" in proc.stdout, proc.stderr[-2000:]
    assert "tensorflow loaded: False" in proc.stdout


def test_damaged_or_misshapen_eval_json_is_evaluated_again(tmp_path):
    """Before: KeyError / "Expecting property name" tracebacks, and evaluate would not recompute."""
    for text in ('{"protocol": "single_shot", "per_trial": [1, 2]}', '{"protocol": ', "[]"):
        work = write_evaluated(str(tmp_path / f"w{len(os.listdir(tmp_path))}"))
        path = os.path.join(work, "eval.json")
        t = os.path.getmtime(path)
        with open(path, "w") as f:
            f.write(text)
        os.utime(path, (t, t))
        assert evaluate._evaluated(work, 1) is None  # evaluate_workdirs then evaluates the run again


def test_model_files_that_do_not_load_say_what_they_are(tmp_path):
    import keras

    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="is not a Keras model file"):
        run_folder.load_network(str(text))
    inp = keras.Input((3,))
    keras.Model(inp, keras.layers.Lambda(lambda x: x * 2)(inp)).save(str(tmp_path / "code.keras"))
    with pytest.raises(ValueError, match="Keras's safe mode refuses"):
        run_folder.load_network(str(tmp_path / "code.keras"))
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes((tmp_path / "code.keras").read_bytes()[:200])
    with pytest.raises(ValueError, match="is damaged"):
        run_folder.load_network(str(truncated))


def test_feature_cache_damage_is_a_miss_and_an_unusable_cache_is_none(tmp_path):
    from reid_tf.feature_cache import FeatureCache

    cache = FeatureCache(str(tmp_path / "cache"), "model")
    cache.save("ab12", {"embedding": np.arange(4.0), "map_2": np.zeros((2, 2))})
    np.testing.assert_array_equal(cache.embedding("ab12"), np.arange(4.0))
    with open(cache.path("ab12"), "r+b") as f:
        f.truncate(30)
    assert cache.embedding("ab12") is None and not os.path.exists(cache.path("ab12"))  # computed again
    (tmp_path / "a_file").write_text("")
    assert FeatureCache.usable(str(tmp_path / "a_file"), "model") is None


def test_export_out_checks_and_a_partial_export_is_named(tmp_path):
    from reid_tf import export

    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        export.check_out(str(tmp_path / "file"))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ValueError, match="holds a partial export"):
        export.check_out(str(partial))
    export.check_out(str(partial), overwrite=True)
    export.check_out(str(tmp_path / "new"))


def test_replacing_model_keras_removes_the_evaluations_of_the_old_one(tmp_path):
    """Before: a step-42 eval.json stayed beside a step-104 model.keras after --resume --evaluate=false."""
    from reid_tf.model import build_model

    work = tmp_path / "w"
    work.mkdir()
    for name in ("eval.json", "eval.md", "eval_random_gallery.json", "eval_trials.json", "shortlist.md", "history.json"):
        (work / name).write_text("{}")
    run_folder.save_network(build_model("l2"), str(work), 104)
    assert sorted(os.listdir(work)) == ["history.json", "model.json", "model.keras"]
