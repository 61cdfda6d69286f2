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
- A Keras "epoch" here is one checkpoint interval (`checkpoint_every` steps) so that fit's
  initial_epoch can express a resume point; the paper's epochs are converted to steps
  (reid_tf.pairs.steps_per_epoch).
- `ProgressLogger`: periodic absl log lines with step, pairs/s, loss terms and ETA (the Keras
  progress bar writes carriage returns into log files and has no pairs/s).
"""
from __future__ import annotations

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from reid_tf import config, losses
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
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (*self.TERMS, "loss")}
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="pair_accuracy")

    def call(self, inputs, training=False):
        """Per-pair inputs {"image_a", "image_b"} run the Siamese network; shared-image inputs
        {"images", "index_a", "index_b"} (reid_tf.pairs.make_shared_dataset) encode every image
        once and run the pair head on (images[index_a[i]], images[index_b[i]]): the same outputs."""
        if "images" not in inputs:
            return self.network(inputs, training=training)
        levels = model_lib.structure(self.network).levels
        features = model_lib.encoder_of(self.network)(inputs["images"], training=training)
        fa = {k: tf.gather(v, inputs["index_a"]) for k, v in features.items()}  # (N, …) -> (M, …)
        fb = {k: tf.gather(v, inputs["index_b"]) for k, v in features.items()}
        head = model_lib.pair_head_of(self.network)(model_lib.head_inputs(fa, fb, levels), training=training)
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

    def __init__(self, manager: tf.train.CheckpointManager, every: int, total_steps: int):
        super().__init__()
        self.manager, self.every, self.total_steps = manager, int(every), int(total_steps)
        self.stopped_early = False

    @property
    def step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def _weights_finite(self) -> bool:
        return all(np.all(np.isfinite(v.numpy())) for v in self.model.trainable_variables)

    def save(self, reason: str):
        if not self._weights_finite():
            raise NonFiniteLossError(
                f"weights became NaN/Inf at step {self.step}; not saving. The last good checkpoint "
                f"is {self.manager.latest_checkpoint}")
        path = self.manager.save(checkpoint_number=self.step)
        logging.info("checkpoint %s (%s)", path, reason)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise NonFiniteLossError(
                f"loss is {float(loss)} at step {self.step}: training stopped. The last good "
                f"checkpoint {self.manager.latest_checkpoint} is kept; lower --learning_rate or "
                "check the data, then --resume.")
        if self.step >= self.total_steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.save(f"interval {epoch + 1}")

    def on_train_end(self, logs=None):
        if self.manager.latest_checkpoint != self.manager._checkpoint_prefix + f"-{self.step}":
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


def checkpoint_manager(trainer: keras.Model, directory: str) -> tf.train.CheckpointManager:
    checkpoint = tf.train.Checkpoint(model=trainer.network, optimizer=trainer.optimizer)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=3)


def restore(trainer: keras.Model, manager: tf.train.CheckpointManager) -> int:
    """Restore the latest checkpoint into `trainer` (model, optimizer); return its global step."""
    if manager.latest_checkpoint is None:
        return 0
    if not trainer.optimizer.built:
        trainer.optimizer.build(trainer.trainable_variables)
    manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    step = int(trainer.optimizer.iterations.numpy())
    logging.info("resumed from %s at step %d", manager.latest_checkpoint, step)
    return step


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints")
