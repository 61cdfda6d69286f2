"""A run's validation history, workdir/history.json: its name and the one reader.

reid_tf.callbacks.Validation writes it (atomically, reid_tf.fileio) after every validation: a JSON
list of points {"step", "train_seconds", "rank1", "rank5", "rank10", "map"}, oldest first. A resumed
run reads it to continue the curve; evaluate --visrank reads it for the step of its TensorBoard
pictures. Both go on when it is damaged: the curve is for watching, not for resuming. No TensorFlow
here, so that evaluate's import stays light.
"""
from __future__ import annotations

import json
import os

from absl import logging

HISTORY = "history.json"  # in the workdir: Validation's points, one per validation, oldest first


def read_history(workdir: str, if_damaged: str, required: tuple[str, ...] = ("step",)) -> list[dict]:
    """The validation points of the run in `workdir` (HISTORY, written by Validation); [] when it has
    none. A file that cannot be read, or is not a non-empty list of points each with a number under
    every key of `required`, is one warning line ending with `if_damaged` (what the caller does instead) and
    gives [], never a traceback."""
    path = os.path.join(workdir, HISTORY)
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
