"""Rerun a paper table: `python -m experiments.reproduce --table=2` (what `make reproduce-table2` runs).

For every row whose dataset is prepared under --data_dir: train one model per trial (the protocol's
trials, or --trials), evaluate each on its trial's test split, and write results/table{N}.md and
.json: measured top-1/5/10 mean ± std beside the paper's, the difference, the number of trials, the
hardware and the wall time. Rows whose dataset is missing are listed as skipped, with the command
that prepares it. Finished trials are reused (their workdir holds eval.json), so an interrupted
reproduction continues where it stopped; an interrupted trial resumes from its last checkpoint.

Each row trains with its dataset's recipe (`shifted_copies`, [31]'s pairs, for the paper's datasets:
docs/DESIGN.md "Recipes") unless --recipe says otherwise, on the recipe's pairing (shared images for
`shifted_copies`, per pair for `cross_camera`: config.RECIPE_PAIRING) unless --pairing says otherwise;
a run's workdir, runs/table{N}/<row>_<recipe>_<pairing>/trial{t}, names both.

--smoke runs the same code path on a tiny synthetic dataset in a few minutes (the test suite does,
so the table machinery can't rot); its numbers mean nothing and the table says so.

--from_results=DIR trains nothing: it writes the table from the committed result files of DIR
(`results/*_curve.json`, written by experiments.curve: a run's settings and its test CMC per
checkpoint and protocol), one line per (row, recipe, pairing, protocol) and end point: each run
ends at the paper's 5 epochs, or at its last point (marked with the epochs it reached), and every
end point gets the mean ± sample std over all the trials with a point there — trials stopped at
0.4 and 1 epoch give a two-trial line at 0.4 and a one-trial line at 1. `make reproduce-table2
FROM_RESULTS=1` runs it.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import platform
import time

import numpy as np
from absl import flags, logging

from experiments import plots
from experiments.common import Row, rows
from reid_tf import cli, config, datasets, evaluate, fileio, metrics, provenance, run_folder, train
from reid_tf.protocols import PROTOCOL_TITLES, SINGLE_SHOT_PROTOCOLS
from reid_tf.run_options import TrainOptions, run_setting

SMOKE = dict(synthetic_identities=24, batch_size=6, max_steps=2, checkpoint_every=2, figures=False,
             log_every_seconds=60.0)


def hardware() -> str:
    import tensorflow as tf  # here: --from_results and a usage error do not wait for TensorFlow
    gpus = tf.config.list_physical_devices("GPU")
    devices = f"{len(gpus)} GPU(s)" if gpus else "CPU only"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {devices}"


def run_row(row: Row, trials: int, data_dir: str, runs_dir: str, smoke: bool,
            max_minutes: float | None, recipe: str | None = None, pairing: str | None = None) -> dict:
    """Train + evaluate every trial of one row with `recipe` (None: the dataset's) and `pairing`
    (None: the recipe's); returns its measured summary, with the recipe and pairing it used."""
    t0 = time.monotonic()
    workdirs = []
    dataset = "synthetic" if smoke else row.dataset
    resolved = TrainOptions(dataset=dataset, recipe=recipe, pairing=pairing)
    recipe, pairing = resolved.resolved_recipe(), resolved.resolved_pairing()
    # A smoke run maps every dataset to the synthetic one, so rows that differ only by dataset are
    # the same experiment: they share one workdir (Table 2's smoke trains 2 models, not 8). Runs of
    # another recipe or pairing are other experiments: their own workdirs, never resumed as this one.
    key = (f"{row.model}_synthetic" if smoke else row.key) + f"_{recipe}_{pairing}"
    for trial in range(trials):
        workdir = os.path.join(runs_dir, key, f"trial{trial}")
        workdirs.append(workdir)
        if os.path.isfile(run_folder.eval_prefix(workdir) + ".json"):
            logging.info("%s trial %d: already evaluated, reusing %s", row.key, trial, workdir)
            continue
        resume = os.path.isdir(run_folder.checkpoint_dir(workdir))
        opts = TrainOptions(dataset=dataset, data_dir=data_dir, model=row.model, trial=trial,
                                  workdir=workdir, resume=resume, max_minutes=max_minutes, recipe=recipe,
                                  pairing=pairing, **(SMOKE if smoke else {}))
        train.run(opts)
    body = evaluate.evaluate_workdirs(workdirs, run_folder.eval_prefix(os.path.join(runs_dir, key), trials=True))
    return {"summary": body["summary"]["eq7"], "trials": len(workdirs), "recipe": recipe, "pairing": pairing,
            "sources": [{"workdir": w, "file": run_folder.eval_prefix(w) + ".json"} for w in workdirs],
            "wall_minutes": (time.monotonic() - t0) / 60}


def mean_std(m: dict, trials: int) -> str:
    """"mean ± sample std" over several trials; the mean alone for one (its spread is unknown, not 0)."""
    return f"{m['mean']:.2f} ± {m['std']:.2f}" if trials > 1 else f"{m['mean']:.2f}"


def table_markdown(table: int, results: list[dict], skipped: list[dict], smoke: bool, hw: str) -> str:
    head = [f"# Table {table}: measured vs paper (single-shot CMC, ranking by Eq. 7)", ""]
    if smoke:
        head += ["**SMOKE RUN**: tiny synthetic data, 2 training steps — these numbers only show that "
                 "the pipeline runs; they say nothing about the paper.", ""]
    head += [f"Hardware: {hw}.", "",
             "| method | dataset | recipe | pairing | top-1 (measured / paper / Δ) | top-5 | top-10 | trials "
             "| wall time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cells = []
        for i, k in enumerate(config.RANKS):
            m = r["summary"]["rank"][str(k)]
            cells.append(f"{mean_std(m, r['trials'])} / {r['paper'][i]:.2f} / {m['mean'] - r['paper'][i]:+.2f}")
        head.append(f"| {r['method']} | {r['dataset']} | {r['recipe']} | {r['pairing']} | " + " | ".join(cells) +
                    f" | {r['trials']} | {r['wall_minutes']:.1f} min |")
    for s in skipped:
        head.append(f"| {s['method']} | {s['dataset']} | | | skipped: dataset not prepared — `{s['command']}` "
                    f"| | | | |")
    return "\n".join(head) + "\n"


def _run_label(run: dict) -> tuple[str, str]:
    """(recipe, pairing) of a curve's run, "K = k" added to shared pairing."""
    recipe, pairing = run_setting(run, "recipe"), run_setting(run, "pairing")
    if pairing == "shared":
        k, limit = run_setting(run, "shared_images_per_camera"), config.RECIPE_MAX_SHARED_K[recipe]
        k = k if limit is None else min(k, limit)
        pairing += f", K = {k}"
    return recipe, pairing


def off_protocol(run: dict) -> list[str]:
    """The settings of a curve's run that make it no measurement of the paper's row: another test or
    validation split, learning rate or batch size than the protocol's, weights not trained from
    scratch (the paper's Ours rows are), or BN statistics re-estimated after training (precise_bn; the
    paper evaluates them as trained). A setting the curve file does not record had its default."""
    spec = datasets.get_spec(run["dataset"])
    expected = {"val_identities": None, "test_identities": None, "init_from": None, "precise_bn": 0,
                "learning_rate": config.LEARNING_RATE, "batch_size": spec.batch_size}
    return [f"{name}={run[name]}" for name, value in expected.items() if run.get(name, value) != value]


def read_curves(results_dir: str) -> list[tuple[str, dict]]:
    """(path, body) of results_dir/*_curve.json, those off the protocol (off_protocol) left out
    with a warning."""
    curves = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*_curve.json"))):
        try:
            with open(path) as f:
                body = json.load(f)
            off = off_protocol(body["run"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise cli.UsageError(f"{path}: not a readable curve file ({type(e).__name__}: {e})") from e
        if off:
            logging.warning("%s: left out of the table, not the paper's setting (%s)", path, ", ".join(off))
            continue
        curves.append((path, body))
    return curves


def from_results(table: int, curves: list[tuple[str, dict]]) -> list[dict]:
    """Measured lines of Table `table` from curves (read_curves; module docstring). The same run
    (trial, seed and settings) in two files is an error, as it would count as two trials."""
    lines = []
    for row in rows(table):
        groups: dict[tuple, list] = {}
        seen: dict[tuple, str] = {}
        for path, body in curves:
            run = body["run"]
            if (run["dataset"], run["model"]) != (row.dataset, row.model) or not body["points"]:
                continue
            same = (*_run_label(run), run["trial"], run["seed"])
            if same in seen:
                raise cli.UsageError(f"{path} and {seen[same]} are curves of the same run (trial {run['trial']}, "
                                     f"seed {run['seed']}, {', '.join(same[:2])}): keep one, or it counts twice")
            seen[same] = path
            points = {round(p["epochs"], 2): p for p in body["points"]}
            full = [e for e in points if e >= config.EPOCHS - 1e-9]
            end = min(full) if full else max(points)
            groups.setdefault(_run_label(run), []).append((end, points, path, run["trial"]))
        by_point: dict[tuple, list] = {}
        for label, runs in groups.items():
            # A line at every run's end point (5 epochs, else its last), over all the runs with a point
            # there: trials stopped at different epochs meet at the earlier one instead of two lines
            # of one trial each.
            for epochs in {end for end, *_ in runs}:
                for _, points, path, trial in runs:
                    point = points.get(epochs, {"results": {}})
                    for protocol, result in point["results"].items():
                        source = {"file": path, "step": point["step"], "trial": trial}
                        by_point.setdefault((*label, protocol, epochs), []).append((result, source))
        for (recipe, pairing, protocol, epochs), found in sorted(by_point.items(), key=lambda kv: _protocol_first(kv[0])):
            results = [r for r, _ in found]
            summary = {name: {"mean": float(np.mean([r[name] for r in results])),
                              "std": metrics.spread([r[name] for r in results])}
                       for name in ("rank1", "rank5", "rank10", "map")}
            lines.append({**dataclasses.asdict(row), "recipe": recipe, "pairing": pairing,
                          "protocol": protocol, "epochs": epochs, "trials": len(results), "summary": summary,
                          "sources": [source for _, source in found]})
    return lines


def from_results_markdown(table: int, lines: list[dict], results_dir: str) -> str:
    text = [f"# Table {table}: measured vs paper, from the committed results ({results_dir}/*_curve.json; "
            "no training)", "",
            "Test CMC (Eq. 7) at each run's end: the paper's 5 epochs, or the epochs it reached (then the "
            "epochs column says so); mean ± sample std over all the trials with a point there, so trials "
            "stopped at different epochs also meet at the earlier one. Protocols: "
            + "; ".join(f"**{k}** — {PROTOCOL_TITLES[k]}" for k in SINGLE_SHOT_PROTOCOLS), "",
            "| method | dataset | recipe | pairing | protocol | epochs | trials | top-1 (measured / paper / Δ) "
            "| top-5 | top-10 | mAP |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for line in lines:
        cells = []
        for i, name in enumerate(("rank1", "rank5", "rank10")):
            m, paper = line["summary"][name], line["paper"][i]
            cells.append(f"{mean_std(m, line['trials'])} / {paper:.2f} / {m['mean'] - paper:+.2f}")
        epochs = f"{line['epochs']:g}" + ("" if line["epochs"] >= config.EPOCHS else " (not the paper's 5)")
        m = line["summary"]["map"]
        text.append(f"| {line['method']} | {line['dataset']} | {line['recipe']} | {line['pairing']} | "
                    f"{line['protocol']} | {epochs} | {line['trials']} | " + " | ".join(cells)
                    + f" | {mean_std(m, line['trials'])} |")
    measured = {(line["method"], line["dataset"]) for line in lines}
    missing = [row for row in rows(table) if (row.method, row.dataset) not in measured]
    if missing:
        text += ["", "No committed result yet: " + "; ".join(f"{r.method} on {r.dataset}" for r in missing) + "."]
    return "\n".join(text) + "\n"


PALETTE = [(31, 119, 180), (214, 39, 40), (255, 127, 14), (148, 103, 189), (44, 160, 44), (140, 86, 75),
           (227, 119, 194), (23, 190, 207)]
METRICS = (("rank1", "top-1"), ("rank5", "top-5"), ("rank10", "top-10"), ("map", "mAP"))
PANEL = (470, 320)  # pixels of one chart of a row's figure; the legend is to the right of 2 × 2 of them


def _protocol_first(key: tuple) -> tuple:
    """A (recipe, pairing, protocol, ...) key ordered with the protocols in SINGLE_SHOT_PROTOCOLS' order
    (the paper's single-shot before [31]'s), not by their names."""
    order = SINGLE_SHOT_PROTOCOLS.index(key[2]) if key[2] in SINGLE_SHOT_PROTOCOLS else len(SINGLE_SHOT_PROTOCOLS)
    return (*key[:2], order, key[2], *key[3:])


def _series_keys(bodies) -> list[tuple[str, str, str]]:
    """The (recipe, pairing, protocol) of every series of these curve bodies, sorted (_protocol_first)."""
    return sorted({(*_run_label(b["run"]), protocol) for b in bodies for p in b["points"] for protocol in p["results"]},
                  key=_protocol_first)


def series_colours(curves: list[tuple[str, dict]]) -> dict:
    """One colour per (recipe, pairing, protocol) over all the curves, so that a setting has the same
    colour in every row's figure."""
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(_series_keys(body for _, body in curves))}


def plot_row(row: Row, curves: list[tuple[str, dict]], path: str, colour: dict | None = None) -> bool:
    """Top-1/5/10 and mAP against pairs seen for every committed run of a row (2 × 2 panels): one
    colour per (recipe, pairing, protocol) (`colour`, default series_colours(curves)), one marker
    per trial, the paper's values dashed. False (nothing drawn) when the row has no curve."""
    bodies = [body for _, body in curves if (body["run"]["dataset"], body["run"]["model"]) == (row.dataset, row.model)
              and body["points"]]
    if not bodies:
        return False
    keys = _series_keys(bodies)
    colour = colour or series_colours(curves)
    trials = sorted({b["run"]["trial"] for b in bodies})
    marker = {t: plots.MARKERS[i % len(plots.MARKERS)] for i, t in enumerate(trials)}
    x_max = max(p["pairs_seen"] for b in bodies for p in b["points"])
    (pw, ph), legend_w = PANEL, 330
    image, draw = plots.new_image((2 * pw + legend_w, 2 * ph + 34))
    draw.text((8, 8), f"{row.method} on {row.dataset}: test CMC (Eq. 7) and mAP against pairs seen, every "
              "committed run (results/*_curve.json)", fill="black", font=plots.font(14))
    for n, (name, title) in enumerate(METRICS):
        series = [plots.Series("", colour[(*_run_label(b["run"]), protocol)],
                               [(p["pairs_seen"], p["results"][protocol][name]) for p in b["points"]
                                if protocol in p["results"]], marker[b["run"]["trial"]])
                  for b in bodies for protocol in sorted({pr for p in b["points"] for pr in p["results"]})]
        x0, y0 = (n % 2) * pw, 30 + (n // 2) * ph
        paper = row.paper[n] if n < len(row.paper) else None
        plots.panel(draw, (x0, y0, x0 + pw, y0 + ph), f"{title} (%)", series, x_max, paper=paper)
    entries = [(colour[k], f"{k[0]}, {k[1]}, {k[2]}", None) for k in keys]
    entries += [((0, 0, 0), f"trial {t}", marker[t]) for t in trials]
    plots.legend(draw, (2 * pw + 10, 40), entries)
    plots.save(image, path)
    return True


def write_from_results(table: int, results_dir: str, out_dir: str) -> str:
    record = provenance.start(measure=False)  # no training, no gallery draw: the machine's speed says nothing
    curves = read_curves(results_dir)
    lines = from_results(table, curves)
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join(out_dir, f"table{table}")
    figures, colour = [], series_colours(curves)
    for row in rows(table):
        figure = f"{prefix}_{row.dataset}_{row.model}.png"
        if plot_row(row, curves, figure, colour):
            figures.append(os.path.basename(figure))
        elif os.path.exists(figure):  # drawn before from curves that are gone: it would show them still
            os.remove(figure)
            logging.info("removed %s: no committed curve of its row now", figure)
    text = from_results_markdown(table, lines, results_dir)
    if figures:
        text += "\nAgainst pairs seen, every committed run: " + ", ".join(f"![{f}]({f})" for f in figures) + "\n"
    fileio.write_json(prefix + ".json", {"table": table, "source": f"{results_dir}/*_curve.json", "lines": lines,
                                         "provenance": provenance.finish(record)})
    fileio.write_text(prefix + ".md", text)
    logging.info("wrote %s.md and .json from %d measured line(s), %d figure(s)", prefix, len(lines), len(figures))
    return text


def reproduce(table: int, data_dir: str, trials: int | None, smoke: bool, out_dir: str,
              runs_dir: str, max_minutes: float | None = None, recipe: str | None = None,
              pairing: str | None = None) -> dict:
    record = provenance.start()  # each trial's own eval.json records its run_id and gallery seed
    hw = hardware()
    results, skipped = [], []
    for row in rows(table):
        if not smoke and not datasets.is_prepared(row.dataset, data_dir):
            command = datasets.prepare_command(row.dataset, data_dir)
            logging.warning("Table %d, %s on %s: dataset not prepared; skipped (%s)", table,
                            row.method, row.dataset, command)
            skipped.append({**dataclasses.asdict(row), "command": command})
            continue
        n = 1 if smoke else (trials or datasets.get_spec(row.dataset).trials)
        logging.info("Table %d, %s on %s: %d trial(s)", table, row.method, row.dataset, n)
        measured = run_row(row, n, data_dir, os.path.join(runs_dir, f"table{table}"), smoke, max_minutes,
                           recipe, pairing)
        results.append({**dataclasses.asdict(row), **measured})
    body = {"table": table, "smoke": smoke, "hardware": hw, "rows": results, "skipped": skipped,
            "provenance": provenance.finish(record)}
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
    if f.from_results:
        print(write_from_results(f.table, f.from_results, f.out_dir))
        return
    body = reproduce(f.table, f.data_dir, f.trials, f.smoke, f.out_dir,
                     f.runs_dir if not f.smoke else os.path.join(f.runs_dir, "smoke"), f.max_minutes,
                     f.recipe, f.pairing)
    print(table_markdown(body["table"], body["rows"], body["skipped"], body["smoke"], body["hardware"]))


if __name__ == "__main__":
    flags.DEFINE_integer("table", 2, "paper table: 2, 3 or 4")
    flags.DEFINE_string("data_dir", "data", "root of prepared datasets")
    flags.DEFINE_integer("trials", None, "trials per row (default: the protocol's, 20 CUHK03 / 10 others)")
    flags.DEFINE_boolean("smoke", False, "tiny synthetic run of the same code path")
    flags.DEFINE_string("out_dir", "results", "where table{N}.md/.json go")
    flags.DEFINE_string("runs_dir", "runs", "where each trial's workdir goes")
    flags.DEFINE_string("from_results", None, "train nothing: write the table from this folder's "
                        "committed *_curve.json files (e.g. results)")
    flags.DEFINE_float("max_minutes", None, "training budget per trial (default: the paper's 5 epochs)")
    flags.DEFINE_enum("recipe", None, list(config.RECIPES), "training pairs (default: each dataset's: "
                      "shifted_copies for the paper's datasets; reid_tf.train --recipe)")
    flags.DEFINE_enum("pairing", None, list(config.PAIRINGS), "per_pair or shared (default: the recipe's; "
                      "reid_tf.train --pairing)")
    cli.run(main)
