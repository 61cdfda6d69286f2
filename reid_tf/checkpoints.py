"""A run's checkpoints (workdir/checkpoints/): written with TensorFlow's CheckpointManager, restored
from the newest one that restores, and kept readable through crashes.

- `checkpoint_manager`: what reid_tf.callbacks.StepCheckpoint saves with (the network and the
  optimizer: weights, BN statistics, Adam's moments and step; the data position follows from the step).
- `restore` continues a run from the newest checkpoint that restores, moving damaged newer ones to
  checkpoints/damaged/ (kept; `set_aside`); `restore_network` is the read-only form for evaluation,
  and `run_network` gives a run's network: its model.keras, or the newest good checkpoint of a run
  stopped before writing it.
- `rebuild_state` writes a missing or unreadable `checkpoint` state file anew from the ckpt-N files
  present (TensorFlow would see no checkpoint, and a resumed run would start afresh over them);
  `remove_partial_checkpoints` deletes the `ckpt-N_temp/` staging folders of killed saves.

Where the files are (and finding them without TensorFlow) is reid_tf.run_folder's.
"""
from __future__ import annotations

import glob
import os
import shutil
import time

import keras
import tensorflow as tf
from absl import logging

from reid_tf import config, fileio, run_folder
from reid_tf.model import build_model
from reid_tf.run_folder import KEPT_DIR

MAX_TO_KEEP = 3  # checkpoints kept on disk: the newest can be damaged, an older one still restores
DAMAGED_DIR = "damaged"  # damaged checkpoints are moved here, never deleted


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
    path = run_folder.checkpoint_state_file(directory)
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
    return [os.path.join(directory, f"ckpt-{s}") for s in run_folder.checkpoint_steps(directory)]


def rebuild_state(directory: str) -> list[str]:
    """Write the state file anew from the ckpt-N files in `directory` when it is missing, empty or
    unreadable while checkpoints are there; returns the names it lists ([] when nothing was done).
    Without it TensorFlow sees no checkpoint at all, and a resumed run would start from step 0 over
    the files of the run it was asked to continue. Call it only while holding the workdir's lock."""
    steps = run_folder.checkpoint_steps(directory)
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
    restored, failed = newest_restorable(lambda p: restore_weights(network, p), paths)
    for path, error in failed:
        logging.warning("checkpoint %s is damaged (%s); skipped", path, error)
    if restored is None:
        raise ValueError(f"no checkpoint in {directory} restores into this model ({failed[0][1]})")
    return restored, checkpoint_step(restored)


def restore_weights(network: keras.Model, path: str) -> None:
    """Load the network's weights (not the optimizer's) from checkpoint `path`; raises what
    TensorFlow raises when they do not restore (a damaged file, another preset's checkpoint)."""
    tf.train.Checkpoint(model=network).restore(path).expect_partial().assert_existing_objects_matched()


def run_network(workdir: str, preset: str) -> tuple[keras.Model, str, int | None]:
    """The network of a training run: its final model.keras (run_folder.load_network), or, for a run
    that was stopped before writing it, its newest checkpoint that restores into the run's `preset`.
    Returns (network, source, step: None for model.keras)."""
    path = run_folder.model_file(workdir)
    if os.path.exists(path):
        return run_folder.load_network(path), path, None
    directory = run_folder.checkpoint_dir(workdir)
    if not os.path.isfile(run_folder.checkpoint_state_file(directory)):
        raise FileNotFoundError(f"{path} not found and {directory} holds no checkpoint: the run in "
                                f"{workdir} has not saved a network yet")
    network = build_model(config.get_model_config(preset))
    checkpoint, step = restore_network(network, directory)
    logging.info("%s has no model.keras (the run was stopped before the end): evaluating its newest "
                 "good checkpoint, %s, at step %d", workdir, checkpoint, step)
    return network, checkpoint, step
