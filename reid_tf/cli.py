"""The one way reid_tf's commands start and fail: `cli.run(main)` instead of `absl.app.run(main)`.

A usage error (a bad value, a missing or damaged file, a busy workdir, a dataset that is not
prepared) is the user's to fix, so it ends as one absl error line and exit status 1, never as a
traceback; a traceback is kept for what is a bug. Ctrl-C outside training ends with one line and
status 130 (training itself stops at a step boundary and checkpoints first: reid_tf.trainer).
`--help` exits with 0 (absl exits with 1).
"""
from __future__ import annotations

import signal
import sys
from typing import Callable

from absl import app, logging

# What a user can cause and fix. ValueError covers bad values and bad data (DatasetError,
# ImageError); OSError covers missing, unreadable, unwritable and damaged files.
USAGE_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
_HELP = ("--help", "-help", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull")


class UsageError(ValueError):
    """A request that cannot be carried out as given; the message says what to do instead."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; `status` is the exit status."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.status = 128 + signum


def _guarded(main: Callable[[list[str]], object]):
    def wrapped(argv: list[str]):
        try:
            return main(argv)
        except Interrupted as e:
            logging.warning("%s", e)
            sys.exit(e.status)
        except KeyboardInterrupt:
            logging.error("interrupted")
            sys.exit(128 + signal.SIGINT)
        except USAGE_ERRORS as e:
            logging.error("%s", e)
            sys.exit(1)
    return wrapped


def run(main: Callable[[list[str]], object]) -> None:
    """absl.app.run(main), with usage errors (USAGE_ERRORS) as one line and status 1."""
    try:
        app.run(_guarded(main))
    except SystemExit as e:
        if e.code == 1 and any(arg in _HELP for arg in sys.argv[1:]):
            sys.exit(0)  # absl's --help exits with 1; asking for help is not a failure
        raise
