"""Named datasets, one module each, registered in one table (`REGISTRY`).

Each module (as torchreid's `data/datasets/image/*.py`) says in its docstring what the dataset is,
where it comes from and its statistics, and defines a `DatasetSpec`: its folder under the data
root, the command that prepares it, its protocol and split sizes, and its recipe constants.
Adding a dataset = one module here, one line in `REGISTRY`, and its `data_tools.prepare_*` command.

| name | module | protocol |
|---|---|---|
| viper | viper | single-shot, 316 / 316 identities (§4.1) |
| cuhk01 | cuhk01 | single-shot, 871 / 100 (§4.1) |
| cuhk03_detected, cuhk03_labeled | cuhk03 | single-shot, the 20 testsets of cuhk-03.mat (§4.1) |
| synthetic | synthetic | single-shot, ours (built in; generated on first use) |
| market1501 | market1501 | standard: 751 train / 750 test identities, query vs gallery |
| dukemtmcreid | dukemtmcreid | standard: 702 / 702 (+ 408 distractor identities) |
| cuhk03_np_detected, cuhk03_np_labeled | cuhk03_np | standard: 767 / 700 |

API: REGISTRY, DATASETS (the names), get_spec; dataset_dir / is_prepared / prepare_command (where a
dataset lives under a data root and how to make it); load_dataset -> Dataset (records, testsets,
query, gallery, identities, split(trial, seed) -> Split(train, val, test) per §4.1 and DESIGN
"Protocols"); records_of. The test protocols that read these splits: reid_tf.protocols.
"""
from __future__ import annotations

import os

from reid_tf.datasets import cuhk01, cuhk03, cuhk03_np, dukemtmcreid, market1501, synthetic, viper
from reid_tf.datasets.base import (DISTRACTOR, FORMAT, JUNK, MANIFEST, SINGLE_SHOT, STANDARD, Dataset,
                                   DatasetSpec, Record, Split, load_manifest, manifest_records,
                                   read_manifest, records_of, write_manifest)

__all__ = ["DATASETS", "DISTRACTOR", "FORMAT", "JUNK", "MANIFEST", "REGISTRY", "SINGLE_SHOT", "STANDARD",
           "Dataset", "DatasetSpec", "Record", "Split", "dataset_dir", "get_spec", "is_prepared",
           "load_dataset", "manifest_records", "prepare_command", "read_manifest", "records_of",
           "write_manifest"]

# The table: name -> spec, in the order the command line lists them (the paper's datasets first).
REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    viper.SPEC,
    cuhk01.SPEC,
    cuhk03.DETECTED,
    cuhk03.LABELED,
    synthetic.SPEC,
    market1501.SPEC,
    dukemtmcreid.SPEC,
    cuhk03_np.DETECTED,
    cuhk03_np.LABELED,
)}
DATASETS = tuple(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a named dataset; an unknown name raises ValueError listing the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}") from None


def dataset_dir(name: str, data_dir: str) -> str:
    """Folder of a prepared dataset under the data root, e.g. data_dir/cuhk03/detected."""
    return os.path.join(data_dir, get_spec(name).subdir)


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that prepares `name` under `data_dir` (for messages)."""
    return get_spec(name).prepare_command(dataset_dir(name, data_dir))


def is_prepared(name: str, data_dir: str) -> bool:
    """True when dataset_dir(name, data_dir) holds a complete manifest of dataset `name`."""
    try:
        return read_manifest(dataset_dir(name, data_dir)).get("dataset") == name
    except (OSError, ValueError):
        return False


def load_dataset(name: str, root: str) -> Dataset:
    """Load the prepared dataset in `root` (= dataset_dir(name, data_dir)), checking that it is
    dataset `name`, and that every image it lists exists."""
    return load_manifest(get_spec(name), root)
