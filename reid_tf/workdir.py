"""One training per workdir: an OS-level lock that a killed process cannot leave behind.

`lock(workdir)` takes an exclusive `fcntl.flock` on workdir/.lock for as long as the returned
object lives (the trainer holds it for the whole run). The kernel releases a flock when its owner's
file descriptor closes, which includes any death of the process (SIGKILL, OOM killer), so a stale
lock is impossible; the pid written into the file is only for the message that names the owner,
and for `holder`, which asks (without locking) whether a training is still running there.
"""
from __future__ import annotations

import fcntl
import os

LOCK_FILE = ".lock"


class WorkdirBusyError(OSError):
    """Another process holds the workdir; the message names its pid."""


class WorkdirLock:
    """Holds the lock of a workdir until `release()` (or the process ends)."""

    def __init__(self, workdir: str):
        self.workdir, self.path = workdir, os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(self._fd)
            self.release()
            raise WorkdirBusyError(
                f"{workdir} is in use by another training (pid {owner or 'unknown'}); wait for it to "
                "end, stop it, or choose another --workdir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
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
    if pid is None or pid <= 0:
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:  # it exists, owned by another user
        pass
    return pid


def lock(workdir: str) -> WorkdirLock:
    """Create `workdir` if needed and lock it; raises WorkdirBusyError naming the holder's pid, or
    OSError (e.g. PermissionError) when the workdir cannot be created or written."""
    try:
        os.makedirs(workdir, exist_ok=True)
        return WorkdirLock(workdir)
    except WorkdirBusyError:
        raise
    except OSError as e:
        raise OSError(f"--workdir={workdir} cannot be created or written "
                      f"({e.strerror}: {e.filename})") from None
