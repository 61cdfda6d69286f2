"""Accuracy against pairs seen for one training run, from its saved checkpoints, under both test
protocols (issue 11):

    python -m experiments.curve --workdir=runs/cuhk01_l23 --checkpoints=runs/cuhk01_l23/checkpoints \\
        --out=results/cuhk01_l23_cross_camera_curve [--protocols=single_shot,xcorr] [--every=395]

Each checkpoint (ckpt-<step>) whose step is a multiple of --every, or the last one, is restored into
the run's preset and evaluated on the run's test split (reid_tf.evaluate.evaluate_network);
--checkpoints must be inside --workdir, so that no other run's weights meet this run's test split. The
points are added to OUT.json (finished points are kept, so the command can be rerun as a run goes
on), and OUT.md (a table) and OUT.png (rank-1 against pairs seen, one line per protocol) are
rewritten. Commit these small files under results/ so the curve survives a change of machine.

With --follow it runs beside a training (start both, the curve niced) and evaluates each checkpoint
as it appears, until the training that holds the workdir ends (reid_tf.workdir.holder); then it
evaluates what is left, the last checkpoint included, and exits:

    nice -n 19 python -m experiments.curve --workdir=RUN --checkpoints=RUN/checkpoints/kept \
        --out=results/NAME_curve --follow &
"""
from __future__ import annotations

import glob
import json
import os
import re
import time

import tensorflow as tf
from absl import flags, logging

from experiments import plots
from reid_tf import cli, datasets, evaluate, fileio, pairs, provenance, trainer, workdir
from reid_tf import precise_bn as precise_bn_lib
from reid_tf.model import build_model
from reid_tf.train import TrainOptions, read_run, run_setting, training_data

FLAGS = flags.FLAGS
COLOURS = {"single_shot": (31, 119, 180), "xcorr": (214, 39, 40)}


def pairs_per_step(run: TrainOptions, records) -> int:
    """Pairs a step of this run trains on (a shared batch holds 3K²V pairs, not batch_size)."""
    if run.pairing == "shared":
        return pairs.shared_batch_shape(records, run.batch_size, run.shared_images_per_camera, run.recipe)[1]
    return run.batch_size


def checkpoint_steps(directory: str) -> list[int]:
    found = {int(m.group(1)) for p in glob.glob(os.path.join(directory, "ckpt-*.index"))
             if (m := re.search(r"ckpt-(\d+)\.index$", p))}
    return sorted(found)


def evaluate_checkpoint(run: TrainOptions, path: str, dataset, test_ids, protocols, precise_bn: int = 0,
                        train_records=None) -> dict:
    """Test CMC and mAP of checkpoint `path` under each protocol; with precise_bn = N > 0, on BN
    statistics re-estimated over the N training batches the run would train on next (reid_tf.precise_bn)."""
    network = build_model(run.model)
    tf.train.Checkpoint(model=network).restore(path).expect_partial()
    if precise_bn:
        step = trainer.checkpoint_step(path)
        batches = training_data(run, train_records, dataset.spec.crops_per_image, step)
        used = precise_bn_lib.recalibrate(trainer.PairTrainer(network), batches, precise_bn)
        logging.info("%s: BN statistics re-estimated over %d training batches from step %d",
                     os.path.basename(path), used, step)
    out = {}
    for protocol in protocols:
        per_trial = evaluate.evaluate_network(network, dataset, test_ids, run.trial, run.seed, protocol=protocol)
        summary = evaluate.summarize([per_trial])["eq7"]
        out[protocol] = {"rank1": summary["rank"]["1"]["mean"], "rank5": summary["rank"]["5"]["mean"],
                         "rank10": summary["rank"]["10"]["mean"], "map": summary["map"]["mean"]}
        if split := evaluate.summarize_camera_split([per_trial]):  # [31]'s protocol: same / other camera
            out[protocol]["camera_split"] = split
        logging.info("%s, %s: rank-1/5/10 %.1f / %.1f / %.1f, mAP %.1f", os.path.basename(path), protocol,
                     *list(out[protocol].values())[:4])
    return out


def bn_note(run: dict) -> str:
    return evaluate.bn_note(run.get("precise_bn", 0))


def markdown(body: dict) -> str:
    run = body["run"]
    lines = [f"### {run['dataset']} / {run['model']} / recipe {run_setting(run, 'recipe')} / "
             f"pairing {run_setting(run, 'pairing')} / trial {run['trial']}{bn_note(run)}: test CMC (Eq. 7) "
             "against pairs seen", "",
             "| step | epochs | pairs seen | protocol | top-1 | top-5 | top-10 | mAP |",
             "|---|---|---|---|---|---|---|---|"]
    for p in body["points"]:
        for protocol, r in p["results"].items():
            lines.append(f"| {p['step']} | {p['epochs']:.2f} | {p['pairs_seen']:,} | {protocol} | "
                         f"{r['rank1']:.1f} | {r['rank5']:.1f} | {r['rank10']:.1f} | {r['map']:.1f} |")
    lines += ["", "Protocols: " + "; ".join(f"**{k}** — {evaluate.PROTOCOL_TITLES[k]}"
                                            for k in evaluate.SINGLE_SHOT_PROTOCOLS)]
    return "\n".join(lines) + "\n"


def plot(body: dict, path: str, size=(720, 440), paper_rank1: float | None = None) -> None:
    """Rank-1 (%) against pairs seen, one line per protocol, the paper's rank-1 dashed."""
    w, h = size
    image, draw = plots.new_image(size)
    points, run = body["points"], body["run"]
    series = [plots.Series(f"{protocol} protocol", colour,
                           [(p["pairs_seen"], p["results"][protocol]["rank1"]) for p in points
                            if protocol in p["results"]])
              for protocol, colour in COLOURS.items()]
    title = (f"rank-1 (%), Eq. 7: {run['dataset']} / {run['model']} / {run_setting(run, 'recipe')} / "
             f"{run_setting(run, 'pairing')} / trial {run['trial']}{bn_note(run)}")
    plots.panel(draw, (2, 6, w - 170, h - 4), title, series,
                max((p["pairs_seen"] for p in points), default=1), paper=paper_rank1)
    plots.legend(draw, (w - 158, 36), [(s.colour, s.label, None) for s in series])
    plots.save(image, path)


def main(argv):
    del argv
    unknown = [p for p in FLAGS.protocols if p not in evaluate.SINGLE_SHOT_PROTOCOLS]
    if unknown:  # before any checkpoint is evaluated
        raise cli.UsageError(f"unknown --protocols {', '.join(unknown)}; valid: "
                             f"{', '.join(evaluate.SINGLE_SHOT_PROTOCOLS)}")
    if FLAGS.precise_bn < 0:
        raise cli.UsageError(f"--precise_bn={FLAGS.precise_bn}: a number of batches, 0 for none")
    directory = FLAGS.checkpoints or os.path.join(FLAGS.workdir, "checkpoints")
    inside = os.path.realpath(directory).startswith(os.path.realpath(FLAGS.workdir) + os.sep)
    if not inside:  # another run's weights would be tested on this run's split, which it may have trained on
        raise cli.UsageError(f"--checkpoints {directory} is not inside --workdir {FLAGS.workdir}: a curve "
                             "evaluates a run's own checkpoints on that run's test split; give the run's workdir")
    run = read_run(FLAGS.workdir)
    options = TrainOptions.from_record(run)
    dataset = options.load_dataset()
    split = options.split(dataset)
    train_records = datasets.records_of(dataset, split.train)
    per_step = pairs_per_step(options, train_records)
    out_json = FLAGS.out + ".json"
    body = {"points": []}
    if os.path.isfile(out_json):
        with open(out_json) as f:
            body = json.load(f)
    if body["points"] and body.get("run", {}).get("precise_bn", 0) != FLAGS.precise_bn:
        raise cli.UsageError(f"{out_json} holds points with --precise_bn={body['run'].get('precise_bn', 0)}, "
                             f"not {FLAGS.precise_bn}: one curve, one way of evaluating; give another --out")
    if body["points"] and body.get("run", {}).get("run_id") != run.get("run_id"):
        raise cli.UsageError(f"{out_json} holds points of another run than {FLAGS.workdir}'s (run_id "
                             f"{body['run'].get('run_id')}, now {run.get('run_id')}; the workdir was started "
                             "afresh): one curve, one run; give another --out, or another --trial")
    body["run"] = {k: run_setting(run, k) for k in ("dataset", "model", "trial", "seed", "batch_size", "recipe",
                                                    "pairing", "shared_images_per_camera", "steps_per_epoch",
                                                    "total_steps", "learning_rate", "val_identities",
                                                    "test_identities", "init_from")}
    body["run"]["precise_bn"] = FLAGS.precise_bn
    body["run"]["run_id"] = run.get("run_id")
    record = provenance.start(run_id=run.get("run_id"), gallery_seed=options.seed, steps=[])

    def evaluate_new(final: bool) -> None:
        """Evaluate the checkpoints not in the curve yet; the newest is skipped while the run may still
        be publishing it (it is retried at the next poll), except in the final pass."""
        done = {p["step"] for p in body["points"]}
        steps = checkpoint_steps(directory)
        for step in steps:
            if step in done or (step % FLAGS.every and not (final and step == steps[-1])):
                continue  # while following, the newest rolling checkpoint is not a point of the curve
            try:
                results = evaluate_checkpoint(options, os.path.join(directory, f"ckpt-{step}"), dataset,
                                              split.test, FLAGS.protocols, FLAGS.precise_bn, train_records)
            except (tf.errors.OpError, ValueError) as e:
                if final or step != steps[-1]:
                    raise
                logging.info("ckpt-%d not readable yet (%s); retrying at the next poll", step, type(e).__name__)
                continue
            point = {"step": step, "epochs": step / run["steps_per_epoch"], "pairs_seen": step * per_step,
                     "results": results}
            provenance.add_point(body, record, point)
            body["points"].append(point)
            body["points"].sort(key=lambda p: p["step"])
            os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
            fileio.write_json(out_json, body)
            fileio.write_text(FLAGS.out + ".md", markdown(body))
            plot(body, FLAGS.out + ".png", paper_rank1=FLAGS.paper_rank1)

    # --follow: evaluate each checkpoint as the run writes it, until the training holding the workdir
    # ends; then one last pass, for the checkpoint it saves on its way out.
    while FLAGS.follow and (pid := workdir.holder(FLAGS.workdir)) is not None:
        evaluate_new(final=False)
        logging.log_every_n_seconds(logging.INFO, "following the training of pid %d; next poll in %d s",
                                    600, pid, FLAGS.poll_seconds)
        time.sleep(FLAGS.poll_seconds)
    evaluate_new(final=True)
    print(markdown(body))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "the training run (its run.json)", required=True)
    flags.DEFINE_string("checkpoints", None, "folder of its checkpoints (default: WORKDIR/checkpoints)")
    flags.DEFINE_string("out", None, "output prefix, e.g. results/cuhk01_l23_curve", required=True)
    flags.DEFINE_list("protocols", list(evaluate.SINGLE_SHOT_PROTOCOLS), "test protocols")
    flags.DEFINE_float("paper_rank1", None, "the paper's rank-1 for this row, drawn dashed (e.g. 86.55)")
    flags.DEFINE_integer("every", 1, "evaluate checkpoints whose step is a multiple of this (and the last)")
    flags.DEFINE_boolean("follow", False, "while a training holds WORKDIR, keep evaluating its new checkpoints "
                         "as they appear; exit after it ends (run it niced beside the training)")
    flags.DEFINE_integer("poll_seconds", 60, "--follow: seconds between looks for new checkpoints")
    flags.DEFINE_integer("precise_bn", 0, "re-estimate BN statistics over this many of the run's training "
                         "batches before evaluating each checkpoint (0: as trained, the paper's way; "
                         "reid_tf.precise_bn). Such a curve is left out of reproduce's table")
    cli.run(main)
