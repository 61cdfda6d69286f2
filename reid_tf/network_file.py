"""A saved network read back: the one reader of a `.keras` file that every command uses (train's
--init_from, evaluate, rank, export, the curve, the kept networks' check), so that what does not load
is said as what it is. Nothing here imports another reid_tf command module (no import circle)."""
from __future__ import annotations

import os
import zipfile

ZIP_MAGIC = b"PK\x03\x04"  # a .keras file is a zip archive


def load_saved_network(path: str):
    """A network saved as .keras. What does not load is said as what it is: a file that is no zip
    archive is not a Keras model file; one holding code that Keras's safe mode refuses (a Lambda
    layer) is no reid_tf network; a zip that does not load is damaged."""
    from reid_tf.model import load_network  # loads TensorFlow: see the imports

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
        if not zip_start:
            raise ValueError(f"{path} is not a Keras model file (a .keras file is a zip archive, this one is "
                             "not); give the model.keras that reid_tf.train writes, or its workdir")
    try:
        return load_network(path)
    except Exception as e:  # noqa: BLE001  (BadZipFile, ValueError, OSError, KeyError, ...)
        if "safe_mode" in str(e):
            raise ValueError(f"{path} holds Python code (a Lambda layer), which Keras's safe mode refuses to "
                             "load; a reid_tf network holds none: give the model.keras that reid_tf.train "
                             "writes") from None
        raise ValueError(f"{path} is damaged and cannot be loaded ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); train it again, or give another "
                         "model") from None
