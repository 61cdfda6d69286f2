"""Every kept network gives the figures its card promises: `python -m experiments.check_results`
(`make check-results`).

A kept network is a folder networks/<name>/ holding model.keras (the final network, weights only)
and card.json (what it is, how it was trained, and its test figures under both protocols; card.md is
the same for a reader): experiments.make_card writes both from a finished training workdir. This
command evaluates each network on its own trial's test split, under every protocol its card lists
(single_shot, random_gallery = [31]'s, with the card's gallery seed), and prints one line per figure that
differs from the card by more than --tolerance percentage points, plus one line if model.keras is
not the file the card describes (its SHA-256). Exit status 0 when every figure agrees, 1 otherwise.

The test data is prepared on the fly into a temporary folder: CUHK01 from the raw images found in
shared/data/CUHK01 beside the repository (or any parent folder's shared/data; $REID_SHARED_DATA
names another), the synthetic set generated from the card's seed. --data_dir=DIR uses datasets
already prepared there instead.

    python -m experiments.check_results                       # every networks/*/card.json
    python -m experiments.check_results --protocols=single_shot --networks=networks/NAME
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile

from absl import flags, logging

from reid_tf import cli, datasets, report
from reid_tf.run_folder import MODEL, load_network
from reid_tf.cli import UsageError
from reid_tf.datasets import synthetic
from reid_tf.protocols import evaluate_network

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORKS = os.path.join(REPO, "networks")
CARD, CARD_MD = "card.json", "card.md"  # beside MODEL, the network, named as in a workdir
METRICS = ("rank1", "rank5", "rank10", "map")
TOLERANCE = 0.01  # percentage points: float noise moves a figure by far less; one test identity moves it by 1
RAW_FOLDERS = {"cuhk01": "CUHK01"}  # datasets check_results can prepare from shared/data/<folder>


def card_paths(root: str = NETWORKS) -> list[str]:
    """networks/*/card.json under `root` (or `root` itself when it is one network's folder)."""
    if os.path.isfile(os.path.join(root, CARD)):
        return [os.path.join(root, CARD)]
    return sorted(glob.glob(os.path.join(root, "*", CARD)))


def read_card(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable card ({type(e).__name__}: {e})") from None


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shared_data(folder: str) -> str | None:
    """The raw dataset folder shared/data/<folder>: under $REID_SHARED_DATA, else the first
    parent of the repository holding shared/data/<folder>; None when there is none."""
    if os.environ.get("REID_SHARED_DATA"):
        path = os.path.join(os.environ["REID_SHARED_DATA"], folder)
        return path if os.path.isdir(path) else None
    parent = REPO
    while True:
        path = os.path.join(parent, "shared", "data", folder)
        if os.path.isdir(path):
            return path
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)


def prepare(run: dict, data_dir: str) -> None:
    """Make the dataset of `run` (a card's run settings) ready under data_dir, if it is not."""
    name = run["dataset"]
    if datasets.is_prepared(name, data_dir):
        return
    target = datasets.dataset_dir(name, data_dir)
    if name == "synthetic":
        synthetic.make_synthetic(target, run["synthetic_identities"], run["seed"])
    elif name == "cuhk01" and (raw := shared_data(RAW_FOLDERS[name])):
        from data_tools import prepare_cuhk01  # the raw images are read where they are, never copied

        prepare_cuhk01.prepare(raw, target)
    else:
        raise UsageError(f"dataset {name} is not prepared under {data_dir} and its raw images were not found "
                         f"(shared/data/{RAW_FOLDERS.get(name, '?')}); pass --data_dir=DIR holding it prepared "
                         f"({datasets.prepare_command(name, '<DIR>')})")


@contextlib.contextmanager
def test_data(data_dir: str | None):
    """data_dir as given, or a temporary folder (removed afterwards) the datasets are prepared into."""
    if data_dir:
        yield data_dir
        return
    with tempfile.TemporaryDirectory(prefix="reid_tf_check_") as tmp:
        yield tmp


def measure(network_path: str, run: dict, data_dir: str, protocols) -> dict:
    """Test figures of the network at network_path on the trial of `run` (a card's "run"): per
    protocol rank-1/5/10 and mAP (%, Eq. 7), the gallery seed and draws, and under [31]'s protocol
    top-1 of same-camera and cross-camera probes (reid_tf.protocols.camera_split)."""
    from reid_tf.run_options import TrainOptions

    prepare(run, data_dir)
    options = TrainOptions.from_record({**run, "data_dir": data_dir})
    dataset = options.load_dataset()
    test = options.split(dataset).test
    network = load_network(network_path)
    out = {}
    for protocol in protocols:
        per_trial = evaluate_network(network, dataset, test, options.trial, options.seed, protocol=protocol)
        summary = report.summarize([per_trial])
        out[protocol] = {**report.eq7_figures(summary), "gallery_seed": options.seed, "draws": summary["eq7"]["n"],
                         "test_identities": len(test)}
        split = report.summarize_camera_split([per_trial])
        if split:
            out[protocol].update({f"{kind}_rank1": v["rank1"]["mean"] for kind, v in split.items()})
            out[protocol].update({f"{kind}_probes": v["probes"] for kind, v in split.items()})
        logging.info("%s, %s: top-1/5/10 %.2f / %.2f / %.2f, mAP %.2f", network_path, protocol,
                     *(out[protocol][m] for m in METRICS))
    return out


def differences(card: dict, measured: dict, tolerance: float = TOLERANCE) -> list[str]:
    """"protocol figure: card X, now Y" for every card figure that `measured` does not give back
    within `tolerance` (figures the card has and the measurement lacks included)."""
    lines = []
    for protocol, figures in card["test"].items():
        now = measured.get(protocol, {})
        for name, value in figures.items():
            if not isinstance(value, (int, float)) or name in ("gallery_seed", "draws", "test_identities"):
                continue
            if name.endswith("_probes"):  # counts: exact
                ok = now.get(name) == value
            else:
                ok = now.get(name) is not None and abs(now[name] - value) <= tolerance
            if not ok:
                lines.append(f"{protocol} {name}: card {value:.4f}, now "
                             f"{'missing' if now.get(name) is None else format(now[name], '.4f')}")
    return lines


def check(card_path: str, data_dir: str, protocols=None, tolerance: float = TOLERANCE) -> list[str]:
    """The differences of one kept network from its card, each line prefixed by the card's path."""
    card = read_card(card_path)
    folder = os.path.dirname(card_path)
    model = os.path.join(folder, card.get("network", MODEL))
    if not os.path.isfile(model):
        return [f"{card_path}: {model} not found"]
    lines = []
    if card.get("sha256") and sha256(model) != card["sha256"]:
        lines.append(f"model.keras is not the network of the card (SHA-256 {sha256(model)[:12]}, card "
                     f"{card['sha256'][:12]})")
    wanted = [p for p in (protocols or card["test"]) if p in card["test"]]
    measured = measure(model, card["run"], data_dir, wanted)
    lines += differences({"test": {p: card["test"][p] for p in wanted}}, measured, tolerance)
    return [f"{card_path}: {line}" for line in lines]


def main(argv):
    del argv
    f = flags.FLAGS
    paths = card_paths(f.networks)
    if not paths:
        raise UsageError(f"no kept network under {f.networks} (a folder per network with {CARD}; "
                         "python -m experiments.make_card writes one from a finished workdir)")
    if f.tolerance < 0:
        raise UsageError(f"--tolerance={f.tolerance}: must be >= 0")
    failed = []
    with test_data(f.data_dir) as data_dir:
        for path in paths:
            lines = check(path, data_dir, f.protocols, f.tolerance)
            failed += lines
            logging.info("%s: %s", path, "every figure as on the card" if not lines else f"{len(lines)} differ")
    for line in failed:
        print(line)
    if failed:
        raise SystemExit(1)
    print(f"{len(paths)} kept network(s): every figure as on its card (tolerance {f.tolerance} points)")


if __name__ == "__main__":
    flags.DEFINE_string("networks", NETWORKS, "folder of kept networks (networks/<name>/card.json), or one "
                        "network's folder")
    flags.DEFINE_string("data_dir", None, "root of prepared datasets (default: prepared on the fly into a "
                        "temporary folder from shared/data)")
    flags.DEFINE_list("protocols", None, "protocols to check (default: every protocol on each card)")
    flags.DEFINE_float("tolerance", TOLERANCE, "largest difference from a card figure, in percentage points")
    cli.run(main)
