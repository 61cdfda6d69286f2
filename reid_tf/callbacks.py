"""The Keras callbacks of a training run (reid_tf.train puts them together; reid_tf.pair_trainer holds
the training step and its objective, reid_tf.checkpoints what they save with).

Why each is not a stock Keras one:
- `StepCheckpoint`: keras.callbacks.BackupAndRestore restores only the epoch counter, restarts the
  epoch's data from its beginning and writes its files in place. An exact resume needs the global
  step, the optimizer state and the data position, written atomically; tf.train.CheckpointManager
  does the atomic part (the state file is replaced only after the checkpoint is complete), and the
  pair pipeline is a pure function of (seed, step), so restoring the step restores the data.
  It also refuses to save non-finite weights and stops the run on a NaN/Inf loss
  (`NonFiniteLossError`).
- `TimeBudget`: --max_minutes, stopping at a step boundary so that StepCheckpoint saves there.
- `StopOnSignal`: SIGINT/SIGTERM set a flag read at the end of a step, so training stops on a step
  boundary, StepCheckpoint saves there, and the CLI exits with one line (reid_tf.cli.Interrupted).
- `ProgressLogger`: periodic absl log lines with step, pairs/s, loss terms and an ETA measured on
  steady-state steps (the Keras progress bar writes carriage returns into log files, has no pairs/s,
  and its ETA counts tracing and compilation).
- `Validation`: CMC on held-out identities, TensorBoard scalars and Figure 4 panels. VIPeR and
  CUHK01 have no validation split in the paper (§4.1). For them the curve is computed on the
  trial's test identities and logged as "test_monitor": it is for watching learning (and for the
  validation-against-time curve), never for choosing a checkpoint — the final model is
  the last step, whatever this curve says.

A Keras "epoch" here is one checkpoint interval (`checkpoint_every` steps) so that fit's
initial_epoch can express a resume point; the paper's epochs are converted to steps
(reid_tf.pairs.steps_per_epoch).
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from reid_tf import config, datasets, fileio, metrics, protocols
from reid_tf.checkpoints import checkpoint_step
from reid_tf.progress import hms
from reid_tf.run_folder import KEPT_DIR, history_file, read_history, tensorboard_dir
from reid_tf.scoring import ScoringEngine
from reid_tf.visualize import write_figure4_summary


class NonFiniteLossError(RuntimeError):
    """Raised when the loss or the weights become NaN/Inf; the last good checkpoint is kept."""


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
        # An "epoch" of fit is a checkpoint interval; after a resume from a step that is not a multiple
        # of `every`, intervals end off the multiples, so whether training stops decides the label.
        self.save("training stopped" if self.model.stop_training else f"interval {epoch + 1}")

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


class ProgressLogger(keras.callbacks.Callback):
    """Every `every_seconds`: step/total, pairs/s, the loss terms and the ETA, via absl logging.

    The ETA is measured on steady-state steps only: from the end of the first checkpoint interval
    (StepCheckpoint, listed before this callback, has saved by then) to now. The steps before
    include tracing the training step, XLA compilation and tracing the saver, and made the first
    ETA of a run several times too long. Later checkpoints and validations recur, so the measured
    mean includes their share. Until `min_steps` steady steps are measured the line says
    "ETA measuring…".
    """

    def __init__(self, total_steps: int, batch_size: int, every_seconds: float = 30.0, min_steps: int = 5):
        super().__init__()
        self.total, self.batch, self.every, self.min_steps = total_steps, batch_size, every_seconds, min_steps

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self.last = time.monotonic()
        self.last_step = self._step()
        self.steady: tuple[float, int] | None = None  # (time, step) where steady state began

    def on_epoch_end(self, epoch, logs=None):
        if self.steady is None:
            self.steady = (time.monotonic(), self._step())

    def eta(self, now: float, step: int) -> str:
        """H:MM:SS of the remaining steps at the steady-state rate, or "measuring…"."""
        if self.steady is None or step - self.steady[1] < min(self.min_steps, self.total - self.steady[1]):
            return "measuring…"
        per_step = (now - self.steady[0]) / max(step - self.steady[1], 1)
        return hms((self.total - step) * per_step)

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        step = self._step()
        if now - self.last < self.every and step < self.total:
            return
        rate = (step - self.last_step) * self.batch / max(now - self.last, 1e-9)
        terms = " ".join(f"{k}={float(v):.4f}" for k, v in (logs or {}).items())
        logging.info("step %d/%d  %.1f pairs/s  %s  ETA %s", step, self.total, rate, terms, self.eta(now, step))
        self.last, self.last_step = now, step


class Validation(keras.callbacks.Callback):
    """Every `every` steps (0: only at the end): rank-1/5/10 + mAP by Eq. 7 on `identities`, under
    the single-shot protocol (reid_tf.protocols.single_shot, the trial's draw)."""

    def __init__(self, dataset: datasets.Dataset, identities: list[int], tag: str, opts,
                 every: int, network: keras.Model):
        super().__init__()
        self.dataset, self.identities, self.tag, self.every = dataset, identities, tag, every
        self.network, self.figures, self.workdir = network, opts.figures, opts.workdir
        self.trial, self.seed = opts.trial, opts.seed
        self.history_path = history_file(opts.workdir)
        self.writer = tf.summary.create_file_writer(tensorboard_dir(opts.workdir, tag))
        self._images = None
        self.skip_final: Callable[[], bool] = lambda: False  # e.g. on Ctrl-C: exit promptly

    def on_train_begin(self, logs=None):
        self.t0 = time.monotonic()
        # A resumed run keeps the earlier points; a damaged file must not stop a run over its curve.
        self.history = read_history(self.workdir, required=("step", "train_seconds"),
                                    if_damaged="the curve starts again at this step (train_seconds from 0) "
                                               "and the file is replaced at the next validation")
        self.elapsed0 = self.history[-1]["train_seconds"] if self.history else 0.0

    def _load(self):
        if self._images is None:  # the single-shot draw of the test protocol, read once
            self._images = protocols.single_shot_images(self.dataset, self.identities, self.trial, self.seed)
        return self._images

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.every and step % self.every == 0:
            self.validate(step)

    def on_train_end(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.skip_final():
            return
        if not self.history or self.history[-1]["step"] != step:
            self.validate(step)

    def validate(self, step: int) -> dict:
        t = time.monotonic()
        q, g, q_ids, g_ids = self._load()
        scores = ScoringEngine(self.network).score_matrix(q, g)["score"]
        ranks = metrics.rank_k(metrics.cmc(scores, q_ids, g_ids), config.RANKS)
        m_ap = metrics.mean_average_precision(scores, q_ids, g_ids)
        train_seconds = self.elapsed0 + (t - self.t0)
        point = {"step": step, "train_seconds": train_seconds, "map": 100 * m_ap,
                 **{f"rank{k}": 100 * v for k, v in ranks.items()}}
        self.history.append(point)
        fileio.write_json(self.history_path, self.history)
        with self.writer.as_default(step=step):
            for k, v in ranks.items():
                tf.summary.scalar(f"cmc/rank{k}", 100 * v)
            tf.summary.scalar("cmc/mAP", 100 * m_ap)
            if self.figures:
                other = 1 if len(g) > 1 else 0
                write_figure4_summary(None, self.network, q[0], g[0], g[other], step)
        self.writer.flush()
        logging.info("%s CMC at step %d (%d identities, chance %.1f%%): rank-1 %.1f%%  rank-5 %.1f%%  "
                     "rank-10 %.1f%%  mAP %.1f%%  [%.0f s]", self.tag, step, len(q_ids), 100 / len(q_ids),
                     point["rank1"], point["rank5"], point["rank10"], point["map"], time.monotonic() - t)
        return point

