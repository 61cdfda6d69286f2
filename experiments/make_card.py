"""Keep a finished training run's network: `python -m experiments.make_card --workdir=RUN --name=NAME`.

Copies RUN/model.keras to networks/NAME/model.keras and writes beside it card.json (read by
experiments.check_results) and card.md (the same for a reader): the dataset, trial and split, the
preset, recipe and pairing, steps, epochs and pairs seen (model.json, run.json), the run_id, the
command, the code commit, the machine and its training rate (the median of the log's progress lines),
the start and end dates (the log's first and last lines), and the test figures under both protocols,
measured here on the copied file exactly as check_results measures them. The workdir's own
eval.json / eval_random_gallery.json, when present, are compared with them (a warning when they differ).

    python -m experiments.make_card --workdir=/work/runs/cuhk01_l234_t0 --name=cuhk01_l234_shifted_copies_t0 \\
        --log=/work/runs/cuhk01_l234_t0.log --code_dir=/work/runs/wt-9613452 --data_dir=/work/runs/data

--log: the training's log (stderr of reid_tf.train, every leg appended; default RUN.log or RUN/train.log);
--code_dir: the checkout the run was trained from (its commit; default: the commit the workdir's eval
files record, else "unknown"); --command: the command as typed (default: rebuilt from run.json, and
said so). A run without model.keras (stopped early) is refused: only final networks are kept.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import statistics

from absl import flags, logging

from experiments import check_results
from reid_tf import cli, datasets, fileio, provenance
from reid_tf.cli import UsageError
from reid_tf.run_folder import eval_prefix, model_file, model_info_file
from reid_tf.run_options import TrainOptions, read_run

# absl's line prefix (no year: the log file's date supplies it) and the progress lines' rate
LOG_LINE = re.compile(r"^[IWE](\d\d)(\d\d) (\d\d:\d\d:\d\d)")
RATE = re.compile(r"\] step \d+/\d+\s+([\d.]+) pairs/s")
NOT_OPTIONS = ("workdir", "data_dir", "resume", "total_steps", "steps_per_epoch", "split_sizes", "run_id")


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def log_summary(path: str | None) -> dict:
    """Start / end (the first and last absl lines; the year from the file's date) and the median
    pairs/s of the progress lines of a training log; "unknown" for what the log cannot give."""
    unknown = {"log": path or provenance.UNKNOWN, "started": provenance.UNKNOWN, "ended": provenance.UNKNOWN,
               "rate_pairs_per_s": provenance.UNKNOWN, "rate_lines": 0}
    if not path or not os.path.isfile(path):
        return unknown
    stamps, rates = [], []
    with open(path, errors="replace") as f:
        for line in f:
            if (m := LOG_LINE.match(line)) and m.group(1) != "00":  # I0000: TensorFlow's C++ lines
                stamps.append(m.groups())
            if r := RATE.search(line):
                rates.append(float(r.group(1)))
    if not stamps:
        return {**unknown, "rate_lines": len(rates)}
    modified = datetime.datetime.fromtimestamp(os.path.getmtime(path))

    def dated(stamp) -> str:  # a month after the file's last change is last year's
        month, day, clock = int(stamp[0]), int(stamp[1]), stamp[2]
        year = modified.year - (month > modified.month)
        return f"{year:04d}-{month:02d}-{day:02d}T{clock}"

    return {"log": path, "started": dated(stamps[0]), "ended": dated(stamps[-1]),
            "rate_pairs_per_s": round(statistics.median(rates), 1) if rates else provenance.UNKNOWN,
            "rate_lines": len(rates)}


def rebuilt_command(run: dict) -> str:
    """reid_tf.train's command for the run.json body: every option that differs from its default,
    and the dataset, preset, trial and epochs always."""
    defaults = dataclasses.asdict(TrainOptions())
    args = []
    for name, value in run.items():
        if name in NOT_OPTIONS or name not in defaults:
            continue
        if name in ("dataset", "model", "trial", "epochs") or value != defaults[name]:
            args.append(f"--{name}" if value is True else f"--no{name}" if value is False else f"--{name}={value}")
    return "python -m reid_tf.train " + " ".join(args) + f" --workdir={run.get('workdir', 'RUN')}"


def code_of(workdir: str, code_dir: str | None) -> dict:
    """The commit the run was trained with: code_dir's checkout, else what the workdir's eval files
    (written by the training at its end) record, else unknown."""
    if code_dir:
        return {**provenance.code_version(code_dir), "source": code_dir}
    for protocol in ("single_shot", "random_gallery"):
        name = os.path.basename(evaluate_path(workdir, protocol))
        recorded = (read_json(evaluate_path(workdir, protocol)) or {}).get("provenance")
        if recorded and recorded.get("commit"):
            return {"commit": recorded["commit"], "dirty": recorded.get("dirty"), "source": name}
    return {"commit": provenance.UNKNOWN, "dirty": provenance.UNKNOWN, "source": provenance.UNKNOWN}


def compare_eval_files(workdir: str, test: dict) -> None:
    """Warn when the workdir's own evaluation of model.keras differs from the card's figures."""
    for protocol in test:
        body = read_json(evaluate_path(workdir, protocol))
        if not body or body.get("step") is not None:  # none, or a checkpoint's
            continue
        eq7 = body["summary"]["eq7"]
        recorded = {"rank1": eq7["rank"]["1"]["mean"], "rank5": eq7["rank"]["5"]["mean"],
                    "rank10": eq7["rank"]["10"]["mean"], "map": eq7["map"]["mean"]}
        for line in check_results.differences({"test": {protocol: recorded}}, {protocol: test[protocol]}):
            logging.warning("%s differs from the card's measurement: %s", evaluate_path(workdir, protocol), line)


def evaluate_path(workdir: str, protocol: str) -> str:
    return eval_prefix(workdir, protocol) + ".json"


def preset_title(preset: str) -> str:
    from reid_tf.config import get_model_config
    levels = ", ".join(f"L{level}" for level in get_model_config(preset).levels)
    return f"preset {preset} (levels {levels})"


def card_markdown(card: dict) -> str:
    t, r, machine = card["training"], card["run"], card["provenance"]["machine"]
    rebuilt = " (rebuilt from run.json)" if t["command_source"] == "run.json" else ""
    bn = f"re-estimated over {t['precise_bn']} batches" if t["precise_bn"] else "moving averages, as trained"
    lines = [f"# {card['name']}", "",
             f"{card['preset_title']} on {r['dataset']}, trial {r['trial']} (seed {r['seed']}; "
             f"{'/'.join(map(str, r.get('split_sizes', [])))} train/val/test identities), recipe {r['recipe']}, "
             f"pairing {r['pairing']}" + (f" (K = {r['shared_images_per_camera']})" if r["pairing"] == "shared" else "")
             + f", batch {r['batch_size']}, learning rate {r['learning_rate']}.", "",
             "| | |", "|---|---|",
             f"| network | `{card['network']}` ({card['bytes'] / 1e6:.1f} MB, SHA-256 {card['sha256'][:12]}…) |",
             f"| trained | step {t['step']:,} = {t['epochs']:.2f} epochs = {t['pairs_seen']:,} pairs "
             f"({t['pairs_per_step']} a step) |",
             f"| BN statistics | {bn} |",
             f"| run_id | {t['run_id']} |",
             f"| code | {t['code']['commit']}{' (uncommitted changes)' if t['code']['dirty'] is True else ''} |",
             f"| command | `{t['command']}`{rebuilt} |",
             f"| dates | {t['log']['started']} → {t['log']['ended']} |",
             f"| training rate | {t['log']['rate_pairs_per_s']} pairs/s (median of {t['log']['rate_lines']} "
             "log lines) |",
             f"| machine | {machine['cpu']}, {machine['cores']} cores, {machine['matmul_gflops']} GFLOP/s "
             "matmul (where the card was made) |", "",
             "Test figures (Eq. 7, %; `make check-results` re-measures them):", "",
             "| protocol | top-1 | top-5 | top-10 | mAP | gallery seed, draws |", "|---|---|---|---|---|---|"]
    for protocol, m in card["test"].items():
        lines.append(f"| {protocol} | {m['rank1']:.2f} | {m['rank5']:.2f} | {m['rank10']:.2f} | {m['map']:.2f} | "
                     f"{m['gallery_seed']}, {m['draws']} |")
    x = card["test"].get("random_gallery", {})
    if "same_camera_rank1" in x:
        lines += ["", f"Under [31]'s protocol, top-1 of the probes whose gallery image is from their own camera: "
                  f"{x['same_camera_rank1']:.1f} ({x['same_camera_probes']:.0f} probes a draw); from the other "
                  f"camera: {x['cross_camera_rank1']:.1f} ({x['cross_camera_probes']:.0f})."]
    return "\n".join(lines) + "\n"


def make_card(workdir: str, name: str, out_root: str, data_dir: str | None, log: str | None = None,
              code_dir: str | None = None, command: str | None = None, protocols=("single_shot", "random_gallery"),
              force: bool = False) -> dict:
    """Copy workdir's final network to out_root/name/ and write its card; returns the card."""
    from experiments.curve import pairs_per_step

    record = provenance.start(measure=True)
    model = model_file(workdir)
    if not os.path.isfile(model):
        raise UsageError(f"{model} not found: only a finished run's final network is kept (resume the run "
                         "to its end first)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UsageError(f"--name={name!r}: letters, digits, '_', '.', '-' only (a folder name)")
    folder = os.path.join(out_root, name)
    if os.path.exists(os.path.join(folder, check_results.CARD)) and not force:
        raise UsageError(f"{folder} already holds a card; pass --force to replace it")
    run = read_run(workdir)
    info = read_json(model_info_file(workdir)) or {}
    if "step" not in info:
        raise UsageError(f"{workdir}/model.json missing or unreadable: the step of model.keras is unknown")
    os.makedirs(folder, exist_ok=True)
    kept = os.path.join(folder, check_results.MODEL)
    with fileio.atomic_path(kept, suffix=".keras") as tmp:
        shutil.copyfile(model, tmp)
    card_run = {k: v for k, v in run.items() if k not in ("workdir", "data_dir", "resume")}
    log = log or next((p for p in (workdir.rstrip("/") + ".log", os.path.join(workdir, "train.log"))
                       if os.path.isfile(p)), None)
    with check_results.test_data(data_dir) as root:
        test = check_results.measure(kept, card_run, root, protocols)
        options = TrainOptions.from_record({**card_run, "data_dir": root})
        dataset = options.load_dataset()
        per_step = pairs_per_step(options, datasets.records_of(dataset, options.split(dataset).train))
    compare_eval_files(workdir, test)
    step = int(info["step"])
    card = {"name": name, "network": check_results.MODEL, "sha256": check_results.sha256(kept),
            "bytes": os.path.getsize(kept), "preset_title": preset_title(run["model"]),
            "run": card_run,
            "training": {"step": step, "steps_per_epoch": run["steps_per_epoch"],
                         "epochs": step / run["steps_per_epoch"], "pairs_per_step": per_step,
                         "pairs_seen": step * per_step, "precise_bn": int(info.get("precise_bn", 0)),
                         "run_id": run.get("run_id") or provenance.UNKNOWN,
                         "command": command or rebuilt_command(run),
                         "command_source": "given" if command else "run.json",
                         "code": code_of(workdir, code_dir), "log": log_summary(log)},
            "test": test, "provenance": provenance.finish(record)}
    fileio.write_json(os.path.join(folder, check_results.CARD), card)
    fileio.write_text(os.path.join(folder, check_results.CARD_MD), card_markdown(card))
    logging.info("kept %s: %s, %s", name, kept, os.path.join(folder, check_results.CARD))
    return card


def main(argv):
    del argv
    f = flags.FLAGS
    make_card(f.workdir, f.name, f.out, f.data_dir, f.log, f.code_dir, f.command, f.protocols, f.force)
    with open(os.path.join(f.out, f.name, check_results.CARD_MD)) as card_md:
        print(card_md.read())


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "a finished reid_tf.train workdir (model.keras, model.json, run.json)",
                        required=True)
    flags.DEFINE_string("name", None, "the network's folder name under --out", required=True)
    flags.DEFINE_string("out", check_results.NETWORKS, "folder of kept networks")
    flags.DEFINE_string("data_dir", None, "root of prepared datasets (default: prepared on the fly, as "
                        "check_results does)")
    flags.DEFINE_string("log", None, "the training's log (default: WORKDIR.log or WORKDIR/train.log)")
    flags.DEFINE_string("code_dir", None, "the git checkout the run was trained from (its commit)")
    flags.DEFINE_string("command", None, "the training command as typed (default: rebuilt from run.json)")
    flags.DEFINE_list("protocols", ["single_shot", "random_gallery"], "test protocols measured for the card")
    flags.DEFINE_boolean("force", False, "replace an existing card of the same name")
    cli.run(main)
