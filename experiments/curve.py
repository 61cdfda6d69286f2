"""Accuracy against pairs seen for one training run, from its saved checkpoints, under both test
protocols:

    python -m experiments.curve --workdir=runs/cuhk01_l23 --checkpoints=runs/cuhk01_l23/checkpoints \\
        --out=results/cuhk01_l23_cross_camera_curve [--protocols=single_shot,random_gallery] [--every=395]

Each checkpoint (ckpt-<step>) whose step is a multiple of --every, or the last one, is restored into
the run's preset and evaluated on the run's test split (reid_tf.protocols.evaluate_network);
--checkpoints must be inside --workdir, so that no other run's weights meet this run's test split. The
points are added to OUT.json (finished points are kept, so the command can be rerun as a run goes
on; a rerun with other --protocols adds the protocols a point lacks), and OUT.md (a table) and
OUT.png (rank-1 against pairs seen, one line per protocol) are rewritten. Commit these small files
under results/ so the curve survives a change of machine. One curve has one writer at a time (a lock
beside OUT.json: a second command on the same --out is refused, naming the first one's pid). A
checkpoint that does not restore (truncated, damaged) is set aside in its folder's damaged/ with a
warning, as training does, and the curve goes on; a curve with no point at all is an error.

With --follow it runs beside a training (start both, the curve niced) and evaluates each checkpoint
as it appears, until the training that holds the workdir ends (reid_tf.run_folder.holder); then it
evaluates what is left, the last checkpoint included, and exits:

    nice -n 19 python -m experiments.curve --workdir=RUN --checkpoints=RUN/checkpoints/kept \
        --out=results/NAME_curve --follow &
"""
from __future__ import annotations

import json
import os
import time

from absl import flags, logging

from experiments import plots
from reid_tf import checkpoints, cli, datasets, pairs, provenance, report, run_folder
from reid_tf import precise_bn as precise_bn_lib
from reid_tf.model import build_model
from reid_tf.pair_trainer import PairTrainer
from reid_tf.protocols import SINGLE_SHOT_PROTOCOLS, evaluate_network
from reid_tf.run_options import TrainOptions, read_run, run_dataset, run_setting, training_data

FLAGS = flags.FLAGS
COLOURS = {"single_shot": (31, 119, 180), "random_gallery": (214, 39, 40)}


def pairs_per_step(run: TrainOptions, records) -> int:
    """Pairs a step of this run trains on (a shared batch holds 3K²V pairs, not batch_size)."""
    if run.pairing == "shared":
        return pairs.shared_batch_shape(records, run.batch_size, run.shared_images_per_camera, run.recipe)[1]
    return run.batch_size


checkpoint_steps = run_folder.checkpoint_steps


class DamagedCheckpoint(Exception):
    """A checkpoint that does not restore into the run's network (truncated, damaged, missing shard)."""


def restored_network(run: TrainOptions, path: str):
    """The run's network with the weights of checkpoint `path`; DamagedCheckpoint if they do not restore."""
    network = build_model(run.model)
    try:
        checkpoints.restore_weights(network, path)
    except Exception as e:  # noqa: BLE001  (DataLossError, IndexError, NotFoundError, AssertionError, ...)
        raise DamagedCheckpoint(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    return network


def evaluate_checkpoint(run: TrainOptions, path: str, dataset, test_ids, protocols, precise_bn: int = 0,
                        train_records=None) -> dict:
    """Test CMC and mAP of checkpoint `path` under each protocol; with precise_bn = N > 0, on BN
    statistics re-estimated over the N training batches the run would train on next (reid_tf.precise_bn).
    DamagedCheckpoint when its weights do not restore."""
    network = restored_network(run, path)
    if precise_bn:
        step = checkpoints.checkpoint_step(path)
        batches = training_data(run, train_records, dataset.spec.crops_per_image, step)
        used = precise_bn_lib.recalibrate(PairTrainer(network), batches, precise_bn)
        logging.info("%s: BN statistics re-estimated over %d training batches from step %d",
                     os.path.basename(path), used, step)
    out = {}
    for protocol in protocols:
        per_trial = evaluate_network(network, dataset, test_ids, run.trial, run.seed, protocol=protocol)
        out[protocol] = report.eq7_figures(report.summarize([per_trial]))
        if split := report.summarize_camera_split([per_trial]):  # [31]'s protocol: same / other camera
            out[protocol]["camera_split"] = split
        logging.info("%s, %s: rank-1/5/10 %.1f / %.1f / %.1f, mAP %.1f", os.path.basename(path), protocol,
                     *list(out[protocol].values())[:4])
    return out


def bn_note(run: dict) -> str:
    return report.bn_note(run.get("precise_bn", 0))


def markdown(body: dict) -> str:
    run = body["run"]
    return report.curve_markdown(body, f"{run['dataset']} / {run['model']} / recipe {run_setting(run, 'recipe')} / "
                                       f"pairing {run_setting(run, 'pairing')} / trial {run['trial']}{bn_note(run)}")


def plot(body: dict, path: str, size=(720, 440), paper_rank1: float | None = None) -> None:
    """Rank-1 (%) against pairs seen, one line per protocol, the paper's rank-1 dashed."""
    w, h = size
    image, draw = plots.new_image(size)
    points, run = body["points"], body["run"]
    series = [plots.Series(protocol, colour,
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
    unknown = [p for p in FLAGS.protocols if p not in SINGLE_SHOT_PROTOCOLS]
    if unknown:  # before any checkpoint is evaluated
        raise cli.UsageError(f"unknown --protocols {', '.join(unknown)}; valid: "
                             f"{', '.join(SINGLE_SHOT_PROTOCOLS)}")
    if FLAGS.precise_bn < 0:
        raise cli.UsageError(f"--precise_bn={FLAGS.precise_bn}: a number of batches, 0 for none")
    directory = FLAGS.checkpoints or run_folder.checkpoint_dir(FLAGS.workdir)
    inside = os.path.realpath(directory).startswith(os.path.realpath(FLAGS.workdir) + os.sep)
    if not inside:  # another run's weights would be tested on this run's split, which it may have trained on
        raise cli.UsageError(f"--checkpoints {directory} is not inside --workdir {FLAGS.workdir}: a curve "
                             "evaluates a run's own checkpoints on that run's test split; give the run's workdir")
    if not os.path.isdir(directory):
        raise cli.UsageError(f"--checkpoints {directory}: no such folder; give the folder of the run's checkpoints "
                             "(WORKDIR/checkpoints, or WORKDIR/checkpoints/kept for a run with --keep_every)")
    run = read_run(FLAGS.workdir)
    options, dataset = run_dataset(FLAGS.workdir)  # refuses data that is not what the run trained on
    out_json = FLAGS.out + ".json"
    with run_folder.lock_file(out_json, "--out"):  # one writer: read, add points, write
        body = read_curve(out_json)
        check_same_curve(body, run, out_json)
        body["run"] = run_record(run)
        record = provenance.start(run_id=run.get("run_id"), gallery_seed=options.seed, steps=[])
        follow_and_evaluate(body, directory, options, dataset, record)
    if not body["points"]:
        steps = checkpoint_steps(directory)
        raise cli.UsageError(f"{directory}: no checkpoint gave a point of the curve (checkpoints found: "
                             f"{', '.join(f'ckpt-{s}' for s in steps) or 'none'}); nothing written to {out_json}. "
                             "Give the folder that holds the run's checkpoints (train with --keep_every to keep "
                             "them), or wait for the run to write some")
    print(markdown(body))


def read_curve(path: str) -> dict:
    """The curve file's body ({"points": []} when there is none); a damaged one is an error naming it."""
    if not os.path.isfile(path):
        return {"points": []}
    try:
        with open(path) as f:
            body = json.load(f)
        if not isinstance(body, dict) or not all(isinstance(p["results"], dict) and isinstance(p["step"], int)
                                                 for p in body["points"]):
            raise ValueError("not a curve: a JSON object with a list of points expected")
    except (ValueError, KeyError, TypeError) as e:
        raise cli.UsageError(f"{path} is damaged ({str(e).splitlines()[0][:160]}); restore it (from git, if it "
                             "is committed) or move it away to compute the curve again") from None
    return body


def check_same_curve(body: dict, run: dict, out_json: str) -> None:
    """A curve holds the points of one run evaluated one way: refuse adding to another's."""
    if body["points"] and body.get("run", {}).get("precise_bn", 0) != FLAGS.precise_bn:
        raise cli.UsageError(f"{out_json} holds points with --precise_bn={body['run'].get('precise_bn', 0)}, "
                             f"not {FLAGS.precise_bn}: one curve, one way of evaluating; give another --out")
    if body["points"] and body.get("run", {}).get("run_id") != run.get("run_id"):
        raise cli.UsageError(f"{out_json} holds points of another run than {FLAGS.workdir}'s (run_id "
                             f"{body['run'].get('run_id')}, now {run.get('run_id')}; the workdir was started "
                             "afresh): one curve, one run; give another --out, or another --trial")


def run_record(run: dict) -> dict:
    """The settings of the run a curve file records."""
    record = {k: run_setting(run, k) for k in ("dataset", "model", "trial", "seed", "batch_size", "recipe",
                                               "pairing", "shared_images_per_camera", "steps_per_epoch",
                                               "total_steps", "learning_rate", "val_identities",
                                               "test_identities", "init_from")}
    record["precise_bn"] = FLAGS.precise_bn
    record["run_id"] = run.get("run_id")
    return record


def write_curve(body: dict) -> None:
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    report.write(FLAGS.out, body, markdown(body))
    plot(body, FLAGS.out + ".png", paper_rank1=FLAGS.paper_rank1)


def set_aside(directory: str, path: str, error: str, noted: set) -> None:
    """A checkpoint that does not restore: moved to directory/damaged/ with a warning, as training
    does; while a training holds the workdir it is only skipped (warned once), the training's own."""
    if run_folder.holder(FLAGS.workdir) is not None:
        if path not in noted:
            logging.warning("%s does not restore (%s); skipped while the training runs", path, error)
            noted.add(path)
        return
    logging.warning("%s is damaged (%s); moved to %s, and the curve goes on without it", path, error,
                    checkpoints.set_aside_damaged(directory, path))


def follow_and_evaluate(body: dict, directory: str, options: TrainOptions, dataset, record: dict) -> None:
    """Add to `body` (writing the files after each point) a point per checkpoint of `directory` that
    the curve lacks, and the protocols of --protocols an existing point lacks. With --follow, each
    checkpoint as the training holding the workdir writes it, until that training ends; then one last
    pass, for the checkpoint it saves on its way out. Each point names the invocation (`record`,
    reid_tf.provenance) that evaluated it last."""
    split = options.split(dataset)
    train_records = datasets.records_of(dataset, split.train)
    per_step = pairs_per_step(options, train_records)
    noted: set = set()

    def evaluate_new(final: bool) -> None:
        """The newest checkpoint is skipped while the run may still be publishing it (it is retried at
        the next poll), except in the final pass."""
        points = {p["step"]: p for p in body["points"]}
        steps = checkpoint_steps(directory)
        for step in steps:
            point = points.get(step)
            todo = [p for p in FLAGS.protocols if point is None or p not in point["results"]]
            if not todo or (point is None and step % FLAGS.every and not (final and step == steps[-1])):
                continue  # while following, the newest rolling checkpoint is not a point of the curve
            path = os.path.join(directory, f"ckpt-{step}")
            try:
                results = evaluate_checkpoint(options, path, dataset, split.test, todo, FLAGS.precise_bn,
                                              train_records)
            except DamagedCheckpoint as e:
                if not final and step == steps[-1]:
                    logging.info("ckpt-%d not readable yet (%s); retrying at the next poll", step, e)
                else:
                    set_aside(directory, path, str(e), noted)
                continue
            if point is None:
                point = {"step": step, "epochs": step / body["run"]["steps_per_epoch"],
                         "pairs_seen": step * per_step, "results": results}
                body["points"].append(point)
                body["points"].sort(key=lambda p: p["step"])
            else:
                point["results"].update(results)
            provenance.add_point(body, record, point)
            write_curve(body)

    while FLAGS.follow and (pid := run_folder.holder(FLAGS.workdir)) is not None:
        evaluate_new(final=False)
        logging.log_every_n_seconds(logging.INFO, "following the training of pid %d; next poll in %d s",
                                    600, pid, FLAGS.poll_seconds)
        time.sleep(FLAGS.poll_seconds)
    evaluate_new(final=True)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "the training run (its run.json)", required=True)
    flags.DEFINE_string("checkpoints", None, "folder of its checkpoints (default: WORKDIR/checkpoints)")
    flags.DEFINE_string("out", None, "output prefix, e.g. results/cuhk01_l23_curve", required=True)
    flags.DEFINE_list("protocols", list(SINGLE_SHOT_PROTOCOLS), "test protocols")
    flags.DEFINE_float("paper_rank1", None, "the paper's rank-1 for this row, drawn dashed (e.g. 86.55)")
    flags.DEFINE_integer("every", 1, "evaluate checkpoints whose step is a multiple of this (and the last)")
    flags.DEFINE_boolean("follow", False, "while a training holds WORKDIR, keep evaluating its new checkpoints "
                         "as they appear; exit after it ends (run it niced beside the training)")
    flags.DEFINE_integer("poll_seconds", 60, "--follow: seconds between looks for new checkpoints")
    flags.DEFINE_integer("precise_bn", 0, "re-estimate BN statistics over this many of the run's training "
                         "batches before evaluating each checkpoint (0: as trained, the paper's way; "
                         "reid_tf.precise_bn). Such a curve is left out of reproduce's table")
    cli.run(main)
