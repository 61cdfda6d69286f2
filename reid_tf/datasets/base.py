"""The pieces every dataset shares: records, the manifest, the spec a dataset module fills in,
the loaded Dataset with its split protocols, and the single-shot pick.

A prepared dataset is a folder holding `manifest.json` (format below), written by one of the
`data_tools.prepare_*` commands or by `reid_tf.datasets.synthetic`. The manifest is written last
and atomically (reid_tf.fileio), so a folder whose manifest exists is complete and an
interrupted preparation never leaves a folder that loads.

manifest.json:
  {"format": "reid_tf-prepared-v1", "dataset": "viper",
   "records": [{"path": "...", "identity": 17, "camera": 0}, ...],   # the images to train on
   ...dataset-specific extras: "testsets" (CUHK03); "query" and "gallery" (standard protocol:
   lists like "records"; identity -1 = junk, 0 = distractor, as in Market-1501)}
Cameras are 0-based: 0 = A (queries), 1 = B (gallery) for the two-camera datasets of the paper,
0 .. cameras-1 for the multi-camera ones. Relative paths are relative to the folder holding
manifest.json (VIPeR / CUHK01 / Market-style manifests hold absolute paths of the original
images, which are not copied).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shlex
from typing import Callable, Iterable, NamedTuple

import numpy as np

from reid_tf import config, fileio

MANIFEST = "manifest.json"
FORMAT = "reid_tf-prepared-v1"


class Record(NamedTuple):
    path: str  # absolute path of the image file
    identity: int
    camera: int  # 0-based; two-camera datasets: 0 = camera A (queries), 1 = camera B (gallery)


class FileIdentity(NamedTuple):
    """How a dataset's image file names say whose image it is (each dataset module's
    FILE_IDENTITY; reid_tf.datasets.file_names asks them): `pattern`, matched at the start of a file
    name without its suffix, and `identity`, its groups -> the identity as the manifest holds it."""

    pattern: re.Pattern
    identity: Callable[[tuple[str, ...]], int]

    def of(self, stem: str) -> int | None:
        m = self.pattern.match(stem)
        return self.identity(m.groups()) if m else None


# The identity, then "_" and anything: VIPeR (PPP_AAA), synthetic (IIII_K), Market-1501
# (PPPP_cCsS_FFFFFF_BB, junk -1_...), DukeMTMC-reID (PPPP_cC_fFFFFFFF), CUHK03-NP (PPPP_cC_N).
IDENTITY_FIRST = FileIdentity(re.compile(r"^(-?\d+)_"), lambda g: int(g[0]))


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


# Protocols: how a dataset is split and evaluated.
SINGLE_SHOT = "single_shot"  # §4.1: per test identity one camera-A query and one camera-B gallery image
STANDARD = "standard"  # Market-1501 style: fixed query / gallery sets, junk and same-camera excluded
# Market-1501's labels for detector boxes that are not a good box of a person (the dataset page,
# liangzheng.com.cn/Project/project_reid.html: overlap with the hand-drawn box 20–50 % -> "junk",
# < 20 % -> "distractor"): identity -1, never counted by the standard protocol, neither as match nor
# as non-match; identity 0000, kept in the gallery as non-matches. DukeMTMC-reID and CUHK03-NP use
# neither label (Duke's 408 distractor identities have ordinary numbers).
JUNK, DISTRACTOR = -1, 0


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything reid_tf knows about one named dataset; each module of reid_tf.datasets defines one.

    Attributes:
      name: the name used on the command line (--dataset) and in manifests.
      subdir: its folder under the data root.
      prepare: the command that prepares it; "{root}" is replaced by its folder, "{parent}" by
        the folder above (CUHK03's one command writes detected/ and labeled/ side by side).
      protocol: SINGLE_SHOT or STANDARD.
      split_sizes: n identities -> default (test, validation) identity counts of a trial
        (SINGLE_SHOT: test identities drawn at random; STANDARD: validation identities held
        out of training, the test set being the fixed query / gallery).
      batch_size, crops_per_image: the training recipe (the paper's §4.2 values where it has
        them, else ours: the module says which).
      trials: how many trials the protocol averages over.
      cameras: how many cameras the records may name (0 .. cameras-1).
      fixed_testsets: test identities of trial t = the manifest's testsets[t] (CUHK03).
      epochs: training length in the dataset's epochs (paper §4.2: 5).
      recipe: the default reading of the training pairs (config.RECIPES; `--recipe` overrides).
        The paper's datasets take [31]'s ("shifted_copies", the one that measured close to the paper
        on CUHK01: docs/DESIGN.md "Recipes"); the others ours ("cross_camera").
    """

    name: str
    subdir: str
    prepare: str
    protocol: str
    split_sizes: Callable[[int], tuple[int, int]]
    batch_size: int
    crops_per_image: int
    trials: int
    cameras: int = 2
    fixed_testsets: bool = False
    epochs: float = 5.0
    recipe: str = "cross_camera"

    def prepare_command(self, root: str) -> str:
        """The shell command that prepares this dataset into `root` (= its dataset_dir)."""
        return self.prepare.format(root=shlex.quote(root), parent=shlex.quote(os.path.dirname(root)))


def paper_two_camera_spec(name: str, prepare: str, split_sizes: Callable[[int], tuple[int, int]]) -> DatasetSpec:
    """The spec of the paper's two-camera datasets other than CUHK03 (VIPeR, CUHK01): folder `name`,
    single-shot protocol and the recipe §4.2 gives them (config's "default" batch size, crops per
    image and trials; config.PAPER_RECIPE); only the name, the command and the split sizes differ between them."""
    return DatasetSpec(
        name=name,
        subdir=name,
        prepare=prepare,
        protocol=SINGLE_SHOT,
        split_sizes=split_sizes,
        batch_size=config.BATCH_SIZE["default"],
        crops_per_image=config.CROPS_PER_IMAGE["default"],
        trials=config.TRIALS["default"],
        recipe=config.PAPER_RECIPE,
    )


class Split(NamedTuple):
    """Sorted identity lists of one trial."""

    train: list[int]
    val: list[int]
    test: list[int]


@dataclasses.dataclass
class Dataset:
    """A prepared dataset: its spec, its training records; for CUHK03 the 20 testsets of
    cuhk-03.mat; for the standard protocol the fixed query and gallery records."""

    spec: DatasetSpec  # carried, not looked up by name: the table imports this module
    root: str
    records: list[Record]
    testsets: list[list[int]] | None = None
    query: list[Record] | None = None
    gallery: list[Record] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

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
        Standard protocol (Market-1501, DukeMTMC-reID, CUHK03-NP): train = every training identity
        but the validation ones (none by default), test = the identities of the fixed queries.
        `val_identities` overrides the validation size (taken from the non-test identities);
        `test_identities` (not for CUHK03 or the standard protocol) overrides the test size.
        """
        spec, n = self.spec, len(self.identities)
        default_test, default_val = spec.split_sizes(n)
        if trial < 0:
            raise ValueError(f"trial must be >= 0, got {trial}")
        rng = np.random.default_rng([seed, trial])
        if spec.protocol == STANDARD:
            if test_identities is not None:
                raise ValueError(f"{self.name}: the test set is the fixed query / gallery of the standard "
                                 "protocol; test_identities is not allowed")
            test = sorted({r.identity for r in self.query or []})
            rest = self.identities
        elif spec.fixed_testsets:
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


def load_manifest(spec: DatasetSpec, root: str) -> Dataset:
    """Load the prepared dataset in `root`, checking that it is dataset `spec.name`, that its
    cameras are in range and that every image it lists exists."""
    manifest = os.path.join(root, MANIFEST)
    try:
        body = read_manifest(root)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} To prepare {spec.name}: {spec.prepare_command(root)}") from None
    if body.get("dataset") != spec.name:
        raise ValueError(f"{manifest} holds dataset {body.get('dataset')!r}, not {spec.name!r}")
    parts = {"records": manifest_records(root, body)}
    if spec.protocol == STANDARD:
        for key in ("query", "gallery"):
            if not body.get(key):
                raise ValueError(f"{manifest}: no {key} images; re-prepare: {spec.prepare_command(root)}")
            parts[key] = manifest_records(root, {"records": body[key]})
    every = [r for records in parts.values() for r in records]
    bad = [r for r in every if not 0 <= r.camera < spec.cameras]
    if bad:
        valid = "0 or 1" if spec.cameras == 2 else f"in 0..{spec.cameras - 1}"
        raise ValueError(f"{manifest}: camera must be {valid}, got {bad[0]}")
    missing = next((r.path for r in every if not os.path.isfile(r.path)), None)
    if missing:
        raise FileNotFoundError(f"{missing} (listed in {manifest}) not found; "
                                f"re-prepare: {spec.prepare_command(root)}")
    if spec.fixed_testsets and not body.get("testsets"):
        raise ValueError(f"{manifest}: CUHK03 manifest without testsets; re-prepare it")
    return Dataset(spec, root, parts["records"], body.get("testsets"), parts.get("query"),
                   parts.get("gallery"))


def records_of(dataset: Dataset, identities: Iterable[int]) -> list[Record]:
    """The records of the given identities, in manifest order."""
    wanted = set(identities)
    return [r for r in dataset.records if r.identity in wanted]
