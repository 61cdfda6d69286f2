"""Training with `model.fit`: the objective of §3.1 (Eq. 6) and the recipe of §4.2.

- `PairTrainer` wraps the network and overrides `compute_loss` (the Keras 3 hook for losses that
  need several outputs) with the objective of reid_tf.losses (`objective_terms`, `total_objective`:
  L_cls (Eq. 3) + L_ctr (Eq. 4, not for "cls") + θ penalty (§4.2) + weight decay (§4.2, the layers'
  L2 regularisers)), with one Mean tracker per term for logs/TensorBoard.
- `make_optimizer`: Adam, as §4.2.
- Checkpoints: `checkpoint_manager` (what reid_tf.callbacks.StepCheckpoint saves with); `restore`
  continues from the newest checkpoint that restores, moving damaged newer ones to
  checkpoints/damaged/ (kept; `set_aside`); `rebuild_state` writes a missing or unreadable
  `checkpoint` state file anew from the ckpt-N files present (TensorFlow would see no checkpoint,
  and a resumed run would start afresh over them); `remove_partial_checkpoints` deletes the
  `ckpt-N_temp/` staging folders of killed saves; `restore_network` is the read-only form for
  evaluation.

The callbacks of a run (checkpoints every N steps, the time budget, Ctrl-C, progress lines,
validation) are in reid_tf.callbacks; reid_tf.train is the command that puts them together.
"""
from __future__ import annotations

import glob
import os
import shutil
import time

import keras
import tensorflow as tf
from absl import logging

from reid_tf import config, fileio, losses
from reid_tf import model as model_lib
from reid_tf import workdir as workdir_lib


@keras.saving.register_keras_serializable(package="reid_tf")
class PairTrainer(keras.Model):
    """The network plus the paper's objective. Call arguments and outputs are the network's."""

    TERMS = losses.OBJECTIVE_TERMS

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
        """Every term of the objective, as scalars (reid_tf.losses.objective_terms)."""
        return losses.objective_terms(y, y_pred, self.network.losses, self.contrastive)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(y, y_pred)
        total = losses.total_objective(terms)  # Eq. 6 with the regularisers
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


def make_optimizer(learning_rate: float = config.LEARNING_RATE) -> keras.optimizers.Optimizer:
    """Adam, lr 5e-4 (§4.2); weight decay is the layers' L2 regulariser (coupled, as TF1 did)."""
    return keras.optimizers.Adam(learning_rate)


MAX_TO_KEEP = 3  # checkpoints kept on disk: the newest can be damaged, an older one still restores
DAMAGED_DIR = "damaged"  # damaged checkpoints are moved here, never deleted
KEPT_DIR = workdir_lib.KEPT_DIR  # StepCheckpoint's keep_every checkpoints, never deleted


def checkpoint_manager(trainer: keras.Model, directory: str) -> tf.train.CheckpointManager:
    checkpoint = tf.train.Checkpoint(model=trainer.network, optimizer=trainer.optimizer)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=MAX_TO_KEEP)


def checkpoint_step(path: str) -> int:
    """The global step of a checkpoint: StepCheckpoint numbers them by step (".../ckpt-150")."""
    return int(path.rsplit("-", 1)[1])


def remove_partial_checkpoints(directory: str) -> list[str]:
    """Delete the `ckpt-N_temp/` folders a killed checkpoint write leaves behind; returns them.

    TensorFlow writes a checkpoint's shards into `<prefix>_temp/` and only then publishes it, so
    these folders are never part of a checkpoint. `KEPT_DIR/` (StepCheckpoint's keep_every copies,
    written the same way) is cleaned too. Call it only while holding the workdir's lock.
    """
    removed = []
    for folder in (directory, os.path.join(directory, KEPT_DIR)):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
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


def set_aside(directory: str, path: str) -> str:
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


def set_aside_damaged(directory: str, path: str) -> str:
    """set_aside, for a reader that finds a damaged checkpoint (experiments.curve): also dropped from
    the directory's state file when that lists it. Returns the folder it went to."""
    target = set_aside(directory, path)
    state = _readable_state(directory)
    if state is not None and os.path.basename(path) in {os.path.basename(p) for p in state.all_model_checkpoint_paths}:
        _forget(directory, [path])
    return target


def _forget(directory: str, paths: list[str]) -> None:
    """Drop `paths` from the directory's checkpoint state file (the text-format CheckpointState
    proto that CheckpointManager reads), keeping the other entries and their timestamps."""
    state = tf.train.get_checkpoint_state(directory)
    stamps = list(state.all_model_checkpoint_timestamps) or [time.time()] * len(
        state.all_model_checkpoint_paths)
    gone = {os.path.basename(p) for p in paths}
    _write_state(directory, [(os.path.basename(p), t) for p, t in zip(state.all_model_checkpoint_paths, stamps)
                             if os.path.basename(p) not in gone])


def _write_state(directory: str, entries: list[tuple[str, float]]) -> None:
    """Write the state file listing (checkpoint name, timestamp) entries, oldest first; none: remove it."""
    path = os.path.join(directory, "checkpoint")
    if not entries:
        if os.path.exists(path):
            os.remove(path)
        return
    lines = [f'model_checkpoint_path: "{entries[-1][0]}"']
    lines += [f'all_model_checkpoint_paths: "{name}"' for name, _ in entries]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for _, t in entries]
    fileio.write_text(path, "\n".join(lines) + "\n")


def _readable_state(directory: str):
    """The directory's CheckpointState, or None when its state file is missing, empty or unreadable."""
    try:
        return tf.train.get_checkpoint_state(directory)
    except Exception:  # noqa: BLE001  (ValueError "Invalid checkpoint state", text_format.ParseError, ...)
        return None


def checkpoint_paths(directory: str) -> list[str]:
    """The checkpoints of `directory`, oldest first: as its state file lists them, or, when that is
    missing or unreadable, every ckpt-N found there (read only: nothing is rewritten)."""
    state = _readable_state(directory)
    if state is not None and state.all_model_checkpoint_paths:
        return list(state.all_model_checkpoint_paths)
    return [os.path.join(directory, f"ckpt-{s}") for s in workdir_lib.checkpoint_steps(directory)]


def rebuild_state(directory: str) -> list[str]:
    """Write the state file anew from the ckpt-N files in `directory` when it is missing, empty or
    unreadable while checkpoints are there; returns the names it lists ([] when nothing was done).
    Without it TensorFlow sees no checkpoint at all, and a resumed run would start from step 0 over
    the files of the run it was asked to continue. Call it only while holding the workdir's lock."""
    steps = workdir_lib.checkpoint_steps(directory)
    if not steps or _readable_state(directory) is not None:
        return []
    names = [f"ckpt-{s}" for s in steps]
    _write_state(directory, [(n, os.path.getmtime(os.path.join(directory, n + ".index"))) for n in names])
    logging.warning("%s had no readable checkpoint state file; rebuilt it from the checkpoints present: %s",
                    directory, ", ".join(names))
    return names


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
                            set_aside(manager.directory, path))
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
    paths = checkpoint_paths(directory)
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


checkpoint_dir = workdir_lib.checkpoint_dir
