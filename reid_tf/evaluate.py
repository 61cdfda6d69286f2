"""Test CMC evaluation of training runs (§4.1): `python -m reid_tf.evaluate --workdir=runs/x[,runs/y,...]`.

One trained model belongs to one trial (its split decides which identities it trained on), so the
protocol's trials are evaluated by passing the workdirs of the per-trial runs; the results are the
mean ± std over them (`make reproduce-table2` does exactly this). Per trial, the gallery is ranked
by Eq. 7 (the paper's score), and also by p(match) alone and by d alone, under the protocols of
reid_tf.protocols (--protocol); CMC rank-1/5/10, the whole curve and mAP are written as JSON and as
a markdown table (reid_tf.report). A finished run's eval json is reused when it is newer than its
network.

--checkpoint=PATH.keras evaluates a saved network on --dataset/--trial/--seed instead of a workdir.
"""
from __future__ import annotations

import dataclasses
import json
import os

from absl import flags, logging

from reid_tf import cli, config, datasets, provenance, run_folder
from reid_tf.cli import UsageError
from reid_tf.protocols import (PROTOCOL_TITLES, SINGLE_SHOT_PROTOCOLS, evaluate_network, evaluate_standard,
                               single_shot)
from reid_tf.report import (bn_note, evaluation_markdown, markdown, shortlist_markdown, summarize,
                            summarize_camera_split, write)
from reid_tf.run_folder import eval_prefix, load_network, model_precise_bn, read_history
from reid_tf.run_options import TrainOptions, check_run_data, read_run, run_dataset, run_setting

# The modules that load TensorFlow (model, scoring, shortlist, checkpoints, visrank) are imported inside
# the functions that need them: --help, a usage error and reid_tf.train's import of this module
# (before it checks its options) then do not wait seconds for TensorFlow to start.


def evaluate_workdir(workdir: str, network=None, repeats: int = 1, protocol: str = "single_shot",
                     shortlist: int | None = None) -> dict:
    """Evaluate a training run on its trial's test split; writes workdir/eval.json and eval.md
    (eval_<protocol>.* for another protocol). A run stopped before writing model.keras is evaluated
    from its newest good checkpoint (checkpoints.run_network). Standard-protocol datasets (Market-1501, ...)
    are evaluated on their query / gallery with two-stage scoring, K = `shortlist` (default
    config.SHORTLIST_K), and write eval_standard.*."""
    run, dataset = run_dataset(workdir)  # refuses data that is not what the run trained on
    record = provenance.start(run_id=read_run(workdir).get("run_id"), gallery_seed=run.seed)
    source, step = run_folder.model_file(workdir), None  # a network passed in: the final one
    if network is None:
        from reid_tf.checkpoints import run_network  # loads TensorFlow: see the imports
        network, source, step = run_network(workdir, run.model)
    split = run.split(dataset)
    if dataset.spec.protocol == datasets.STANDARD:  # Market-1501 and since: fixed query / gallery
        protocol = "standard"
        per_trial = evaluate_standard(network, dataset.query, dataset.gallery, shortlist or config.SHORTLIST_K)
    else:
        per_trial = evaluate_network(network, dataset, split.test, run.trial, run.seed, repeats, protocol)
    summary = summarize([per_trial])
    chance = {str(k): 100 * min(1.0, k / len(split.test)) for k in config.RANKS}
    precise = model_precise_bn(workdir) if step is None else 0  # a checkpoint: moving averages
    body = {"dataset": run.dataset, "model": run.model, "trial": run.trial,
            "protocol": protocol, "protocol_title": PROTOCOL_TITLES[protocol],
            "network": source, "step": step, "precise_bn": precise, "test_identities": len(split.test),
            "chance": chance, "summary": summary, "camera_split": summarize_camera_split([per_trial]),
            "per_trial": per_trial, "provenance": provenance.finish(record)}
    title = (f"{run.dataset} / {run.model} / trial {run.trial} ({len(split.test)} test identities)"
             f"{f', checkpoint at step {step}' if step is not None else ''}{bn_note(precise)}"
             f" — protocol {protocol}: {PROTOCOL_TITLES[protocol]}")
    write(eval_prefix(workdir, protocol), body, evaluation_markdown(body, title))
    eq7 = summary["eq7"]["rank"]
    logging.info("test CMC (%s, Eq. 7): rank-1 %.2f%%  rank-5 %.2f%%  rank-10 %.2f%%  (chance %.2f%%)",
                 title, eq7["1"]["mean"], eq7["5"]["mean"], eq7["10"]["mean"], chance["1"])
    return body


def _evaluated(workdir: str, repeats: int, protocol: str = "single_shot") -> dict | None:
    """The workdir's eval json of `protocol` if it holds its draws and is newer than its model."""
    path, model = eval_prefix(workdir, protocol) + ".json", run_folder.model_file(workdir)
    if not (os.path.isfile(path) and os.path.isfile(model)) or os.path.getmtime(path) < os.path.getmtime(model):
        return None
    draws = 1 if protocol == "standard" else repeats * (config.RANDOM_GALLERY_DRAWS if protocol == "random_gallery" else 1)
    try:
        with open(path) as f:
            body = json.load(f)
        ok = body.get("protocol", "single_shot") == protocol and len(body["per_trial"]["eq7"]["curves"]) == draws
        summarize([body["per_trial"]])  # every ranking readable, as the mean over trials reads it
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:  # damaged, or of another shape
        logging.warning("%s is damaged or not an evaluation (%s: %s); evaluating %s again, which rewrites it",
                        path, type(e).__name__, str(e).splitlines()[0][:120] if str(e) else "", workdir)
        return None
    return body if ok else None


def check_data_if_present(workdir: str) -> None:
    """When the data the run in `workdir` names is there, it must be what the run trained on
    (run_options.check_run_data); absent data is left to what needs it (a reused eval.json does not)."""
    record = read_run(workdir)
    run = dataclasses.replace(TrainOptions.from_record(record), workdir=workdir)
    if os.path.isfile(os.path.join(datasets.dataset_dir(run.dataset, run.data_dir), datasets.MANIFEST)):
        check_run_data(record, run)


# What a mean over trials must share: one dataset, preset, recipe and protocol (a mean over others
# would describe none of them); and each trial counted once.
SHARED_BY_TRIALS = ("dataset", "model", "recipe")


def check_trials(workdirs: list[str], protocol: str) -> None:
    """Refuse (UsageError, one line) workdirs whose mean would not be a mean over trials of one
    setting: networks with BN statistics of different kinds (model.json), runs of another dataset,
    preset or recipe (protocol: the one asked for, or the standard protocol of their dataset, so the
    dataset decides it), the same workdir twice, or the same trial (trial and seed: its split) or
    run twice."""
    kinds = {w: model_precise_bn(w) if os.path.isfile(run_folder.model_file(w)) else 0 for w in workdirs}
    if len(set(kinds.values())) > 1:  # a mean over networks evaluated two ways would describe neither
        raise UsageError(f"the runs' networks have BN statistics of different kinds (--precise_bn "
                         f"{', '.join(f'{k} in {w}' for w, k in kinds.items())}); resume them with one --precise_bn")
    seen: dict[object, str] = {}
    first, first_run = workdirs[0], None
    for w in workdirs:
        real = os.path.realpath(w)
        if real in seen:
            raise UsageError(f"--workdir lists {w} twice ({seen[real]}): a mean over trials counts each run "
                             "once; give each trial's workdir once")
        seen[real] = w
        run = read_run(w)
        if first_run is None:
            first_run = run
        differ = [f"{n} {run_setting(first_run, n)} in {first}, {run_setting(run, n)} in {w}"
                  for n in SHARED_BY_TRIALS if run_setting(run, n) != run_setting(first_run, n)]
        if differ:
            raise UsageError(f"--workdir: the runs differ in {'; '.join(differ)} (protocol {protocol}): a mean "
                             "over trials is of one dataset, preset and recipe; evaluate them separately")
        trial = (run_setting(run, "trial"), run_setting(run, "seed"))  # its split
        for key in (("run", run.get("run_id") or real), ("trial", trial)):
            if key in seen:
                raise UsageError(f"--workdir: {w} and {seen[key]} are the same {key[0]} (trial {trial[0]}, "
                                 f"seed {trial[1]}): a mean over trials counts each trial once; give the "
                                 "workdirs of distinct trials")
            seen[key] = w


def evaluate_workdirs(workdirs: list[str], out_prefix: str, repeats: int = 1, reuse: bool = True,
                      protocol: str = "single_shot", shortlist: int | None = None) -> dict:
    """Evaluate the runs of several trials and write the mean ± std over them to out_prefix.{json,md}.

    reuse: take a run's eval json when it is newer than its model.keras (the trainer writes it).
    Under protocol random_gallery the ± is the spread of the trials' means (each over its gallery draws).
    """
    def protocol_of(workdir: str) -> str:  # standard-protocol datasets have their own (evaluate_workdir)
        standard = datasets.REGISTRY[TrainOptions.load(workdir).dataset].protocol == datasets.STANDARD
        return "standard" if standard else protocol

    check_trials(workdirs, protocol)  # before any evaluation
    for w in workdirs:  # a reused evaluation too: data that is no longer the run's is said, not hidden
        check_data_if_present(w)
    record = provenance.start(run_id=",".join(str(read_run(w).get("run_id")) for w in workdirs))
    bodies = [(reuse and _evaluated(w, repeats, protocol_of(w)))
              or evaluate_workdir(w, repeats=repeats, protocol=protocol, shortlist=shortlist)
              for w in workdirs]
    precise = {b.get("precise_bn", 0) for b in bodies}
    if len(precise) > 1:  # a mean over networks evaluated two ways would describe neither
        raise UsageError(f"the runs' networks have BN statistics of different kinds (--precise_bn "
                         f"{', '.join(str(b.get('precise_bn', 0)) + ' in ' + w for b, w in zip(bodies, workdirs))}); "
                         "resume them with one --precise_bn")
    summary = summarize([b["per_trial"] for b in bodies], trial_means=protocol == "random_gallery")
    title = (f"{bodies[0]['dataset']} / {bodies[0]['model']} / {len(bodies)} trial(s){bn_note(precise.pop())} "
             f"— protocol {protocol}: {PROTOCOL_TITLES[protocol]}")
    body = {"dataset": bodies[0]["dataset"], "model": bodies[0]["model"], "protocol": protocol,
            "trials": [b["trial"] for b in bodies], "precise_bn": bodies[0].get("precise_bn", 0),
            "summary": summary, "camera_split": summarize_camera_split([b["per_trial"] for b in bodies]),
            "gallery_seeds": [b.get("provenance", {}).get("gallery_seed", provenance.UNKNOWN) for b in bodies],
            "provenance": provenance.finish(record)}
    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    write(out_prefix, body, evaluation_markdown(body, title))
    return body


def _checkpoint_run() -> TrainOptions:
    """The run a --checkpoint is evaluated as: --dataset, --data_dir, --trial, --seed, the protocol's
    split sizes."""
    f = flags.FLAGS
    return TrainOptions(dataset=f.dataset, data_dir=f.data_dir, trial=f.trial, seed=f.seed)


def _last_validated_step(workdir: str) -> int:
    """The step of the run's last validation (history.json), 0 when it has none; a damaged
    history.json is said in one line, and the step is then 0 too."""
    history = read_history(workdir, if_damaged="the TensorBoard pictures go to step 0")
    return int(history[-1]["step"]) if history else 0


def visrank(n: int, workdir: str | None = None, checkpoint: str | None = None, out: str | None = None) -> str:
    """--visrank=N: ranked-results pictures of N test queries (reid_tf.visrank.visrank_trial).

    A workdir's go to workdir/visrank and to TensorBoard (workdir/tb/test, beside the Figure 4
    panels, at the last validated step); a checkpoint's to <checkpoint>_visrank (or --out). Returns
    the folder.
    """
    from reid_tf.visrank import visrank_trial  # loads TensorFlow: see the imports

    if workdir:
        from reid_tf.checkpoints import run_network  # loads TensorFlow: see the imports
        run, dataset = run_dataset(workdir)
        network = run_network(workdir, run.model)[0]
        folder, tb = run_folder.visrank_dir(workdir), run_folder.tensorboard_dir(workdir, "test")
    else:
        run, network = _checkpoint_run(), load_network(checkpoint)
        folder, tb = out or os.path.splitext(checkpoint)[0] + "_visrank", None
        dataset = run.load_dataset()
    step = _last_validated_step(workdir) if workdir else 0
    visrank_trial(network, dataset, run.split(dataset).test, run.trial, run.seed, n, folder, tb, step,
                  title=f"{dataset.name} / {network.name} / trial {run.trial}: {n} test queries")
    logging.info("ranked results of %d test queries: %s", n, os.path.join(folder, "index.html"))
    return folder


def main(argv):
    del argv
    f = flags.FLAGS
    unknown = [p for p in f.protocol if p not in SINGLE_SHOT_PROTOCOLS]
    if unknown:
        raise UsageError(f"unknown --protocol {', '.join(unknown)}; valid: {', '.join(SINGLE_SHOT_PROTOCOLS)}")
    if f.checkpoint:
        record = provenance.start(gallery_seed=f.seed, network=f.checkpoint)
        run, network = _checkpoint_run(), load_network(f.checkpoint)
        dataset = run.load_dataset()
        if dataset.spec.protocol == datasets.STANDARD:
            per_trial = evaluate_standard(network, dataset.query, dataset.gallery, f.shortlist)
        else:
            per_trial = evaluate_network(network, dataset, run.split(dataset).test, run.trial, run.seed,
                                         f.repeats)
        summary = summarize([per_trial])
        table = markdown(summary, f"{f.dataset} / {f.checkpoint} / trial {f.trial}")
        write(f.out or os.path.splitext(f.checkpoint)[0] + "_eval",
              {"summary": summary, "provenance": provenance.finish(record)}, table)
    elif f.workdir and f.shortlist_study:
        from reid_tf.checkpoints import run_network  # loads TensorFlow: see the imports
        from reid_tf.scoring import ScoringEngine
        from reid_tf.shortlist import shortlist_study

        run, dataset = run_dataset(f.workdir)
        network = run_network(f.workdir, run.model)[0]
        queries, gallery = single_shot(dataset, run.split(dataset).test, run.trial, run.seed)
        study = shortlist_study(ScoringEngine(network), queries, gallery, [int(k) for k in f.shortlist_study])
        table = shortlist_markdown(study, f"{run.dataset} / {run.model} / trial {run.trial}")
        write(run_folder.shortlist_prefix(f.workdir), study, table)
    elif f.workdir:
        workdirs, tables = f.workdir.split(","), []
        for protocol in f.protocol:  # several protocols: their tables one after the other
            body = evaluate_workdirs(workdirs, f.out or eval_prefix(workdirs[0], protocol, trials=True),
                                     f.repeats, protocol=protocol, shortlist=f.shortlist)
            title = f"{body['dataset']} / {body['model']} — protocol {protocol}: {PROTOCOL_TITLES[protocol]}"
            tables.append(evaluation_markdown(body, title))
        table = "\n".join(tables)
    else:
        raise UsageError("pass --workdir=DIR[,DIR...] or --checkpoint=PATH.keras")
    print(table)
    if f.visrank:
        for workdir in (f.workdir.split(",") if f.workdir else [None]):
            visrank(f.visrank, workdir, f.checkpoint, f.out and f.out + "_visrank")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "training workdir(s), comma-separated (one per trial)")
    flags.DEFINE_string("checkpoint", None, "a saved network (.keras) instead of a workdir")
    flags.DEFINE_string("dataset", "synthetic", "dataset for --checkpoint")
    flags.DEFINE_string("data_dir", "data", "data root for --checkpoint")
    flags.DEFINE_integer("trial", 0, "trial for --checkpoint")
    flags.DEFINE_integer("seed", 0, "seed for --checkpoint")
    flags.DEFINE_integer("repeats", 1, "single-shot draws per trial (repeat r uses seed + r)")
    flags.DEFINE_list("protocol", ["single_shot"], "test protocol(s), comma-separated: single_shot "
                      "(ours), random_gallery ([31]'s, which §4.1 follows for CUHK01); both: single_shot,random_gallery")
    flags.DEFINE_string("out", None, "output prefix for .json / .md")
    flags.DEFINE_integer("shortlist", config.SHORTLIST_K, "standard-protocol datasets (Market-1501, ...): "
                         "Eq. 7 on each query's K nearest gallery images by d (reid_tf.shortlist)")
    flags.DEFINE_list("shortlist_study", None, "e.g. 10,20,50: compare two-stage scoring (top-K by d, then "
                      "Eq. 7) with exhaustive scoring on --workdir's test split")
    flags.DEFINE_integer("visrank", 0, "also write ranked-results pictures (and TensorBoard images) of "
                         "this many test queries")
    cli.run(main)
