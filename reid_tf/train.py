"""Train the paper's network and evaluate single-shot CMC: `python -m reid_tf.train --dataset=viper`.

Without --dataset it trains on the built-in synthetic dataset (the main job), generating it under
--data_dir on first use; a named dataset that is not prepared is an error giving the command that
prepares it. Recipe defaults are the paper's (§4.2, reid_tf.config): Adam 5e-4, weight decay 5e-4,
batch 256 for CUHK03 and 128 otherwise, 5 epochs. --max_minutes / --max_steps bound a run.

The workdir (reid_tf.run_folder, which names its files): .lock (held while a training runs: a
second one is refused before TensorFlow loads), checkpoints/ (atomic, every --checkpoint_every steps
and on Ctrl-C / SIGTERM; --resume continues exactly, from the newest checkpoint that restores;
reid_tf.checkpoints), tb/, run.json (the resolved options, checked by --resume, and the signature of
the data trained on, checked by every evaluation), history.json, model.keras (final network),
eval.json / eval.md (test CMC, written by reid_tf.evaluate).

Everything that can refuse a run is checked before anything is written or generated: the values,
the synthetic set already under --data_dir (a set of another --seed / --synthetic_identities is
refused, never regenerated under the runs that use it), the lock, and what the workdir holds (a
fresh start over another run's checkpoints or model.keras is refused; --resume's settings must be
the run's). A fresh start on a workdir whose run is finished says so in one line and exits 0; a
run ends, as every run does, on where to look next.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import time

from absl import flags, logging

from reid_tf import cli, config, datasets, run_folder
from reid_tf.cli import Interrupted, UsageError
from reid_tf.run_folder import eval_prefix, finished_run, load_network, save_network
from reid_tf.run_folder import lock as lock_workdir
from reid_tf.run_options import (TrainOptions, check_run_data, data_signature, read_run, resolve_dataset,
                                 resume_mismatches, run_identity, training_data)

FLAGS = flags.FLAGS
# TensorFlow and the modules that load it (keras, model, pairs, pair_trainer, checkpoints, callbacks) are imported in
# the functions that train, after the options are checked: a bad flag fails at once, not after
# seconds of TensorFlow start-up; reid_tf.evaluate too (it loads the image and ranking modules).


def _strategy(name: str):
    import tensorflow as tf  # lazy: see the imports
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        logging.info("MirroredStrategy over %d devices", strategy.num_replicas_in_sync)
        return strategy
    if name != "default":
        raise ValueError(f"unknown strategy {name!r}; valid: default, mirrored")
    return tf.distribute.get_strategy()


def init_from(network, source: str, partial: bool = False) -> None:
    """Start from a trained network's weights (model.keras, or a workdir holding one): every layer
    of the same name and shapes is copied (the practice of the time for CUHK01 and VIPeR was to
    start from a CUHK03 model). A layer it has no weights for (another preset's network: l234 into
    l23) is an error unless `partial` (--init_partial): then it keeps its initial values. The log
    names what was and was not loaded."""
    from reid_tf.model import copy_weights  # lazy: see the imports
    path = run_folder.model_file(source) if os.path.isdir(source) else source
    try:
        loaded = load_network(source)
    except (OSError, ValueError) as e:  # the one line says which flag gave the path
        raise type(e)(f"--init_from: {e}") from None
    copied, kept = copy_weights(loaded, network)
    if not copied:
        raise ValueError(f"--init_from: {path} shares no layer with preset {network.name!r}")
    if kept and not partial:
        raise UsageError(f"--init_from={source}: {path} has no weights (of these shapes) for {len(kept)} of "
                         f"{network.name}'s {len(copied) + len(kept)} layers ({', '.join(kept)}): it is another "
                         "preset's network; give a network of this --model, or pass --init_partial to start "
                         "those layers from their initial weights")
    logging.info("initialised %d layers from %s: %s", len(copied), path, ", ".join(copied))
    if kept:
        logging.warning("--init_partial: %d layers not loaded from %s, left at their initial weights: %s",
                        len(kept), path, ", ".join(kept))


def run(opts: TrainOptions) -> dict:
    """Train (and by default evaluate) one model for one trial; returns a summary dict.

    Holds the workdir's lock throughout (a second run on it is refused, naming this one's pid).
    """
    opts.check()  # before the lock creates the workdir
    return _run_checked(opts)


def _run_checked(opts: TrainOptions) -> dict:
    with lock_workdir(opts.workdir):
        return _run_prepared(*_prepare(opts))


def _previous_settings(opts: TrainOptions) -> dict | None:
    """run.json of the run to resume (None when starting fresh); refuses a fresh start over one.

    A run's checkpoints are found by their files, not by the `checkpoint` state file TensorFlow
    reads: without that file (or with an empty one) they are still the run's, and --resume rebuilds
    it (checkpoints.rebuild_state) rather than training from step 0 over them."""
    checkpoints = run_folder.checkpoint_dir(opts.workdir)
    steps = run_folder.checkpoint_steps(checkpoints)
    has_checkpoint = bool(steps) or os.path.exists(run_folder.checkpoint_state_file(checkpoints))
    held = run_folder.held_results(opts.workdir)
    if (has_checkpoint or held) and not opts.resume:
        if finished_run(opts.workdir) is not None:
            raise RunFinished(opts.workdir)
        what = "checkpoints" if has_checkpoint else f"a run's results ({', '.join(held[:3])})"
        raise FileExistsError(f"{opts.workdir} holds an unfinished run ({what}) — continue it with --resume "
                              "(make demo DEMO_FLAGS=--resume), or start another in a new --workdir (make demo "
                              "WORKDIR=runs/demo2)")
    if not opts.resume:
        return None
    if not steps:
        if held:
            raise FileExistsError(
                f"--resume: {opts.workdir} holds a run's results ({', '.join(held[:3])}) but no checkpoint in "
                f"{checkpoints} to continue from; choose a new --workdir (or copy the newest of "
                f"{checkpoints}/{run_folder.KEPT_DIR}/ into {checkpoints}/ to continue from it)")
        logging.info("--resume: %s holds no checkpoint; starting a fresh run", opts.workdir)
        return None
    try:
        return read_run(opts.workdir)
    except (OSError, ValueError) as e:
        logging.warning("--resume: %s; the settings of the run are not checked", e)
        return None


def _resolve(opts: TrainOptions) -> tuple[TrainOptions, dict | None]:
    """The options as run.json records them (batch size, recipe and pairing resolved: a copy, the
    caller's are left as they were) and the run.json of the run they resume (None: a fresh start).
    Everything here is checked before any data is generated and before TensorFlow loads: a refused
    --resume changes nothing, and a second training on a busy workdir is refused at once."""
    previous = _previous_settings(opts)
    spec = datasets.get_spec(opts.dataset)
    batch = opts.batch_size if opts.batch_size is not None else spec.batch_size
    resolved = dataclasses.replace(opts, dataset=spec.name, batch_size=batch, recipe=opts.resolved_recipe(),
                                   pairing=opts.resolved_pairing())
    if previous is not None:
        differ = resume_mismatches(previous, dataclasses.asdict(resolved))
        if differ:
            raise UsageError(
                f"--resume: {opts.workdir} was trained with other settings: {'; '.join(differ)}. A "
                "checkpoint continues only with the dataset, trial, seed, model, batch size, learning "
                "rate and split it was trained with; use them, or start a new --workdir")
    return resolved, previous


def _prepare(opts: TrainOptions) -> tuple[TrainOptions, dict | None, datasets.Dataset]:
    """What a run needs before TensorFlow loads (_resolve), and its dataset (the synthetic one
    generated if missing), checked to be the data a resumed run began on. Hold the workdir's lock."""
    opts, previous = _resolve(opts)
    dataset = resolve_dataset(opts)
    if previous is not None:
        check_run_data(previous, opts)
    return opts, previous, dataset


def _run_prepared(opts: TrainOptions, previous: dict | None, dataset: datasets.Dataset) -> dict:
    import keras  # lazy, as the other imports here: see the imports

    from reid_tf import checkpoints as checkpoints_lib
    from reid_tf import pairs
    from reid_tf.pair_trainer import PairTrainer, make_optimizer
    from reid_tf.callbacks import ProgressLogger, StepCheckpoint, StopOnSignal, TimeBudget, Validation
    from reid_tf.model import build_model

    model_cfg = config.get_model_config(opts.model)
    checkpoints = run_folder.checkpoint_dir(opts.workdir)
    removed = checkpoints_lib.remove_partial_checkpoints(checkpoints)  # safe: we hold the workdir's lock
    if opts.resume:
        checkpoints_lib.rebuild_state(checkpoints)
    batch = opts.batch_size
    if dataset.name == "synthetic" and opts.max_minutes is None and opts.max_steps is None:
        opts.max_minutes = config.SYNTHETIC_MINUTES
        logging.info("synthetic dataset: training for at most %.0f minutes (config.SYNTHETIC_MINUTES; "
                     "--max_minutes or --max_steps to change)", opts.max_minutes)
    split = opts.split(dataset)
    train_records = datasets.records_of(dataset, split.train)
    crops = dataset.spec.crops_per_image
    shared = opts.pairing == "shared"  # TrainOptions.check has refused shared + mirrored
    if shared:
        k = opts.shared_images_per_camera
        per_epoch = pairs.shared_steps_per_epoch(train_records, batch, crops, k, opts.recipe)
        images_per_step, pairs_per_step = pairs.shared_batch_shape(train_records, batch, k, opts.recipe)
    else:
        per_epoch, pairs_per_step = pairs.steps_per_epoch(train_records, batch, crops, opts.recipe), batch
    if per_epoch < 1:
        raise UsageError(f"--batch_size={batch} is larger than one epoch of {dataset.name} trial "
                         f"{opts.trial}")
    total = opts.max_steps or max(1, math.ceil(opts.epochs * per_epoch))
    logging.info("%s trial %d: %d train / %d val / %d test identities; %d steps per epoch of %d "
                 "pairs (%s); training %d steps (%.2f epochs)", dataset.name, opts.trial, len(split.train),
                 len(split.val), len(split.test), per_epoch, pairs_per_step,
                 "shared images: %d images a batch" % images_per_step
                 if shared else "per pair", total, total / per_epoch)

    keras.utils.set_random_seed(opts.seed)  # initial weights (Python, NumPy and TF seeds) per run
    strategy = _strategy(opts.strategy)
    with strategy.scope():
        network = build_model(model_cfg)
        model = PairTrainer(network, contrastive=model_cfg.contrastive)
        model.compile(optimizer=make_optimizer(opts.learning_rate), jit_compile=False)
        manager = checkpoints_lib.checkpoint_manager(model, checkpoints)
        start, manager = checkpoints_lib.restore(model, manager) if opts.resume else (0, manager)
        if opts.init_from and not start:
            init_from(network, opts.init_from, opts.init_partial)
    opts.save(total_steps=total, steps_per_epoch=per_epoch, split_sizes=[len(s) for s in split],
              run_id=run_identity(previous, start), data_signature=data_signature(dataset.root))
    if start >= total:
        logging.info("checkpoint step %d already reaches the %d steps asked for", start, total)

    data = training_data(opts, train_records, crops, start)
    every = max(1, min(opts.checkpoint_every, total))
    checkpoint = StepCheckpoint(manager, every, total, opts.keep_every)
    budget = TimeBudget(opts.max_minutes)
    stop = StopOnSignal()
    monitor_ids = split.val or split.test  # VIPeR/CUHK01 have no validation split (see Validation)
    if dataset.spec.protocol == datasets.STANDARD:  # its test set is the query / gallery, not records
        monitor_ids = split.val
    validation = Validation(dataset, monitor_ids, "val" if split.val else "test_monitor", opts,
                            every=opts.eval_every, network=network) if monitor_ids else None
    callbacks = [
        stop, checkpoint, budget,
        ProgressLogger(total, pairs_per_step, opts.log_every_seconds),
        keras.callbacks.TensorBoard(run_folder.tensorboard_dir(opts.workdir), update_freq=every),
    ]
    if validation is not None:
        callbacks.append(validation)
        validation.skip_final = lambda: stop.signum is not None  # exit promptly on Ctrl-C / SIGTERM
    t0 = time.monotonic()
    if start < total:
        with stop:
            model.fit(data, epochs=math.ceil(total / every), initial_epoch=start // every,  # data: already shuffled
                      steps_per_epoch=every, callbacks=callbacks, verbose=0, shuffle=False)
    train_seconds = time.monotonic() - t0
    step = int(model.optimizer.iterations.numpy())
    if stop.signum is not None:
        raise Interrupted(f"stopped by {signal.Signals(stop.signum).name} at step {step}; checkpoint "
                          f"{checkpoint.manager.latest_checkpoint} written; continue with --resume",
                          stop.signum)
    used = 0
    if opts.precise_bn:  # after the last checkpoint: the checkpoints keep the moving averages
        from reid_tf import precise_bn
        used = precise_bn.recalibrate(model, training_data(opts, train_records, crops, step), opts.precise_bn)
        logging.info("BN statistics re-estimated over %d training batches from step %d (--precise_bn)",
                     used, step)
    path = save_network(network, opts.workdir, step, used)
    logging.info("trained to step %d in %.1f min%s; network saved to %s", step, train_seconds / 60,
                 " (time budget reached)" if budget.exhausted else "", path)
    summary = {"dataset": dataset.name, "model": model_cfg.name, "trial": opts.trial, "step": step,
               "train_minutes": train_seconds / 60, "time_budget_reached": budget.exhausted,
               "removed_partial_checkpoints": removed}
    if opts.evaluate:
        from reid_tf import evaluate  # lazy: see the imports
        summary["test"] = evaluate.evaluate_workdir(opts.workdir, network=network)
    return summary


def define_flags() -> None:
    d = TrainOptions()
    flags.DEFINE_string("dataset", d.dataset, f"one of {', '.join(datasets.DATASETS)}")
    flags.DEFINE_string("data_dir", d.data_dir, "root of prepared datasets (datasets.dataset_dir)")
    flags.DEFINE_string("model", d.model, f"preset: {', '.join(config.PRESETS)}")
    flags.DEFINE_integer("trial", d.trial, "protocol trial (CUHK03: testset index)")
    flags.DEFINE_integer("seed", d.seed, "seed of the split, the pairs and the augmentation")
    flags.DEFINE_float("epochs", d.epochs, "epochs (paper §4.2: 5)")
    flags.DEFINE_integer("batch_size", None, "pairs per batch (default: paper, 256 CUHK03 / 128 others)")
    flags.DEFINE_float("learning_rate", d.learning_rate, "Adam learning rate (paper §4.2: 5e-4)")
    flags.DEFINE_string("workdir", d.workdir, "checkpoints, TensorBoard logs, results")
    flags.DEFINE_boolean("resume", d.resume, "continue from the workdir's last checkpoint")
    flags.DEFINE_enum("strategy", d.strategy, ["default", "mirrored"], "tf.distribute strategy")
    flags.DEFINE_enum("recipe", d.recipe, list(config.RECIPES), "which reading of the paper's pairs: "
                      "cross_camera (ours) or shifted_copies ([31]'s code: copies, all pairs; docs/DESIGN.md); "
                      "default: the dataset's (shifted_copies for VIPeR, CUHK01, CUHK03; else cross_camera)")
    flags.DEFINE_integer("shared_images_per_camera", d.shared_images_per_camera, "--pairing=shared: "
                         "camera-A and camera-B images per identity visit, at most (K; 1 = more "
                         "identities per batch, 2 = more pairs per encoded image)")
    flags.DEFINE_string("init_from", None, "start from this trained network's weights (a model.keras or "
                        "a finished run's workdir; layers matched by name and shape), e.g. a CUHK03 model")
    flags.DEFINE_boolean("init_partial", d.init_partial, "let --init_from load only part of the network "
                         "(another preset's: the layers it has no weights for keep their initial values, "
                         "and the log lists them); without it that is an error")
    flags.DEFINE_enum("pairing", d.pairing, list(config.PAIRINGS), "per_pair: every pair's two images "
                      "encoded for it; shared: a batch of identity visits, each image encoded once and "
                      "paired within the batch (1.8x faster); default: the recipe's (shared for shifted_copies, "
                      "per_pair for cross_camera and under --strategy=mirrored; docs/DESIGN.md)")
    flags.DEFINE_integer("checkpoint_every", d.checkpoint_every, "steps between checkpoints")
    flags.DEFINE_integer("keep_every", d.keep_every, "keep the checkpoints at multiples of this many "
                         "steps in checkpoints/kept/ (never deleted; the points of experiments.curve); "
                         "0: keep only the newest few")
    flags.DEFINE_integer("eval_every", d.eval_every, "steps between validation CMC runs (0: at end)")
    flags.DEFINE_integer("max_steps", None, "stop after this many steps (overrides --epochs)")
    flags.DEFINE_float("max_minutes", None, "stop (and checkpoint) after this much training time")
    flags.DEFINE_float("log_every_seconds", d.log_every_seconds, "progress line cadence")
    flags.DEFINE_integer("synthetic_identities", d.synthetic_identities, "size of the synthetic set")
    flags.DEFINE_integer("val_identities", None, "validation identities (default: the protocol's)")
    flags.DEFINE_integer("test_identities", None, "test identities (default: the protocol's)")
    flags.DEFINE_boolean("evaluate", d.evaluate, "evaluate on the test split after training")
    flags.DEFINE_boolean("figures", d.figures, "log Figure 4 panels to TensorBoard")
    flags.DEFINE_integer("precise_bn", d.precise_bn, "re-estimate the final network's BN statistics over this "
                         "many of the run's next training batches before saving model.keras and evaluating "
                         "it (0: the moving averages as trained, the default; DESIGN \"Precise BN\"); "
                         "with --resume, applies to a finished run too")
    flags.DEFINE_integer("threads", 0, "TensorFlow's intra- and inter-op threads (0: TensorFlow's default, "
                         "every core). 1 each lets two trainings share 2 cores with more pairs in all than one on "
                         "both (docs/RESULTS.md has the measurement)")
    flags.DEFINE_integer("cpu_devices", 0, "split the CPU into this many logical devices (to run "
                         "--strategy=mirrored without GPUs, e.g. in tests); 0: leave as is")


def options_from_flags() -> TrainOptions:
    return TrainOptions(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainOptions)})


def split_cpu(n: int) -> None:
    """Expose n logical CPU devices (must run before TensorFlow initialises its devices)."""
    import tensorflow as tf  # lazy: see the imports
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def set_threads(n: int) -> None:
    """TensorFlow's intra- and inter-op pools (XLA's CPU code included) at n threads each (must run
    before TensorFlow initialises its runtime)."""
    import tensorflow as tf  # lazy: see the imports
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    logging.info("TensorFlow threads: %d intra-op, %d inter-op", tf.config.threading.get_intra_op_parallelism_threads(),
                 tf.config.threading.get_inter_op_parallelism_threads())


class RunFinished(Exception):
    """A fresh start was asked on a workdir whose run is finished: nothing to train (main says so)."""


def next_steps(workdir: str, report: str | None) -> list[str]:
    """Where to look once a run is trained: its report, the Figure 4 panels, its ranked test queries."""
    return [f"the report: {report}" if report else
            f"the report: python -m reid_tf.evaluate --workdir={workdir} writes it",
            f"similarity maps (Figure 4): tensorboard --logdir {run_folder.tensorboard_dir(workdir)} (or make "
            "tensorboard), tab Images",
            f"ranked test queries: python -m reid_tf.evaluate --workdir={workdir} --visrank=10 writes "
            f"{os.path.join(run_folder.visrank_dir(workdir), 'index.html')}"]


def main(argv):
    del argv
    opts = options_from_flags()
    opts.check()  # before TensorFlow loads (split_cpu loads it): a bad value fails at once
    if FLAGS.threads < 0:
        raise UsageError(f"--threads={FLAGS.threads}: must be >= 0 (0: TensorFlow's default)")
    # The lock and what the workdir holds are checked before TensorFlow loads: a busy workdir or a
    # refused --resume fail at once, not after seconds of start-up.
    try:
        with lock_workdir(opts.workdir):
            prepared = _prepare(opts)
            from reid_tf.callbacks import NonFiniteLossError  # lazy: see the imports
            if FLAGS.threads:
                set_threads(FLAGS.threads)
            if FLAGS.cpu_devices:
                split_cpu(FLAGS.cpu_devices)
            try:
                summary = _run_prepared(*prepared)
            except NonFiniteLossError as e:
                raise UsageError(str(e)) from None  # one line: lower the learning rate or check the data
    except RunFinished:
        done = finished_run(opts.workdir)
        rank1 = f"test rank-1 {done['rank1']:.1f} %" if done["rank1"] is not None else "not evaluated"
        budget = f" of {done['total']}: stopped by its time budget, --resume continues it" \
            if done["step"] < done["total"] else ""
        logging.info("%s holds a finished run (step %d%s; %s) — %s; its pictures: make tensorboard; another "
                     "run: make demo WORKDIR=runs/demo2 (or --workdir=NEW)", opts.workdir, done["step"], budget,
                     rank1, next_steps(opts.workdir, done["report"])[0])
        return
    test = summary.get("test")
    logging.info("done: %s / %s trial %d, step %d in %.1f min%s", summary["dataset"], summary["model"],
                 summary["trial"], summary["step"], summary["train_minutes"],
                 f"; test rank-1 {test['summary']['eq7']['rank']['1']['mean']:.1f} %" if test else "")
    report = eval_prefix(opts.workdir, test["protocol"]) + ".md" if test else None
    for i, line in enumerate(next_steps(opts.workdir, report)):
        logging.info("%s %s", "next:" if i == 0 else "     ", line)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
