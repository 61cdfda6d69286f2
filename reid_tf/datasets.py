"""Prepared datasets: records (path, identity, camera), splits and single-shot protocols.

A prepared dataset is a folder holding `manifest.json` (format below), written by one of the
`data_tools.prepare_*` commands or by `data_tools.make_synthetic`. The manifest is written last
and atomically (reid_tf.fileio), so a folder whose manifest exists is complete and an
interrupted preparation never leaves a folder that loads.

manifest.json:
  {"format": "reid_tf-prepared-v1", "dataset": "viper",
   "records": [{"path": "...", "identity": 17, "camera": 0}, ...],   # camera 0 = A, 1 = B
   ...dataset-specific extras (e.g. "testsets" for CUHK03)}
Relative paths are relative to the folder holding manifest.json (VIPeR / CUHK01 manifests hold
absolute paths of the original images, which are not copied).

API: DATASETS; dataset_dir / is_prepared / prepare_command (where a dataset lives under a data root
and how to make it); load_dataset -> Dataset (records, testsets, identities, split(trial, seed) ->
Split(train, val, test) per §4.1 and DESIGN "Protocols"); single_shot (the CMC query / gallery
pick); records_of.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
from typing import Iterable, NamedTuple

import numpy as np
from absl import logging

from reid_tf import fileio
from reid_tf.config import dataset_family

MANIFEST = "manifest.json"
FORMAT = "reid_tf-prepared-v1"


class Record(NamedTuple):
    path: str  # absolute path of the image file
    identity: int
    camera: int  # 0 = camera A (queries), 1 = camera B (gallery)


def write_manifest(out_dir: str, dataset: str, records: list[dict], **extra) -> str:
    """Atomically write `out_dir/manifest.json`; returns its path. Call it last."""
    os.makedirs(out_dir, exist_ok=True)
    body = {"format": FORMAT, "dataset": dataset, "records": records, **extra}
    return fileio.write_json(os.path.join(out_dir, MANIFEST), body, indent=None)


def read_manifest(root: str) -> dict:
    """Read `root/manifest.json`, failing with a message that names the file and the fix."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {root!r} is not a prepared dataset (or its preparation was "
            "interrupted). Run the matching `python -m data_tools.prepare_*` command."
        )
    with open(path) as f:
        try:
            body = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); re-run the preparation") from None
    if body.get("format") != FORMAT:
        raise ValueError(f"{path}: format {body.get('format')!r}, expected {FORMAT!r}")
    return body


def manifest_records(root: str, body: dict) -> list[Record]:
    """Turn manifest entries into Records with absolute paths."""
    return [
        Record(os.path.join(root, r["path"]), int(r["identity"]), int(r["camera"]))
        for r in body["records"]
    ]


# ---------------------------------------------------------------------------------------------
# Named datasets, their folders under a data root, and the protocols of §4.1 (DESIGN "Protocols").
DATASETS = ("viper", "cuhk01", "cuhk03_detected", "cuhk03_labeled", "synthetic")
_SUBDIR = {
    "viper": "viper",
    "cuhk01": "cuhk01",
    "cuhk03_detected": os.path.join("cuhk03", "detected"),
    "cuhk03_labeled": os.path.join("cuhk03", "labeled"),
    "synthetic": "synthetic",
}


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return name


def _protocol_sizes(family: str, n: int) -> tuple[int, int]:
    """Default (test, validation) identity counts for n identities (§4.1, DESIGN "Protocols")."""
    if family == "viper":
        return n // 2, 0  # 316 test / 316 train; the paper has no validation set
    if family == "cuhk01":
        return 100, 0  # 100 test / 871 train
    if family == "cuhk03":
        return 100, 100  # 100 validation, 1,160 train; the test set is a testset of cuhk-03.mat
    return max(1, round(n / 4)), max(1, round(n / 8))  # synthetic (ours)


def dataset_dir(name: str, data_dir: str) -> str:
    """Folder of a prepared dataset under the data root, e.g. data_dir/cuhk03/detected."""
    return os.path.join(data_dir, _SUBDIR[_check_name(name)])


def _command_for(name: str, root: str) -> str:
    q = shlex.quote
    if name == "viper":
        return f"python -m data_tools.prepare_viper --src /path/to/VIPeR --out {q(root)}"
    if name == "cuhk01":
        return f"python -m data_tools.prepare_cuhk01 --src /path/to/CUHK01 --out {q(root)}"
    if name == "synthetic":
        return f"python -m data_tools.make_synthetic --out {q(root)}"
    # Both CUHK03 variants come from one run, into the parent of detected/ and labeled/.
    return f"python -m data_tools.prepare_cuhk03 --mat /path/to/cuhk-03.mat --out {q(os.path.dirname(root))}"


def prepare_command(name: str, data_dir: str) -> str:
    """The shell command that prepares `name` under `data_dir` (for messages)."""
    return _command_for(name, dataset_dir(name, data_dir))


def is_prepared(name: str, data_dir: str) -> bool:
    """True when dataset_dir(name, data_dir) holds a complete manifest of dataset `name`."""
    try:
        return read_manifest(dataset_dir(name, data_dir)).get("dataset") == name
    except (OSError, ValueError):
        return False


class Split(NamedTuple):
    """Sorted identity lists of one trial."""

    train: list[int]
    val: list[int]
    test: list[int]


@dataclasses.dataclass
class Dataset:
    """A prepared dataset: its records and, for CUHK03, the 20 testsets of cuhk-03.mat."""

    name: str
    root: str
    records: list[Record]
    testsets: list[list[int]] | None = None

    @functools.cached_property
    def identities(self) -> list[int]:
        return sorted({r.identity for r in self.records})

    @functools.cached_property
    def by_identity(self) -> dict[int, list[Record]]:
        """identity -> its records, sorted by path (so random picks are reproducible)."""
        groups: dict[int, list[Record]] = {}
        for r in sorted(self.records):
            groups.setdefault(r.identity, []).append(r)
        return groups

    def split(self, trial: int, seed: int, val_identities: int | None = None,
              test_identities: int | None = None) -> Split:
        """Train / validation / test identities of one trial (§4.1, DESIGN "Protocols").

        CUHK03: test = testsets[trial] (100 identities), validation = 100 other identities drawn
        with (seed, trial), train = the rest (1,160). CUHK01: 100 test / 871 train; VIPeR: 316 / 316;
        synthetic: a quarter test, an eighth validation; all random with (seed, trial).
        `val_identities` overrides the validation size (taken from the non-test identities);
        `test_identities` (not for CUHK03) overrides the test size, e.g. for quick runs.
        """
        family, n = dataset_family(self.name), len(self.identities)
        default_test, default_val = _protocol_sizes(family, n)
        if trial < 0:
            raise ValueError(f"trial must be >= 0, got {trial}")
        rng = np.random.default_rng([seed, trial])
        if family == "cuhk03":
            if test_identities is not None:
                raise ValueError("CUHK03 test sets are the fixed testsets of cuhk-03.mat; "
                                 "test_identities is not allowed")
            if not self.testsets or trial >= len(self.testsets):
                raise ValueError(f"{self.name} has {len(self.testsets or [])} testsets; no trial {trial}")
            test = sorted(self.testsets[trial])
            unknown = sorted(set(test) - set(self.identities))
            if unknown:
                raise ValueError(f"{self.name}: testset {trial} names identities without images: "
                                 f"{unknown[:5]}")
            rest = sorted(set(self.identities) - set(test))
        else:
            n_test = default_test if test_identities is None else test_identities
            if not 0 < n_test < n:
                raise ValueError(f"{self.name} has {n} identities; cannot take {n_test} test identities")
            order = rng.permutation(self.identities).tolist()
            test, rest = sorted(order[:n_test]), sorted(order[n_test:])
        n_val = default_val if val_identities is None else val_identities
        if not 0 <= n_val < len(rest):
            raise ValueError(
                f"{self.name}: {len(rest)} non-test identities; cannot take {n_val} for validation and "
                "leave any for training (pass val_identities=...)"
            )
        val = sorted(rng.choice(rest, size=n_val, replace=False).tolist())
        train = sorted(set(rest) - set(val))
        return Split(train, val, test)


def load_dataset(name: str, root: str) -> Dataset:
    """Load the prepared dataset in `root` (= dataset_dir(name, data_dir)), checking that it is
    dataset `name`, and that every image it lists exists."""
    _check_name(name)
    try:
        body = read_manifest(root)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} To prepare {name}: {_command_for(name, root)}") from None
    if body.get("dataset") != name:
        raise ValueError(f"{os.path.join(root, MANIFEST)} holds dataset {body.get('dataset')!r}, "
                         f"not {name!r}")
    records = manifest_records(root, body)
    bad = [r for r in records if r.camera not in (0, 1)]
    if bad:
        raise ValueError(f"{os.path.join(root, MANIFEST)}: camera must be 0 or 1, got {bad[0]}")
    missing = next((r.path for r in records if not os.path.isfile(r.path)), None)
    if missing:
        raise FileNotFoundError(f"{missing} (listed in {os.path.join(root, MANIFEST)}) not found; "
                                f"re-prepare: {_command_for(name, root)}")
    if dataset_family(name) == "cuhk03" and not body.get("testsets"):
        raise ValueError(f"{os.path.join(root, MANIFEST)}: CUHK03 manifest without testsets; re-prepare it")
    return Dataset(name, root, records, body.get("testsets"))


def records_of(dataset: Dataset, identities: Iterable[int]) -> list[Record]:
    """The records of the given identities, in manifest order."""
    wanted = set(identities)
    return [r for r in dataset.records if r.identity in wanted]


def single_shot(dataset: Dataset, identities: Iterable[int], trial: int, seed: int
                ) -> tuple[list[Record], list[Record]]:
    """Single-shot CMC protocol (DESIGN "Protocols"): per identity one camera-0 query and one
    camera-1 gallery image, drawn with (seed, trial, identity) where there are several.

    Returns (queries, gallery), aligned and in the order of `identities`; identities without an
    image in either camera are skipped with a warning.
    """
    queries, gallery, skipped = [], [], []
    for identity in identities:
        records = dataset.by_identity.get(identity, [])
        cams = [[r for r in records if r.camera == c] for c in (0, 1)]
        if not all(cams):
            skipped.append(identity)
            continue
        rng = np.random.default_rng([seed, trial, identity])
        queries.append(cams[0][rng.integers(len(cams[0]))])
        gallery.append(cams[1][rng.integers(len(cams[1]))])
    if skipped:
        logging.warning("%s: %d identities lack an image in camera 0 or 1, skipped: %s",
                        dataset.name, len(skipped), skipped[:10])
    return queries, gallery
