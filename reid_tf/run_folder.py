"""A run's folder (--workdir): what each of its files is called, and the one reader and writer of
each. Every other module asks this one for a path; none spells a file name of a workdir.

    .lock          held while a training runs (`lock`): one training per workdir, one writer per file
    run.json       the run's resolved options and the signature of its data (reid_tf.run_options)
    checkpoints/   ckpt-N files and TensorFlow's `checkpoint` state file (reid_tf.checkpoints):
                   kept/ (--keep_every, never deleted), damaged/ (set aside by a resume, kept)
    tb/            TensorBoard: losses, learning rate, validation CMC, Figure 4 panels
    history.json   validation rank-k against step and time (`read_history`)
    model.keras    the final network, and model.json beside it: its step and its BN statistics
                   (`save_network`, `load_network`, `model_precise_bn`)
    eval*.json/md  test CMC of model.keras (`eval_prefix`; reid_tf.evaluate), shortlist.json/md;
                   removed when model.keras is replaced (`remove_results`)
    visrank/       ranked test queries (evaluate --visrank)

The lock: `lock(workdir)` takes an exclusive `fcntl.flock` on workdir/.lock for as long as the returned
object lives (reid_tf.train holds it for the whole run). The kernel releases a flock when its owner's
file descriptor closes, which includes any death of the process (SIGKILL, OOM killer), so a stale
lock is impossible; the pid written into the file is only for the message that names the owner,
and for `holder`, which asks (without locking) whether a training is still running there. A run
that fails in a workdir it has just created, before writing anything, removes it again (a folder
holding only .lock is no run). `lock_file(path, ...)` is the same lock for any other single-writer
file (experiments.curve's output).

What a workdir holds is read here without TensorFlow, which loads only when a network is saved or
loaded: a fresh start over another run's results (held_results), or on a finished run
(finished_run), is refused before TensorFlow starts.
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import zipfile
from typing import Callable

from absl import logging

from reid_tf import fileio
from reid_tf.cli import UsageError

LOCK_FILE = ".lock"
RUN = "run.json"
CHECKPOINTS = "checkpoints"
KEPT_DIR = "kept"  # StepCheckpoint's keep_every checkpoints (checkpoints/kept/), never deleted
CHECKPOINT_STATE = "checkpoint"  # TensorFlow's list of a folder's checkpoints (CheckpointManager's)
TENSORBOARD = "tb"
HISTORY = "history.json"  # Validation's points, one per validation, oldest first
MODEL = "model.keras"
MODEL_INFO = "model.json"
EVAL, SHORTLIST = "eval", "shortlist"
VISRANK = "visrank"
# What an evaluation writes about a workdir's model.keras (reid_tf.evaluate): stale once it is replaced.
RESULT_FILES = (f"{EVAL}*.json", f"{EVAL}*.md", f"{SHORTLIST}.json", f"{SHORTLIST}.md")
ZIP_MAGIC = b"PK\x03\x04"  # a .keras file is a zip archive


def run_file(workdir: str) -> str:
    return os.path.join(workdir, RUN)


def model_file(workdir: str) -> str:
    return os.path.join(workdir, MODEL)


def model_info_file(workdir: str) -> str:
    return os.path.join(workdir, MODEL_INFO)


def history_file(workdir: str) -> str:
    return os.path.join(workdir, HISTORY)


def tensorboard_dir(workdir: str, *sub: str) -> str:
    """workdir/tb, or a folder of it (tb/train, tb/val, tb/test)."""
    return os.path.join(workdir, TENSORBOARD, *sub)


def visrank_dir(workdir: str) -> str:
    return os.path.join(workdir, VISRANK)


def eval_prefix(workdir: str, protocol: str = "single_shot", trials: bool = False) -> str:
    """workdir/eval (the single-shot protocol) or workdir/eval_<protocol>: the .json/.md results of
    its model.keras; trials: eval_trials[_<protocol>], the mean over the trials of several runs."""
    name = EVAL + ("_trials" if trials else "") + ("" if protocol == "single_shot" else f"_{protocol}")
    return os.path.join(workdir, name)


def shortlist_prefix(workdir: str) -> str:
    """workdir/shortlist: the .json/.md of evaluate --shortlist's study."""
    return os.path.join(workdir, SHORTLIST)


class WorkdirBusyError(OSError):
    """Another process holds the workdir (or the locked file); the message names its pid."""


class FileLock:
    """Holds an exclusive flock on `path` until `release()` (or the process ends).

    busy: the message when another process holds it, given that process's pid (or "unknown").
    """

    def __init__(self, path: str, busy: Callable[[str], str]):
        self.path = path
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(self._fd)
            self.release()
            raise WorkdirBusyError(busy(str(owner or "unknown"))) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class WorkdirLock(FileLock):
    """Holds the lock of a workdir until `release()` (or the process ends). Used as a context
    manager, a workdir that `created` it and holds nothing but the lock when the block fails is
    removed: a usage error found after the lock (e.g. --resume of another run) leaves no trace."""

    def __init__(self, workdir: str, created: bool = False):
        self.workdir, self.created = workdir, created
        super().__init__(os.path.join(workdir, LOCK_FILE), lambda pid: (
            f"{workdir} is in use by another training (pid {pid}); wait for it to end, stop it, or "
            "choose another --workdir"))

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is not None and self.created and os.listdir(self.workdir) == [LOCK_FILE]:
                os.remove(self.path)  # still locked: no other training can be starting in it
                os.rmdir(self.workdir)
        except OSError:
            pass  # something appeared meanwhile: leave it
        finally:
            self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except ValueError:
        return None


def holder(workdir: str) -> int | None:
    """The pid of the live process that holds (or last held) the workdir's lock, else None.

    Read only: it never takes the lock, so it cannot make a training that starts at that moment
    fail as busy. A holder that died leaves its pid in the file; that pid is then not a live process
    (unless the system has given it to another process since: then it reads as held until that one
    ends).
    """
    try:
        fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return None
    try:
        pid = _read_pid(fd)
    finally:
        os.close(fd)
    return pid if pid is not None and pid > 0 and fileio.pid_alive(pid) else None


def lock(workdir: str) -> WorkdirLock:
    """Create `workdir` if needed and lock it; raises WorkdirBusyError naming the holder's pid, or
    OSError (e.g. PermissionError) when the workdir cannot be created or written."""
    try:
        created = not os.path.isdir(workdir)
        os.makedirs(workdir, exist_ok=True)
        return WorkdirLock(workdir, created)
    except WorkdirBusyError:
        raise
    except OSError as e:
        raise OSError(f"--workdir={workdir} cannot be created or written "
                      f"({e.strerror}: {e.filename})") from None


def lock_file(path: str, what: str) -> FileLock:
    """Lock `path` + ".lock" (a hidden file beside it) for one writer of `path`; WorkdirBusyError
    names the holder's pid and `what` (e.g. "--out=results/x_curve"), the thing to change."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return FileLock(os.path.join(folder, f".{name}.lock"), lambda pid: (
        f"{path} is being written by another process (pid {pid}); wait for it to end, or give another "
        f"{what}"))


# The checkpoint files of a workdir, found without TensorFlow (which takes seconds to load): a run
# checks what its workdir holds before it loads it.
def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINTS)


def checkpoint_state_file(directory: str) -> str:
    """The state file TensorFlow reads to find the checkpoints of `directory` (may be lost or empty:
    the ckpt-N files are what a run holds, checkpoint_steps)."""
    return os.path.join(directory, CHECKPOINT_STATE)


def checkpoint_steps(directory: str) -> list[int]:
    """The steps of the checkpoints in `directory` (ckpt-<step>.index files), sorted."""
    found = {int(m.group(1)) for p in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index"))
             if (m := re.search(r"ckpt-(\d+)\.index$", p))}
    return sorted(found)


def held_results(workdir: str) -> list[str]:
    """What of a run's results the workdir holds besides rolling checkpoints: its model.keras and its
    kept checkpoints (the points of a curve). A fresh start there would mix two runs in one folder."""
    kept = os.path.join(checkpoint_dir(workdir), KEPT_DIR)
    held = [MODEL] if os.path.exists(model_file(workdir)) else []
    return held + [f"{CHECKPOINTS}/{KEPT_DIR}/ckpt-{s}" for s in checkpoint_steps(kept)]


def finished_run(workdir: str) -> dict | None:
    """{"step", "total", "rank1" (None: not evaluated), "report"} of a run that ended and wrote
    model.keras at its newest checkpoint (at its last step, or where its time budget stopped it),
    else None (interrupted, crashed, or no run)."""
    # The checkpoints' files, not TensorFlow's state file (which may be lost or empty), and no
    # TensorFlow: this runs before it loads.
    steps = checkpoint_steps(checkpoint_dir(workdir))
    try:
        with open(model_info_file(workdir)) as f:
            step = int(json.load(f)["step"])
        with open(run_file(workdir)) as f:  # run.json, read as in reid_tf.run_options.read_run
            total = int(json.load(f)["total_steps"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not steps or step < max(steps):
        return None
    done = {"step": step, "total": total, "rank1": None, "report": None}
    for protocol in ("single_shot", "standard"):
        try:
            with open(eval_prefix(workdir, protocol) + ".json") as f:
                rank1 = json.load(f)["summary"]["eq7"]["rank"]["1"]["mean"]
            return {**done, "rank1": rank1, "report": eval_prefix(workdir, protocol) + ".md"}
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return done


# ---- the final network ---------------------------------------------------------------------------
def save_network(network, workdir: str, step: int, precise_bn: int = 0) -> str:
    """workdir/model.keras, written atomically (Keras needs the .keras suffix on the temp file), and
    beside it model.json: the step it was trained to and the training batches its BN statistics were
    re-estimated over (0: the moving averages, as trained), which evaluations report. The evaluations
    of the network it replaces are removed (remove_results)."""
    final, info = model_file(workdir), model_info_file(workdir)
    if os.path.exists(info):  # never a description of another network than the one beside it
        os.remove(info)
    stale = remove_results(workdir)
    if stale:
        logging.info("removed %s: they describe the network model.keras held before", ", ".join(stale))
    with fileio.atomic_path(final, suffix=".keras") as tmp:
        network.save(tmp)
    fileio.write_json(info, {"step": step, "precise_bn": precise_bn})
    return final


def remove_results(workdir: str) -> list[str]:
    """Delete the evaluation results of the workdir's model.keras (RESULT_FILES); returns their names."""
    found = sorted({p for pattern in RESULT_FILES for p in glob.glob(os.path.join(glob.escape(workdir), pattern))})
    for path in found:
        os.remove(path)
    return [os.path.basename(p) for p in found]


def model_precise_bn(workdir: str) -> int:
    """The training batches workdir/model.keras's BN statistics were re-estimated over (its
    model.json, save_network); 0 for the moving averages, and for a run that predates model.json or
    whose file is unreadable (such runs had only moving averages)."""
    try:
        with open(model_info_file(workdir)) as f:
            return int(json.load(f).get("precise_bn", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def load_network(path: str):
    """The network of a model file (.keras) or of a workdir (its model.keras): the one reader of a
    saved network that every command uses (train's --init_from, evaluate, rank, export, the kept
    networks' check). What does not load is said in one line naming the path (FileNotFoundError or
    UsageError): no such file or folder, a SavedModel or a folder without model.keras, a file that
    is no Keras model file (no .keras zip archive), one holding code that Keras's safe mode refuses
    (a Lambda layer), a damaged one, or a Keras model that is no reid_tf network."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise UsageError(f"{path} is a TensorFlow SavedModel (reid_tf.export's output); give the "
                             f"{MODEL} that training writes, or its workdir")
        if not os.path.isfile(model_file(path)):
            raise FileNotFoundError(f"{path} holds no {MODEL}: not a finished reid_tf.train workdir")
        path = model_file(path)
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: no such file or folder (give a {MODEL} or a finished "
                                "run's workdir)")
    if not path.endswith(".keras"):
        raise UsageError(f"{path} is not a Keras model file (its name does not end in .keras); give the "
                         f"{MODEL} that reid_tf.train writes, or its workdir")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
        if not zip_start:  # a zip that only starts as one is damaged: Keras says how, below
            raise UsageError(f"{path} is not a Keras model file (a .keras file is a zip archive, this one is "
                             f"not); give the {MODEL} that reid_tf.train writes, or its workdir")
    import keras  # loads TensorFlow: not at import (see the module docstring)

    from reid_tf import model as model_lib  # registers the network's layers with Keras
    try:
        network = keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001  (BadZipFile, ValueError, OSError, KeyError, ...)
        if "safe_mode" in str(e):
            raise UsageError(f"{path} holds Python code (a Lambda layer), which Keras's safe mode refuses to "
                             f"load; a reid_tf network holds none: give the {MODEL} that reid_tf.train "
                             "writes") from None
        raise UsageError(f"{path} is damaged and cannot be loaded ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); train it again, or give another "
                         "model") from None
    if not model_lib.is_network(network):
        raise UsageError(f"{path} holds a Keras model ({network.name!r}) that is not a reid_tf network (no image "
                         f"encoder and pair head); give the {MODEL} that reid_tf.train writes")
    return network


def read_history(workdir: str, if_damaged: str, required: tuple[str, ...] = ("step",)) -> list[dict]:
    """The validation points of the run in `workdir` (HISTORY, written by Validation after every
    validation, atomically: a JSON list of points {"step", "train_seconds", "rank1", "rank5",
    "rank10", "map"}, oldest first); [] when it has none. A resumed run reads it to continue the
    curve; evaluate --visrank for the step of its TensorBoard pictures. Both go on when it is
    damaged (the curve is for watching, not for resuming): a file that cannot be read, or is not a
    non-empty list of points each with a number under every key of `required`, is one warning line
    ending with `if_damaged` (what the caller does instead) and gives [], never a traceback."""
    path = history_file(workdir)
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            history = json.load(f)
        if not isinstance(history, list):
            raise TypeError(f"a list of points expected, not {type(history).__name__}")
        if not history:  # Validation writes the file only with a point in it
            raise ValueError("no points")
        for point in history:
            for key in required:
                float(point[key])  # a missing key, a point that is not a dict, or a non-number raise
        return history
    except (OSError, ValueError, LookupError, TypeError) as e:
        logging.warning("%s cannot be read (%s: %s); %s", path, type(e).__name__, e, if_damaged)
        return []
