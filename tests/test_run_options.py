"""A run's options in one typed place: TrainOptions.save / load round trip run.json, every
committed run record names the settings that have no default of their own, a missing or damaged one
is one clear error, and TrainOptions.split is the trial's split. Its history.json, read by evaluate
--visrank and by a resumed run's Validation: damaged, it is one warning line."""
import dataclasses
import glob
import json
import os

import pytest

from reid_tf import callbacks, datasets, evaluate
from reid_tf.datasets.synthetic import make_synthetic
from reid_tf.run_options import TrainOptions, read_run, resume_mismatches, run_setting


def test_save_then_load_gives_the_same_options(tmp_path):
    opts = TrainOptions(dataset="viper", model="l234", trial=3, seed=7, batch_size=64, pairing="shared",
                        shared_images_per_camera=1, max_minutes=2.5, workdir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    opts.save(total_steps=10, steps_per_epoch=4, split_sizes=[316, 0, 316])
    # no --recipe: run.json holds the one the run used, VIPeR's default, never null
    assert TrainOptions.load(opts.workdir) == dataclasses.replace(opts, recipe="shifted_copies")
    assert read_run(opts.workdir)["steps_per_epoch"] == 4  # what the options came to, beside them
    explicit = dataclasses.replace(opts, recipe="cross_camera")
    explicit.save(total_steps=10)
    assert TrainOptions.load(opts.workdir) == explicit


def test_a_run_json_is_read_back_where_the_run_is_now(tmp_path):
    """A run.json that does not record keep_every (runs written before it existed had none) reads as
    0; the options are the recorded ones, the workdir where the run is now."""
    (tmp_path / "run.json").write_text(json.dumps({"dataset": "cuhk01", "model": "l23", "trial": 1, "seed": 0,
                                                   "batch_size": 128, "workdir": "elsewhere/run",
                                                   "recipe": "cross_camera", "pairing": "per_pair",
                                                   "shared_images_per_camera": 2,
                                                   "total_steps": 40, "steps_per_epoch": 8}))
    opts = TrainOptions.load(str(tmp_path))
    assert (opts.pairing, opts.shared_images_per_camera, opts.recipe, opts.keep_every) == (
        "per_pair", 2, "cross_camera", 0)
    assert (opts.dataset, opts.trial, opts.batch_size) == ("cuhk01", 1, 128)
    assert opts.workdir == str(tmp_path)  # where the run is now, not where it was trained
    # --resume compares with the recorded values
    current = dataclasses.asdict(dataclasses.replace(opts, pairing="shared"))
    assert resume_mismatches(read_run(str(tmp_path)), current) == ["--pairing=per_pair (now shared)"]
    assert run_setting({"keep_every": 5}, "keep_every") == 5 and run_setting({}, "keep_every") == 0


def test_every_committed_run_record_names_its_recipe_pairing_and_k():
    """The run.json files and curve files under results/ and networks/ record the settings that have
    no default of their own (recipe, pairing) and K, so they read without a table of old values."""
    def read(path):
        with open(path) as f:
            return json.load(f)

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    records = [(p, read(p)) for p in glob.glob(os.path.join(root, "results", "*_run.json"))]
    records += [(p, read(p)["run"]) for p in glob.glob(os.path.join(root, "results", "*_curve.json"))
                + glob.glob(os.path.join(root, "networks", "*", "card.json"))]
    assert len(records) > 5
    for path, run in records:
        for name in ("recipe", "pairing", "shared_images_per_camera"):
            assert run.get(name) is not None, (path, name)


def test_the_default_pairing_is_the_recipes_and_run_json_records_it(tmp_path):
    """No --pairing: shared images for shifted_copies, per pair for cross_camera (config.RECIPE_PAIRING),
    per pair under --strategy=mirrored (which cannot split a shared batch); a given one is kept.
    run.json holds the pairing the run used, so a run of the old default is resumed only by naming it."""
    assert TrainOptions(dataset="cuhk01").resolved_pairing() == "shared"  # the paper's set: shifted_copies
    assert TrainOptions(dataset="cuhk01", recipe="cross_camera").resolved_pairing() == "per_pair"
    assert TrainOptions().resolved_pairing() == "per_pair"  # the synthetic set: cross_camera
    assert TrainOptions(dataset="market1501").resolved_pairing() == "per_pair"
    assert TrainOptions(dataset="cuhk01", strategy="mirrored").resolved_pairing() == "per_pair"
    assert TrainOptions(dataset="cuhk01", pairing="per_pair").resolved_pairing() == "per_pair"
    assert TrainOptions(recipe="shifted_copies").resolved_pairing() == "shared"
    opts = TrainOptions(dataset="viper", workdir=str(tmp_path))
    opts.save(total_steps=1)
    assert read_run(opts.workdir)["pairing"] == "shared"  # resolved, never null
    old_default = {**read_run(opts.workdir), "pairing": "per_pair"}  # shifted_copies per pair, made before
    current = dataclasses.replace(opts, recipe=opts.resolved_recipe(), pairing=opts.resolved_pairing())
    assert resume_mismatches(old_default, dataclasses.asdict(current)) == ["--pairing=per_pair (now shared)"]


@pytest.mark.parametrize("text,error,words", [
    (None, FileNotFoundError, "not a reid_tf.train workdir"),
    ('{"dataset": ', ValueError, "is damaged"),
    ("[1, 2]", ValueError, "is damaged"),
    ('{"dataset": "cuhk01", "recipe": "paper_xcorr"}', ValueError,  # a name of an older version
     r"names recipe 'paper_xcorr', which this reid_tf does not know \(cross_camera, shifted_copies\)"),
])
def test_a_missing_or_damaged_run_json_is_one_clear_error(tmp_path, text, error, words):
    if text is not None:
        (tmp_path / "run.json").write_text(text)
    with pytest.raises(error, match=words):
        TrainOptions.load(str(tmp_path))


def test_split_is_the_trials_split(tmp_path):
    make_synthetic(str(tmp_path / "synthetic"), identities=16, seed=0, images_per_camera=1)
    opts = TrainOptions(data_dir=str(tmp_path), trial=1, seed=2, val_identities=2, test_identities=5)
    dataset = opts.load_dataset()
    assert dataset.name == "synthetic"
    assert opts.split(dataset) == dataset.split(1, 2, 2, 5)
    assert len(opts.split(dataset).test) == 5
    assert datasets.records_of(dataset, opts.split(dataset).train)


@pytest.mark.parametrize("text,step", [(None, 0), ('[{"step": 5}, {"step": 9}]', 9), ("[]", 0), ('[{"ste', 0),
                                       ('{"step": 9}', 0), ('[{"rank1": 50}]', 0)])
def test_visranks_step_from_history_json_never_a_traceback(tmp_path, text, step, caplog):
    """evaluate --visrank's TensorBoard step: the last validated one; a damaged history.json is one
    warning line (it was an IndexError / KeyError traceback)."""
    if text is not None:
        (tmp_path / "history.json").write_text(text)
    assert evaluate._last_validated_step(str(tmp_path)) == step
    warnings = [r for r in caplog.records if "history.json cannot be read" in r.getMessage()]
    assert len(warnings) == (text is not None and step == 0)


@pytest.mark.parametrize("text,kept", [('[{"step": 5, "train_seconds": 7.5}]', True), ('[{"ste', False),
                                       ('{"step": 5}', False), ('[{"step": 5}]', False), ("[]", False),
                                       ("null", False)])
def test_resumed_validation_reads_a_damaged_history_json_as_one_warning(tmp_path, text, kept, caplog):
    """Validation.on_train_begin on --resume keeps the earlier points; a damaged history.json (it was
    a JSONDecodeError / KeyError traceback that ended the resumed run) is one warning, and the
    curve starts again, its time from 0."""
    (tmp_path / "history.json").write_text(text)
    opts = TrainOptions(workdir=str(tmp_path), figures=False)
    validation = callbacks.Validation(None, [], "val", opts, every=0, network=None)
    validation.on_train_begin()
    assert validation.history == (json.loads(text) if kept else [])
    assert validation.elapsed0 == (7.5 if kept else 0.0)
    warnings = [r.getMessage() for r in caplog.records if "history.json cannot be read" in r.getMessage()]
    assert len(warnings) == (not kept)
    assert all(w.endswith("the file is replaced at the next validation") for w in warnings)
