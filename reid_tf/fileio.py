"""Files that are either complete or absent: the one atomic-write helper of reid_tf.

A reader (evaluate, a resumed run, a dataset loader) must never see half a file, because a run can
be killed at any instant. Every file reid_tf writes for later use (run.json, history.json,
model.keras, eval.json, manifests, extracted PNGs, result tables) is therefore written under a
temporary name in the same folder and renamed onto its final name by `os.replace`, which POSIX makes
atomic within one file system. Temporary names start with "." and end with ".tmp" (plus the writer's
own suffix, e.g. ".keras", when a library insists on one), so a leftover from a killed writer is
hidden and recognisable (`make clean` removes those under results/).

API: `atomic_path(path)` (a context manager giving the temporary path to write to, for writers that
take a path: Keras, PIL); `write_text(path, text)` and `write_json(path, body)`; `atomic_folder(path)`,
the same for a folder of files (a SavedModel), renamed onto `path` when complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from typing import Any, Iterator

from absl import logging

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a fresh temporary path beside `path`; when the block ends without an exception, the file
    written there is flushed to disk and renamed onto `path`; otherwise it is removed.

    suffix: the ending the writer needs on the temporary name (e.g. ".keras" for keras Model.save).
    """
    folder, name = os.path.split(os.path.abspath(path))
    # A unique name (not tempfile.mkstemp, whose files are private to the user): the writer creates
    # the file, so it gets the usual permissions.
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> str:
    """Write `text` to `path` atomically; returns path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return path


def write_json(path: str, body: Any, indent: int | None = 1) -> str:
    """Write `body` as JSON to `path` atomically; returns path."""
    return write_text(path, json.dumps(body, indent=indent))


@contextlib.contextmanager
def atomic_folder(path: str) -> Iterator[str]:
    """Yield a fresh temporary folder beside `path` (.NAME.<pid>-<hex>.tmp); when the block ends
    without an exception it is renamed onto `path`, replacing a folder there; otherwise removed.
    Such folders left by a writer that was killed (its pid no longer alive) are removed first."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_dead_writers(folder, name)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(path):  # the old folder is kept aside until the new one is in place
            old = tmp + ".old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def _remove_dead_writers(folder: str, name: str) -> None:
    pattern = re.compile(re.escape(f".{name}.") + r"(\d+)-[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + r"(\.old)?")
    for entry in os.listdir(folder):
        match = pattern.fullmatch(entry)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)
            logging.info("removed %s, left by a writer that was killed", os.path.join(folder, entry))


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (signal 0; one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True
