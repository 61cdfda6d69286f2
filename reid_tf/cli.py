"""The one way reid_tf's commands start, talk and fail: `cli.run(main)` instead of `absl.app.run(main)`.

Every command (reid_tf.train / evaluate / rank / export, experiments/*, benchmarks/*, data_tools/*)
starts with `cli.run(main)`, which gives them one console:

- Our lines are short: `13:04:07 step 26/38280 …`, warnings `13:04:07 warning: …`, and an error is
  one line `error: <what> — <what to do>` on standard error (absl's `I1202 13:04:39.200993 1407…
  callbacks.py:180]` prefix is for debugging, below).
- TensorFlow's own chatter is kept out (`quiet_tensorflow`, run when reid_tf is imported, before
  TensorFlow is): the C++ runtime's start-up lines (oneDNN, CUDA drivers, CPU features, the cuInit
  error of a machine without a GPU), its XLA lines and the saver's INFO lines ("Sharding callback
  duration"). Whatever matters to a run reaches us as a Python exception and is reported.
- VERBOSE_ENV (REID_TF_VERBOSE=1) is the one switch that shows all of it again, with absl's full
  prefix on our lines, for debugging; every command's --help says so (HELP_NOTE).

Exit status: 0 for success and for --help (absl's is 1); 2 for a command line absl cannot parse
(an unknown flag, a value of the wrong type, a required flag missing); 1 for a usage error found
while running (USAGE_ERRORS: a bad value, a missing or damaged file, a busy workdir, a dataset that
is not prepared), which is the user's to fix and so never a traceback; a traceback is kept for what
is a bug. Ctrl-C outside training ends with one line and status 130 (training itself stops at a
step boundary and checkpoints first: reid_tf.callbacks.StopOnSignal).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging as std_logging
import os
import signal
import sys
import time
from typing import Callable

from absl import app, flags, logging

VERBOSE_ENV = "REID_TF_VERBOSE"
HELP_NOTE = (f"\nConsole: TensorFlow's own start-up and runtime lines are hidden; {VERBOSE_ENV}=1 shows them "
             "again (and absl's full log prefix) for debugging.\n")
# What a user can cause and fix. ValueError covers bad values and bad data (DatasetError,
# ImageError); OSError covers missing, unreadable, unwritable and damaged files.
USAGE_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
_HELP = ("--help", "-help", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull")
# The packages whose flags a command's --help lists (a flag defined by a shared module, e.g.
# data_tools.bounding_boxes, is the command's as much as one defined in its own file).
_OUR_PACKAGES = ("reid_tf", "data_tools", "experiments", "benchmarks")


class UsageError(ValueError):
    """A request that cannot be carried out as given; the message says what to do instead."""


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; `status` is the exit status."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.status = 128 + signum


def verbose() -> bool:
    """Whether REID_TF_VERBOSE asks for TensorFlow's own lines and absl's full prefix."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


# ---- TensorFlow's C++ runtime ------------------------------------------------------------------
@contextlib.contextmanager
def _stderr_to_devnull():
    """File descriptor 2 to /dev/null: the C++ runtime writes there directly, not through sys.stderr."""
    try:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to keep quiet
        yield
        return
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietLoader(importlib.abc.Loader):
    """Executes TensorFlow's package with standard error closed, then is done."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with _stderr_to_devnull():
            self.loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """The first `import tensorflow` runs with standard error closed (see quiet_tensorflow)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and the lookup below must not find this finder again
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ runtime quiet, unless VERBOSE_ENV is set; call before TensorFlow loads.

    Two mechanisms, because the lines come from two places: TF_CPP_MIN_LOG_LEVEL=3 silences the
    runtime's logging once it is set up (the cuInit error, XLA's "Compiled cluster"), but the lines
    written while its libraries load (oneDNN, CUDA drivers, CPU features, absl::InitializeLog) precede
    that and ignore it, so `import tensorflow` itself runs with file descriptor 2 on /dev/null (a
    Python exception raised by the import still propagates and is reported). A TF_CPP_MIN_LOG_LEVEL the
    user set wins. No-op when TensorFlow is already imported.
    """
    if verbose():
        return
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


# ---- our lines -----------------------------------------------------------------------------------
class ShortFormatter(std_logging.Formatter):
    """`HH:MM:SS message`, `HH:MM:SS warning: message`, and `error: message` (no time: the line a
    user acts on starts with what it is)."""

    def format(self, record: std_logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= std_logging.ERROR:
            return f"error: {message}"
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} warning: {message}" if record.levelno >= std_logging.WARNING else f"{stamp} {message}"


def _not_tensorflow_info(record: std_logging.LogRecord) -> bool:
    """False for an INFO (or DEBUG) record of TensorFlow's Python code: its saver logs "Sharding
    callback duration" through absl at every checkpoint. Its warnings and errors pass."""
    return record.levelno >= std_logging.WARNING or _TF_PYTHON not in record.pathname


_TF_PYTHON = f"{os.sep}tensorflow{os.sep}python{os.sep}"


def configure_console() -> None:
    """Our log lines in the short format; TensorFlow's Python INFO lines kept out (they come through
    absl's handler and through the "tensorflow" logger)."""
    if verbose():
        return
    handler = logging.get_absl_handler()
    handler.setFormatter(ShortFormatter())
    if _not_tensorflow_info not in handler.filters:
        handler.addFilter(_not_tensorflow_info)
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)


def _list_every_flag_in_help() -> None:
    """absl's --help lists the flags of the main module's file only; a command's flags defined by a
    shared module (data_tools.bounding_boxes, reid_tf.rank) are its flags too."""
    main = sys.argv[0]
    for module, defined in flags.FLAGS.flags_by_module_dict().items():
        if module.split(".")[0] in _OUR_PACKAGES:
            for flag in defined:
                flags.FLAGS.register_key_flag_for_module(main, flag)
    doc = getattr(sys.modules.get("__main__"), "__doc__", None) or ""
    if HELP_NOTE not in doc:
        sys.modules["__main__"].__doc__ = doc.replace("%", "%%") + HELP_NOTE


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a command line it cannot parse as one `error:` line and status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        what = "; ".join(line.strip().rstrip(".") for line in str(e).splitlines() if line.strip())
        print(f"error: {what} — see --help for the flags", file=sys.stderr)
        sys.exit(2)


def _guarded(main: Callable[[list[str]], object]):
    def wrapped(argv: list[str]):
        configure_console()
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
    """absl.app.run(main) with this module's console: usage errors (USAGE_ERRORS) as one line and
    status 1, --help listing every flag and exiting 0."""
    _list_every_flag_in_help()
    try:
        app.run(_guarded(main), flags_parser=_parse_flags)
    except SystemExit as e:
        if e.code == 1 and any(arg in _HELP for arg in sys.argv[1:]):
            sys.exit(0)  # absl's --help exits with 1; asking for help is not a failure
        raise
