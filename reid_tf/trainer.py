"""Training with `model.fit`: the objective of §3.1 (Eq. 6) and the recipe of §4.2.

Pieces, and why each is not a stock Keras one:
- `PairTrainer` wraps the network and overrides `compute_loss` (the Keras 3 hook for losses that
  need several outputs): L_cls (Eq. 3) + L_ctr (Eq. 4, not for "cls") + θ penalty (§4.2) + weight
  decay (§4.2, the layers' L2 regularisers), with one Mean tracker per term for logs/TensorBoard.
- `StepCheckpoint`: keras.callbacks.BackupAndRestore restores only the epoch counter, restarts the
  epoch's data from its beginning and writes its files in place. An exact resume needs the global
  step, the optimizer state and the data position, written atomically; tf.train.CheckpointManager
  does the atomic part (the state file is replaced only after the checkpoint is complete), and the
  pair pipeline is a pure function of (seed, step), so restoring the step restores the data.
  It also refuses to save non-finite weights and stops the run on a NaN/Inf loss.
- `restore` continues from the newest checkpoint that restores, moving damaged newer ones to
  checkpoints/damaged/ (kept); `remove_partial_checkpoints` deletes the `ckpt-N_temp/` staging
  folders of killed saves; `restore_network` is the read-only form for evaluation.
- `StopOnSignal`: SIGINT/SIGTERM set a flag read at the end of a step, so training stops on a step
  boundary, StepCheckpoint saves there, and the CLI exits with one line (reid_tf.cli.Interrupted).
- A Keras "epoch" here is one checkpoint interval (`checkpoint_every` steps) so that fit's
  initial_epoch can express a resume point; the paper's epochs are converted to steps
  (reid_tf.pairs.steps_per_epoch).
- `ProgressLogger`: periodic absl log lines with step, pairs/s, loss terms and ETA (the Keras
  progress bar writes carriage returns into log files and has no pairs/s).
"""
from __future__ import annotations

import glob
import math
import os
import shutil
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from reid_tf import config, fileio, losses
from reid_tf import model as model_lib


class NonFiniteLossError(RuntimeError):
    """Raised when the loss or the weights become NaN/Inf; the last good checkpoint is kept."""


@keras.saving.register_keras_serializable(package="reid_tf")
class PairTrainer(keras.Model):
    """The network plus the paper's objective. Call arguments and outputs are the network's."""

    TERMS = ("l_cls", "l_ctr", "l_theta", "l_decay")

    def __init__(self, network: keras.Model, contrastive: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.network, self.contrastive = network, bool(contrastive)
        # the parts that shared-image inputs run separately (found once, not per call)
        self.levels = model_lib.structure(network).levels
        self.encoder, self.head = model_lib.encoder_of(network), model_lib.pair_head_of(network)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (*self.TERMS, "loss")}
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="pair_accuracy")

    def call(self, inputs, training=False):
        """Per-pair inputs {"image_a", "image_b"} run the Siamese network; shared-image inputs
        {"images", "index_a", "index_b"} (reid_tf.pairs.make_shared_dataset) encode every image
        once and run the pair head on (images[index_a[i]], images[index_b[i]]): the same outputs."""
        if "images" not in inputs:
            return self.network(inputs, training=training)
        levels = self.levels
        features = self.encoder(inputs["images"], training=training)
        fa = {k: tf.gather(v, inputs["index_a"]) for k, v in features.items()}  # (N, …) -> (M, …)
        fb = {k: tf.gather(v, inputs["index_b"]) for k, v in features.items()}
        head = self.head(model_lib.head_inputs(fa, fb, levels), training=training)
        return model_lib.pair_outputs(fa, fb, head, levels)

    def loss_terms(self, y, y_pred) -> dict:
        """Every term of the objective, as scalars."""
        thetas = [v for k, v in y_pred.items() if k.startswith("theta_")]
        decay = self.network.losses
        return {
            "l_cls": losses.softmax_loss(y, y_pred["logits"]),
            "l_ctr": losses.contrastive_loss(y, y_pred["distance"]) if self.contrastive else 0.0,
            "l_theta": losses.theta_penalty(thetas) if thetas else 0.0,
            "l_decay": keras.ops.sum(keras.ops.stack(decay)) if decay else 0.0,
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(y, y_pred)
        total = terms["l_cls"] + terms["l_ctr"] + terms["l_theta"] + terms["l_decay"]
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        self.trackers["loss"].update_state(total)
        self.accuracy.update_state(y, y_pred["logits"])
        # Under tf.distribute each replica sees 1/n of the batch and the gradients are summed, so
        # the per-replica mean is divided by n (Keras does this only for its own compiled losses).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return total / replicas if replicas > 1 else total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self.get_metrics_result()

    @property
    def metrics(self):
        return [*self.trackers.values(), self.accuracy]


class StepCheckpoint(keras.callbacks.Callback):
    """Atomic checkpoints every `every` steps (and at the end); NaN/Inf guard. See module docstring."""

    def __init__(self, manager: tf.train.CheckpointManager, every: int, total_steps: int, keep_every: int = 0):
        super().__init__()
        self.manager, self.every, self.total_steps = manager, int(every), int(total_steps)
        self.stopped_early = False
        # Checkpoints at multiples of keep_every also go to checkpoints/kept/, never deleted: the
        # points of an accuracy curve (experiments.curve), which the rolling MAX_TO_KEEP would drop.
        self.keep_every = int(keep_every)
        self.kept = tf.train.CheckpointManager(manager.checkpoint, os.path.join(manager.directory, KEPT_DIR),
                                               max_to_keep=None) if keep_every else None

    @property
    def step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _weights_finite(self) -> bool:
        return all(np.all(np.isfinite(v.numpy())) for v in self.model.trainable_variables)

    def save(self, reason: str, manager: tf.train.CheckpointManager | None = None):
        if not self._weights_finite():
            raise NonFiniteLossError(
                f"weights became NaN/Inf at step {self.step}; not saving. The last good checkpoint "
                f"is {self.manager.latest_checkpoint}")
        path = (manager or self.manager).save(checkpoint_number=self.step)
        logging.info("checkpoint %s (%s)", path, reason)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"loss is {float(loss)} at step {self.step}: training stopped. The last good "
                f"checkpoint {self.manager.latest_checkpoint} is kept; lower --learning_rate or "
                "check the data, then --resume.")
        if self.kept is not None and self.step % self.keep_every == 0:
            self.save(f"kept: a multiple of {self.keep_every} steps", self.kept)
        if self.step >= self.total_steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.save(f"interval {epoch + 1}" if self.step % self.every == 0 else "training stopped")

    def on_train_end(self, logs=None):
        latest = self.manager.latest_checkpoint
        if latest is None or checkpoint_step(latest) != self.step:
            self.save("end of training")


class TimeBudget(keras.callbacks.Callback):
    """Stop cleanly (at a step boundary, then checkpoint) once `minutes` of training have passed."""

    def __init__(self, minutes: float | None):
        super().__init__()
        self.minutes, self.start, self.exhausted = minutes, None, False

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self.minutes and time.monotonic() - self.start > 60 * self.minutes:
            self.exhausted = self.model.stop_training = True


class ProgressLogger(keras.callbacks.Callback):
    """Every `every_seconds`: step/total, pairs/s, the loss terms and the ETA, via absl logging."""

    def __init__(self, total_steps: int, batch_size: int, every_seconds: float = 30.0):
        super().__init__()
        self.total, self.batch, self.every = total_steps, batch_size, every_seconds

    def on_train_begin(self, logs=None):
        self.t0 = self.last = time.monotonic()
        self.step0 = self.last_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        step = int(self.model.optimizer.iterations.numpy())
        if now - self.last < self.every and step < self.total:
            return
        rate = (step - self.last_step) * self.batch / max(now - self.last, 1e-9)
        overall = (step - self.step0) / max(now - self.t0, 1e-9)
        eta = (self.total - step) / overall if overall > 0 else float("inf")
        terms = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
        logging.info("step %d/%d  %.1f pairs/s  %s  ETA %s", step, self.total, rate, terms, _hms(eta))
        self.last, self.last_step = now, step


def _hms(seconds: float) -> str:
    """H:MM:SS with unbounded hours ('?' when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def make_optimizer(learning_rate: float = config.LEARNING_RATE) -> keras.optimizers.Optimizer:
    """Adam, lr 5e-4 (§4.2); weight decay is the layers' L2 regulariser (coupled, as TF1 did)."""
    return keras.optimizers.Adam(learning_rate)


MAX_TO_KEEP = 3  # checkpoints kept on disk: the newest can be damaged, an older one still restores
DAMAGED_DIR = "damaged"  # damaged checkpoints are moved here, never deleted
KEPT_DIR = "kept"  # StepCheckpoint's keep_every checkpoints, never deleted


def checkpoint_manager(trainer: keras.Model, directory: str) -> tf.train.CheckpointManager:
    checkpoint = tf.train.Checkpoint(model=trainer.network, optimizer=trainer.optimizer)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=MAX_TO_KEEP)


def checkpoint_step(path: str) -> int:
    """The global step of a checkpoint: StepCheckpoint numbers them by step (".../ckpt-150")."""
    return int(path.rsplit("-", 1)[1])


def remove_partial_checkpoints(directory: str) -> list[str]:
    """Delete the `ckpt-N_temp/` folders a killed checkpoint write leaves behind; returns them.

    TensorFlow writes a checkpoint's shards into `<prefix>_temp/` and only then publishes it, so
    these folders are never part of a checkpoint. Call it only while holding the workdir's lock.
    """
    removed = []
    if os.path.isdir(directory):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith("_temp") and os.path.isdir(path):
                shutil.rmtree(path)
                removed.append(path)
                logging.info("removed %s, left by an interrupted checkpoint write", path)
    return removed


def newest_restorable(restore_one, paths: list[str]) -> tuple[str | None, list[tuple[str, str]]]:
    """Try restore_one(path) from the newest path to the oldest; stop at the first that works.

    Returns (the path that restored or None, [(newer path that failed, its error)]). When none
    restores, nothing is said to be damaged: that is a mismatch (e.g. another model), not damage.
    """
    failed = []
    for path in reversed(paths):
        try:
            restore_one(path)
            return path, failed
        except Exception as e:  # noqa: BLE001  (DataLossError, IndexError, NotFoundError, ...)
            failed.append((path, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
    return None, failed


def _set_aside(directory: str, path: str) -> str:
    """Move the files of checkpoint `path` into directory/damaged/<name>[.k]/; returns that folder."""
    name = os.path.basename(path)
    target = os.path.join(directory, DAMAGED_DIR, name)
    k = 1
    while os.path.exists(target):
        target, k = os.path.join(directory, DAMAGED_DIR, f"{name}.{k}"), k + 1
    os.makedirs(target)
    for f in glob.glob(glob.escape(path) + ".*"):
        shutil.move(f, target)
    return target


def _forget(directory: str, paths: list[str]) -> None:
    """Drop `paths` from the directory's checkpoint state file (the text-format CheckpointState
    proto that CheckpointManager reads), keeping the other entries and their timestamps."""
    state = tf.train.get_checkpoint_state(directory)
    stamps = list(state.all_model_checkpoint_timestamps) or [time.time()] * len(
        state.all_model_checkpoint_paths)
    gone = {os.path.basename(p) for p in paths}
    entries = [(os.path.basename(p), t) for p, t in zip(state.all_model_checkpoint_paths, stamps)
               if os.path.basename(p) not in gone]
    lines = [f'model_checkpoint_path: "{entries[-1][0]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name, _ in entries]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for _, t in entries]
    fileio.write_text(os.path.join(directory, "checkpoint"), "\n".join(lines) + "\n")


def restore(trainer: keras.Model, manager: tf.train.CheckpointManager
            ) -> tuple[int, tf.train.CheckpointManager]:
    """Restore the newest checkpoint that restores into `trainer` (model, optimizer).

    A newer checkpoint that fails to restore (damaged: truncated, checksum mismatch, missing shard)
    is moved to checkpoints/damaged/ and the run continues from the newest older one that works,
    saying so. Returns (global step, the manager to save with from now on: a fresh one when the
    checkpoint list changed). No checkpoint: (0, manager). None restores: ValueError.
    """
    if manager.latest_checkpoint is None:
        return 0, manager
    if not trainer.optimizer.built:
        trainer.optimizer.build(trainer.trainable_variables)
    restored, failed = newest_restorable(
        lambda p: manager.checkpoint.restore(p).assert_existing_objects_matched(), manager.checkpoints)
    if restored is None:
        raise ValueError(f"no checkpoint in {manager.directory} restores into this model; the newest, "
                         f"{failed[0][0]}, fails with {failed[0][1]}")
    if failed:
        for path, error in failed:
            logging.warning("checkpoint %s is damaged (%s); moved to %s", path, error,
                            _set_aside(manager.directory, path))
        _forget(manager.directory, [p for p, _ in failed])
        manager = tf.train.CheckpointManager(manager.checkpoint, manager.directory,
                                             max_to_keep=MAX_TO_KEEP)
    step = int(trainer.optimizer.iterations.numpy())
    logging.info("resumed from %s at step %d%s", restored, step,
                 f" (the newest good checkpoint; {len(failed)} damaged one(s) set aside)" if failed else "")
    return step, manager


def restore_network(network: keras.Model, directory: str) -> tuple[str, int]:
    """Load the network's weights from the newest checkpoint in `directory` that restores (read
    only: a damaged one is skipped with a warning, not moved). Returns (path, step)."""
    state = tf.train.get_checkpoint_state(directory)
    paths = list(state.all_model_checkpoint_paths) if state else []
    if not paths:
        raise FileNotFoundError(f"{directory} holds no checkpoint")
    checkpoint = tf.train.Checkpoint(model=network)
    restored, failed = newest_restorable(
        lambda p: checkpoint.restore(p).expect_partial().assert_existing_objects_matched(), paths)
    for path, error in failed:
        logging.warning("checkpoint %s is damaged (%s); skipped", path, error)
    if restored is None:
        raise ValueError(f"no checkpoint in {directory} restores into this model ({failed[0][1]})")
    return restored, checkpoint_step(restored)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints")


class StopOnSignal(keras.callbacks.Callback):
    """SIGINT (Ctrl-C) or SIGTERM: finish the current step, then stop training, so that StepCheckpoint
    writes a checkpoint at this step and --resume continues from it. A second signal acts at once.

    Use as a context manager around fit (it installs the handlers, in the main thread only);
    `signum` is the signal received, or None.
    """

    def __init__(self):
        super().__init__()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self._restore_handlers()  # a second Ctrl-C / SIGTERM is not deferred
        logging.warning("%s received: stopping after the current step and writing a checkpoint "
                        "(send it again to stop at once, without one)", signal.Signals(signum).name)

    def on_train_batch_end(self, batch, logs=None):
        if self.signum is not None:
            self.model.stop_training = True


# Test-only: tests/test_train.py sets this to crash a run at a known step (deterministic, where a test
# polling for a checkpoint and then killing the process would race against a fast machine).
KILL_AT_STEP_ENV = "REID_TF_TEST_KILL_AT_STEP"


class KillAtStep(keras.callbacks.Callback):
    """SIGKILL this process once the global step reaches `step`: a hard crash, no clean-up, no save."""

    def __init__(self, step: int):
        super().__init__()
        self.step = int(step)

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def testing_callbacks() -> list[keras.callbacks.Callback]:
    """The callbacks a test asked for through the environment (none in normal use)."""
    step = os.environ.get(KILL_AT_STEP_ENV)
    return [KillAtStep(int(step))] if step else []
