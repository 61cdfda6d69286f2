"""One training per workdir (one writer per file): an OS-level lock that a killed process cannot
leave behind.

`lock(workdir)` takes an exclusive `fcntl.flock` on workdir/.lock for as long as the returned
object lives (the trainer holds it for the whole run). The kernel releases a flock when its owner's
file descriptor closes, which includes any death of the process (SIGKILL, OOM killer), so a stale
lock is impossible; the pid written into the file is only for the message that names the owner,
and for `holder`, which asks (without locking) whether a training is still running there. A run
that fails in a workdir it has just created, before writing anything, removes it again (a folder
holding only .lock is no run). `lock_file(path, ...)` is the same lock for any other single-writer
file (experiments.curve's output).
"""
from __future__ import annotations

import fcntl
import glob
import os
import re
from typing import Callable

from reid_tf import fileio

LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
KEPT_DIR = "kept"  # StepCheckpoint's keep_every checkpoints (checkpoints/kept/), never deleted


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


def checkpoint_steps(directory: str) -> list[int]:
    """The steps of the checkpoints in `directory` (ckpt-<step>.index files), sorted."""
    found = {int(m.group(1)) for p in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index"))
             if (m := re.search(r"ckpt-(\d+)\.index$", p))}
    return sorted(found)
