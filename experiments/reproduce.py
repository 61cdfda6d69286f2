"""Rerun a paper table: `python -m experiments.reproduce --table=2` (what `make reproduce-table2` runs).

For every row whose dataset is prepared under --data_dir: train one model per trial (the protocol's
trials, or --trials), evaluate each on its trial's test split, and write results/table{N}.md and
.json: measured top-1/5/10 mean ± std beside the paper's, the difference, the number of trials, the
hardware and the wall time. Rows whose dataset is missing are listed as skipped, with the command
that prepares it. Finished trials are reused (their workdir holds eval.json), so an interrupted
reproduction continues where it stopped; an interrupted trial resumes from its last checkpoint.

--smoke runs the same code path on a tiny synthetic dataset in a few minutes (the test suite does,
so the table machinery can't rot); its numbers mean nothing and the table says so.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time

from absl import flags, logging

from experiments.common import Row, rows
from reid_tf import cli, config, datasets, fileio

SMOKE = dict(synthetic_identities=24, batch_size=6, max_steps=2, checkpoint_every=2, figures=False,
             log_every_seconds=60.0)


def hardware() -> str:
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    devices = f"{len(gpus)} GPU(s)" if gpus else "CPU only"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {devices}"


def run_row(row: Row, trials: int, data_dir: str, runs_dir: str, smoke: bool,
            max_minutes: float | None) -> dict:
    """Train + evaluate every trial of one row; returns its measured summary."""
    from reid_tf import evaluate
    from reid_tf.train import TrainOptions, run

    t0 = time.monotonic()
    workdirs = []
    # A smoke run maps every dataset to the synthetic one, so rows that differ only by dataset are
    # the same experiment: they share one workdir (Table 2's smoke trains 2 models, not 8).
    key = f"{row.model}_synthetic" if smoke else row.key
    for trial in range(trials):
        workdir = os.path.join(runs_dir, key, f"trial{trial}")
        workdirs.append(workdir)
        if os.path.isfile(os.path.join(workdir, "eval.json")):
            logging.info("%s trial %d: already evaluated, reusing %s", row.key, trial, workdir)
            continue
        resume = os.path.isdir(os.path.join(workdir, "checkpoints"))
        opts = TrainOptions(dataset="synthetic" if smoke else row.dataset, data_dir=data_dir,
                            model=row.model, trial=trial, workdir=workdir, resume=resume,
                            max_minutes=max_minutes, **(SMOKE if smoke else {}))
        run(opts)
    body = evaluate.evaluate_workdirs(workdirs, os.path.join(runs_dir, key, "eval_trials"))
    return {"summary": body["summary"]["eq7"], "trials": len(workdirs),
            "wall_minutes": (time.monotonic() - t0) / 60}


def table_markdown(table: int, results: list[dict], skipped: list[dict], smoke: bool, hw: str) -> str:
    head = [f"# Table {table}: measured vs paper (single-shot CMC, ranking by Eq. 7)", ""]
    if smoke:
        head += ["**SMOKE RUN**: tiny synthetic data, 2 training steps — these numbers only show that "
                 "the pipeline runs; they say nothing about the paper.", ""]
    head += [f"Hardware: {hw}.", "",
             "| method | dataset | top-1 (measured / paper / Δ) | top-5 | top-10 | trials | wall time |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        cells = []
        for i, k in enumerate(config.RANKS):
            m = r["summary"]["rank"][str(k)]
            cells.append(f"{m['mean']:.2f} ± {m['std']:.2f} / {r['paper'][i]:.2f} / "
                         f"{m['mean'] - r['paper'][i]:+.2f}")
        head.append(f"| {r['method']} | {r['dataset']} | " + " | ".join(cells) +
                    f" | {r['trials']} | {r['wall_minutes']:.1f} min |")
    for s in skipped:
        head.append(f"| {s['method']} | {s['dataset']} | skipped: dataset not prepared — `{s['command']}` "
                    f"| | | | |")
    return "\n".join(head) + "\n"


def reproduce(table: int, data_dir: str, trials: int | None, smoke: bool, out_dir: str,
              runs_dir: str, max_minutes: float | None = None) -> dict:
    hw = hardware()
    results, skipped = [], []
    for row in rows(table):
        if not smoke and not datasets.is_prepared(row.dataset, data_dir):
            command = datasets.prepare_command(row.dataset, data_dir)
            logging.warning("Table %d, %s on %s: dataset not prepared; skipped (%s)", table,
                            row.method, row.dataset, command)
            skipped.append({**dataclasses.asdict(row), "command": command})
            continue
        n = 1 if smoke else (trials or config.per_dataset(config.TRIALS, row.dataset))
        logging.info("Table %d, %s on %s: %d trial(s)", table, row.method, row.dataset, n)
        measured = run_row(row, n, data_dir, os.path.join(runs_dir, f"table{table}"), smoke, max_minutes)
        results.append({**dataclasses.asdict(row), **measured})
    body = {"table": table, "smoke": smoke, "hardware": hw, "rows": results, "skipped": skipped}
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, f"table{table}{'_smoke' if smoke else ''}")
    text = table_markdown(table, results, skipped, smoke, hw)
    fileio.write_json(prefix + ".json", body)
    fileio.write_text(prefix + ".md", text)
    logging.info("wrote %s.md and .json", prefix)
    return body


def main(argv):
    del argv
    f = flags.FLAGS
    body = reproduce(f.table, f.data_dir, f.trials, f.smoke, f.out_dir,
                     f.runs_dir if not f.smoke else os.path.join(f.runs_dir, "smoke"), f.max_minutes)
    print(table_markdown(body["table"], body["rows"], body["skipped"], body["smoke"], body["hardware"]))


if __name__ == "__main__":
    flags.DEFINE_integer("table", 2, "paper table: 2, 3 or 4")
    flags.DEFINE_string("data_dir", "data", "root of prepared datasets")
    flags.DEFINE_integer("trials", None, "trials per row (default: the protocol's, 20 CUHK03 / 10 others)")
    flags.DEFINE_boolean("smoke", False, "tiny synthetic run of the same code path")
    flags.DEFINE_string("out_dir", "results", "where table{N}.md/.json go")
    flags.DEFINE_string("runs_dir", "runs", "where each trial's workdir goes")
    flags.DEFINE_float("max_minutes", None, "training budget per trial (default: the paper's 5 epochs)")
    cli.run(main)
