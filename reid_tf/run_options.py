"""A run's options and its record: what a training run depends on (TrainOptions, saved as run.json
in its workdir: reid_tf.run_folder.run_file), how a record is read back, which settings a --resume
must keep, the checks that an evaluation or a curve scores a run on the data it trained on, and the
batches a run trains on (training_data).
Training (reid_tf.train), evaluation (reid_tf.evaluate) and the curve (experiments.curve) all read
runs through this module, so none of them imports another to know what a run was.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import uuid

from reid_tf import config, datasets, fileio
from reid_tf.cli import UsageError
from reid_tf.datasets import synthetic
from reid_tf.run_folder import run_file


@dataclasses.dataclass
class TrainOptions:
    """Everything a run depends on; saved to workdir/run.json."""

    dataset: str = "synthetic"
    data_dir: str = "data"
    model: str = "l23"
    trial: int = 0
    seed: int = 0
    epochs: float = config.EPOCHS
    batch_size: int | None = None  # None: the dataset's (reid_tf.datasets, the paper's where it has one)
    learning_rate: float = config.LEARNING_RATE
    workdir: str = "runs/default"
    resume: bool = False
    strategy: str = "default"  # "default" (one device) or "mirrored" (tf.distribute.MirroredStrategy)
    init_from: str | None = None  # a trained network (model.keras or its workdir) to start from
    init_partial: bool = False  # --init_from may leave layers it has no weights for at their initial values
    # config.RECIPES: which reading of §4.2's pairs (DESIGN "Recipes"); None: the dataset's (the
    # paper's datasets: [31]'s "shifted_copies"; the others: "cross_camera")
    recipe: str | None = None
    shared_images_per_camera: int = config.SHARED_IMAGES_PER_CAMERA  # K at most, --pairing=shared
    # "per_pair" or "shared" (reid_tf.pairs); None: the recipe's (config.RECIPE_PAIRING: shared for
    # shifted_copies, per pair for cross_camera; per pair under --strategy=mirrored)
    pairing: str | None = None
    checkpoint_every: int = 50  # steps
    keep_every: int = 0  # steps: checkpoints at its multiples are kept in checkpoints/kept/ (0: none)
    eval_every: int = 0  # steps between validation CMC runs (0: only at the end)
    max_steps: int | None = None
    max_minutes: float | None = None
    log_every_seconds: float = 30.0
    synthetic_identities: int = 400
    val_identities: int | None = None  # None: the protocol's (DESIGN "Protocols")
    test_identities: int | None = None  # None: the protocol's; smaller for quick runs (not CUHK03)
    evaluate: bool = True  # evaluate on the trial's test split at the end
    figures: bool = True  # Figure 4 panels in TensorBoard at each validation
    # > 0: before model.keras is written and evaluated, its BN statistics are re-estimated over this
    # many of the run's next training batches (reid_tf.precise_bn; DESIGN "Precise BN"); 0: the moving
    # averages as trained. The checkpoints keep the moving averages either way.
    precise_bn: int = 0

    def check(self) -> None:
        """Refuse values that cannot mean anything, naming the flag, and a dataset that is unknown or
        not prepared (check_dataset): everything that needs neither TensorFlow nor the workdir
        (UsageError)."""
        positive = {"epochs": self.epochs, "checkpoint_every": self.checkpoint_every, "max_steps": self.max_steps,
                    "max_minutes": self.max_minutes, "synthetic_identities": self.synthetic_identities}
        for name, value in positive.items():
            if value is not None and not value > 0:  # also refuses NaN
                raise UsageError(f"--{name}={value}: must be > 0")
        for name in ("epochs", "learning_rate"):  # inf epochs is no number of steps (--max_minutes bounds time)
            if not math.isfinite(getattr(self, name)):
                raise UsageError(f"--{name}={getattr(self, name)}: must be a finite number")
        for name in ("trial", "seed", "eval_every", "keep_every", "log_every_seconds", "learning_rate",
                     "precise_bn"):
            if not getattr(self, name) >= 0:  # also refuses NaN; learning rate 0 freezes the weights
                raise UsageError(f"--{name}={getattr(self, name)}: must be >= 0")
        if self.batch_size is not None and self.batch_size < 3:
            raise UsageError(f"--batch_size={self.batch_size}: must be >= 3 (a batch is made of "
                             "(positive, negative, negative) triples)")
        for name in ("val_identities", "test_identities"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UsageError(f"--{name}={getattr(self, name)}: must be >= 0")
        if os.path.exists(self.data_dir) and not os.path.isdir(self.data_dir):
            raise UsageError(f"--data_dir={self.data_dir} is a file, not a folder of prepared datasets")
        if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
            raise UsageError(f"--workdir={self.workdir} is a file, not a folder")
        config.get_model_config(self.model)  # unknown preset: ValueError listing the valid ones
        if self.pairing is not None and self.pairing not in config.PAIRINGS:
            raise UsageError(f"unknown pairing {self.pairing!r}; valid: {', '.join(config.PAIRINGS)}")
        if self.shared_images_per_camera < 1:
            raise UsageError(f"--shared_images_per_camera={self.shared_images_per_camera}: must be >= 1")
        if self.recipe is not None and self.recipe not in config.RECIPES:
            raise UsageError(f"unknown recipe {self.recipe!r}; valid: {', '.join(config.RECIPES)}")
        check_dataset(self)
        recipe, limit = self.resolved_recipe(), config.RECIPE_MAX_SHARED_K[self.resolved_recipe()]
        if self.resolved_pairing() == "shared" and limit is not None and self.shared_images_per_camera > limit:
            given = "" if self.recipe else f" ({self.dataset}'s default; --recipe=cross_camera for ours)"
            pairing = "" if self.pairing else " (its default pairing; --pairing=per_pair for the other)"
            raise UsageError(f"--recipe={recipe}{given} on shared images{pairing} shares at most K = {limit} "
                             f"image(s) per camera side a visit (config.RECIPE_MAX_SHARED_K; its positives "
                             f"cannot be cut into equal K × K blocks); drop --shared_images_per_camera="
                             f"{self.shared_images_per_camera} or set it to at most {limit}")
        if self.pairing == "shared" and self.strategy == "mirrored":
            raise UsageError("--pairing=shared forms each batch's pairs among its own images, which "
                             "--strategy=mirrored would split across replicas; use --pairing=per_pair "
                             "with it")

    def resolved_recipe(self) -> str:
        """--recipe, or the dataset's default recipe (DatasetSpec.recipe) when it is not given."""
        return self.recipe if self.recipe is not None else datasets.get_spec(self.dataset).recipe

    def resolved_pairing(self) -> str:
        """--pairing, or the recipe's default (config.RECIPE_PAIRING) when it is not given; per pair
        under --strategy=mirrored, which cannot split a shared batch."""
        if self.pairing is not None:
            return self.pairing
        return "per_pair" if self.strategy == "mirrored" else config.RECIPE_PAIRING[self.resolved_recipe()]

    def load_dataset(self) -> datasets.Dataset:
        """The prepared dataset the run names (the synthetic one is generated by resolve_dataset)."""
        return datasets.load_dataset(self.dataset, datasets.dataset_dir(self.dataset, self.data_dir))

    def split(self, dataset: datasets.Dataset) -> datasets.Split:
        """The run's trial: its train / val / test identities. Training, validation, evaluation and
        curves all take the split from here, so they cannot disagree on which identities are which."""
        return dataset.split(self.trial, self.seed, self.val_identities, self.test_identities)

    def save(self, **resolved) -> str:
        """Write workdir/run.json (atomically): these options, and what they came to (`resolved`:
        total_steps, steps_per_epoch, split_sizes). The recipe and pairing are written resolved (never
        null: what the run trained with, whatever the defaults become). Returns its path."""
        body = {**dataclasses.asdict(self), "recipe": self.resolved_recipe(), "pairing": self.resolved_pairing(),
                **resolved}
        return fileio.write_json(run_file(self.workdir), body)

    @classmethod
    def from_record(cls, record: dict) -> "TrainOptions":
        """The options in a run.json body; a setting it does not record takes TrainOptions' default
        (run_setting), and what is not an option (total_steps, ...) is left out."""
        return cls(**{f.name: run_setting(record, f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def load(cls, workdir: str) -> "TrainOptions":
        """The options of the run in `workdir` (its run.json), with workdir = where it is now."""
        return dataclasses.replace(cls.from_record(read_run(workdir)), workdir=workdir)


def run_identity(previous: dict | None, start: int) -> str | None:
    """run.json's run_id: new when the run starts from step 0, the recorded one when it resumes. Results
    derived from a run (experiments.curve) carry it, so that a run started afresh in the same workdir (a
    new machine, a deleted folder) is never taken for the one whose results are already written. None
    for a resumed run whose run.json predates identities or is unreadable: its identity is unknown."""
    if start == 0:
        return uuid.uuid4().hex[:16]
    return (previous or {}).get("run_id")


def read_run(workdir: str) -> dict:
    """The body of workdir/run.json (TrainOptions.save); a missing or damaged one is an error in one
    line (FileNotFoundError, ValueError)."""
    path = run_file(workdir)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {workdir!r} is not a reid_tf.train workdir")
    with open(path) as f:
        try:
            body = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path} is damaged ({e})") from None
    if not isinstance(body, dict):
        raise ValueError(f"{path} is damaged (not a JSON object)")
    if body.get("recipe") is not None and body["recipe"] not in config.RECIPES:
        # A setting's name changes once, with the committed records rewritten (docs/LOGBOOK.md names
        # each rename); an older workdir is refused rather than read under a table of old names.
        raise ValueError(f"{path} names recipe {body['recipe']!r}, which this reid_tf does not know "
                         f"({', '.join(config.RECIPES)}): a run of an older version; set \"recipe\" in "
                         "it to the present name of the same pairs (docs/LOGBOOK.md lists renamed names)")
    return body


# What a checkpoint depends on: a resumed run must have the same (batch_size as resolved). The other
# options (epochs, max_steps, max_minutes, checkpoint_every, keep_every, eval_every, log_every_seconds,
# strategy, evaluate, figures, precise_bn, data_dir) may change on --resume (README, "Using it"); a
# finished run resumed with another --precise_bn rewrites model.keras from its last checkpoint.
RESUME_FIXED = ("dataset", "model", "trial", "seed", "batch_size", "learning_rate", "pairing", "recipe",
                "val_identities", "test_identities", "synthetic_identities", "shared_images_per_camera")


def run_setting(run: dict, name: str):
    """A setting of a recorded run.json (or of a curve file's copy of it): its own value, else
    TrainOptions' default (keep_every: 0, which the runs that do not record it had)."""
    return run[name] if name in run else getattr(TrainOptions, name, None)


def resume_mismatches(recorded: dict, current: dict) -> list[str]:
    """The RESUME_FIXED settings whose values differ, as "--name=old (now new)" strings."""
    only_when = {"synthetic_identities": current["dataset"] == "synthetic",
                 "shared_images_per_camera": current.get("pairing") == "shared"}
    names = [n for n in RESUME_FIXED if only_when.get(n, True)]
    old = {n: run_setting(recorded, n) for n in names}
    return [f"--{n}={old[n]} (now {current[n]})" for n in names if old[n] != current[n]]


def check_dataset(opts: TrainOptions) -> None:
    """The dataset must be known, and prepared unless it is the synthetic one (generated on use).

    The synthetic set is only the default of a run that names no dataset, never a stand-in for a
    dataset the run names: that is an error giving the command that prepares it.
    """
    name = opts.dataset
    if name not in datasets.DATASETS:
        raise UsageError(f"unknown dataset {name!r}; valid datasets: {', '.join(datasets.DATASETS)}")
    if name == "synthetic":  # before anything is generated: another setting's set is refused
        try:
            synthetic.check_setting(datasets.dataset_dir(name, opts.data_dir), opts.synthetic_identities,
                                    opts.seed)
        except ValueError as e:
            raise UsageError(f"--data_dir={opts.data_dir}: {e}") from None
    elif not datasets.is_prepared(name, opts.data_dir):
        raise UsageError(f"dataset {name} is not prepared under {opts.data_dir}; prepare it with: "
                         f"{datasets.prepare_command(name, opts.data_dir)} (or pass the --data_dir "
                         "that holds it)")


def resolve_dataset(opts: TrainOptions) -> datasets.Dataset:
    """Load the requested dataset (checked by TrainOptions.check), generating the synthetic one when
    missing."""
    if opts.dataset == "synthetic":
        synthetic.make_synthetic(datasets.dataset_dir(opts.dataset, opts.data_dir), opts.synthetic_identities,
                                 opts.seed)
    return opts.load_dataset()


def data_signature(root: str) -> str:
    """A digest of what a prepared dataset's manifest says about its images: per image the last two
    parts of its path (not the folder it was prepared from, which may move), identity and camera;
    the query / gallery / testset lists; and the generator's settings of the synthetic set (whose
    file names are the same for every seed). run.json records it, so that evaluating a run on other
    data than it trained on is refused (check_run_data) instead of giving another number."""
    def strip(value):
        if isinstance(value, dict):
            return {k: ("/".join(v.replace(os.sep, "/").split("/")[-2:]) if k == "path" else strip(v))
                    for k, v in value.items()}
        return [strip(v) for v in value] if isinstance(value, list) else value

    body = {k: v for k, v in datasets.read_manifest(root).items() if k not in ("format", "source")}
    return hashlib.sha256(json.dumps(strip(body), sort_keys=True).encode()).hexdigest()[:16]


def check_run_data(record: dict, opts: TrainOptions) -> None:
    """Refuse (UsageError, one line) data under opts' data root that is not what the run of `record`
    (its run.json) trained on: another synthetic set (settings in its manifest), or a dataset whose
    manifest differs from the one recorded (data_signature; runs that predate it are not checked)."""
    root = datasets.dataset_dir(opts.dataset, opts.data_dir)
    body = datasets.read_manifest(root)
    where = f"{root} is not the data the run in {opts.workdir} trained on"
    if opts.dataset == "synthetic":  # a run.json that does not record the set's size is checked on its seed
        want = (record.get("synthetic_identities", body.get("identities")), opts.seed)
        if (body.get("identities"), body.get("seed")) != want:
            raise UsageError(
                f"{where}: it holds the synthetic set of {synthetic.setting_of(body)}, the run used "
                f"{want[0]} identities, seed {want[1]}; move that folder away and regenerate the run's "
                f"set: python -m data_tools.make_synthetic --out={root} --identities={want[0]} --seed={want[1]}")
    recorded = record.get("data_signature")
    if recorded and recorded != data_signature(root):
        raise UsageError(f"{where}: its manifest.json lists other images (data signature {data_signature(root)}, "
                         f"run.json records {recorded}); prepare the data the run used again there, or "
                         "evaluate a run trained on this data")


def run_dataset(workdir: str) -> tuple[TrainOptions, datasets.Dataset]:
    """The options of the run in `workdir` and the dataset it trained on, checked to be that
    (check_run_data): what evaluations and curves score a run on."""
    record = read_run(workdir)
    opts = dataclasses.replace(TrainOptions.from_record(record), workdir=workdir)
    dataset = opts.load_dataset()
    check_run_data(record, opts)
    return opts, dataset


def training_data(opts: TrainOptions, train_records, crops_per_image: int, start_step: int):
    """The run's training batches from step `start_step` on (resolved options: batch size, recipe and
    pairing as run.json records them): shared-image or per-pair batches, as the run trains on (the
    training itself, and the batches that re-estimate BN statistics after its last step)."""
    from reid_tf import pairs  # loads TensorFlow: not when only options are read

    if opts.pairing == "shared":
        return pairs.make_shared_dataset(train_records, opts.batch_size, opts.seed, crops_per_image,
                                         start_step=start_step, most=opts.shared_images_per_camera,
                                         recipe=opts.recipe)
    return pairs.make_pair_dataset(train_records, opts.batch_size, opts.seed, crops_per_image,
                                   start_step=start_step, recipe=opts.recipe)
