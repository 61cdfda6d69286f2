"""Single-shot CMC evaluation (§4.1): `python -m reid_tf.evaluate --workdir=runs/x[,runs/y,...]`.

One trained model belongs to one trial (its split decides which identities it trained on), so the
protocol's trials are evaluated by passing the workdirs of the per-trial runs; the results are the
mean ± std over them (`make reproduce-table2` does exactly this). Per trial, the gallery is ranked
by Eq. 7 (the paper's score), and also by p(match) alone and by d alone; CMC rank-1/5/10, the whole
curve and mAP are written as JSON and as a markdown table.

--checkpoint=PATH.keras evaluates a saved network on --dataset/--trial/--seed instead of a workdir.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
from absl import flags, logging

from reid_tf import cli, config, datasets, fileio, metrics, provenance, run_folder
from reid_tf.cli import UsageError
from reid_tf.images import load_images
from reid_tf.rank import visrank_trial
from reid_tf.run_folder import eval_prefix, load_network, model_precise_bn, read_history
from reid_tf.run_options import TrainOptions, check_run_data, read_run, run_dataset, run_setting

# The modules that load TensorFlow (model, scoring, shortlist, checkpoints) are imported inside the
# functions that need them: --help, a usage error and reid_tf.train's import of this module (before
# it checks its options) then do not wait seconds for TensorFlow to start.

RANKINGS = {"eq7": "score", "p_match": "p_match", "distance": "distance"}
# The protocols evaluate_network serves, chosen with --protocol (datasets of the paper's kind).
SINGLE_SHOT_PROTOCOLS = ("single_shot", "xcorr")
PROTOCOL_TITLES = {
    "single_shot": "single-shot, camera-A query vs one camera-B image per identity (DESIGN \"Protocols\")",
    "xcorr": "[31]'s test: one random gallery image per identity from either camera, every other "
             f"image a probe, mean over {config.XCORR_GALLERY_DRAWS} gallery draws",
    # Not chosen with --protocol: the protocol of Market-1501, DukeMTMC-reID and CUHK03-NP, always theirs.
    "standard": "standard (Market-1501): every query against the gallery without same-camera matches "
                "and junk, Eq. 7 on the K nearest by d (reid_tf.shortlist)",
}


def _add(out: dict, scores: dict, q_ids: np.ndarray, g_ids: np.ndarray) -> None:
    """Append the CMC curve and mAP of every ranking of one (queries × gallery) score dict."""
    for name, key in RANKINGS.items():
        s = -scores[key] if key == "distance" else scores[key]  # higher = more similar
        out[name]["curves"].append(metrics.cmc(s, q_ids, g_ids).tolist())
        out[name]["map"].append(float(metrics.mean_average_precision(s, q_ids, g_ids)))


def xcorr_draws(records: list[datasets.Record], seed: int, draws: int = config.XCORR_GALLERY_DRAWS
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """[31]'s test protocol (src/test.lua, src/doallTest.lua of InnovArul/personreid_normxcorr):
    per draw, one image per identity, from either camera, is the gallery and every other image of
    every identity a probe. Returns, per draw, (probe positions, gallery positions) into records;
    the gallery in identity order, drawn from default_rng([seed, 4, draw])."""
    identities = np.array([r.identity for r in records])
    out = []
    for d in range(draws):
        rng = np.random.default_rng([seed, 4, d])
        gallery = np.array([rng.choice(np.flatnonzero(identities == i)) for i in np.unique(identities)])
        out.append((np.setdiff1d(np.arange(len(records)), gallery), gallery))
    return out


def camera_split(score: np.ndarray, q_ids: np.ndarray, q_cams: np.ndarray, g_ids: np.ndarray,
                 g_cams: np.ndarray) -> dict:
    """Top-1 (%) of one [31]-protocol draw for the probes whose gallery image of their identity is from
    their own camera ("same_camera", the easier kind) and from the other ("cross_camera"), with the
    number of probes of each kind."""
    gallery_camera = dict(zip(g_ids.tolist(), g_cams.tolist()))
    own = q_cams == np.array([gallery_camera[i] for i in q_ids.tolist()])
    return {kind: {"rank1": 100 * float(metrics.cmc(score[mask], q_ids[mask], g_ids, max_rank=1)[0])
                   if mask.any() else None, "probes": int(mask.sum())}
            for kind, mask in (("same_camera", own), ("cross_camera", ~own))}


def evaluate_network(network, dataset: datasets.Dataset, identities: list[int], trial: int,
                     seed: int, repeats: int = 1, protocol: str = "single_shot") -> dict:
    """CMC / mAP of `network` on the test identities under a protocol (PROTOCOL_TITLES).

    single_shot: repeat r draws its queries and gallery with seed + r (repeat 0 is the protocol's).
    xcorr: every test image scored against every other once; each of the repeats ×
      XCORR_GALLERY_DRAWS gallery draws is then read from that matrix (draw seed: seed + r).
    Returns {ranking: {"curves": [...], "map": [...]}} with one entry per draw.
    """
    from reid_tf.scoring import ScoringEngine  # loads TensorFlow: see the imports

    if protocol not in SINGLE_SHOT_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(SINGLE_SHOT_PROTOCOLS)} "
                         "(standard-protocol datasets: evaluate_standard)")
    engine = ScoringEngine(network)
    out = {name: {"curves": [], "map": []} for name in RANKINGS}
    if protocol == "xcorr":
        records = datasets.records_of(dataset, identities)
        ids = np.array([r.identity for r in records])
        features = engine.image_features(load_images([r.path for r in records]))
        everything = engine.score_matrix(features, features)  # (N, N): image_a = probe, image_b = gallery
        cams, out["camera_split"] = np.array([r.camera for r in records]), []
        for r in range(repeats):
            for probes, gallery in xcorr_draws(records, seed + r):
                scores = {k: everything[k][np.ix_(probes, gallery)] for k in RANKINGS.values()}
                _add(out, scores, ids[probes], ids[gallery])
                out["camera_split"].append(camera_split(scores["score"], ids[probes], cams[probes], ids[gallery],
                                                        cams[gallery]))
        return out
    for r in range(repeats):
        queries, gallery = datasets.single_shot(dataset, identities, trial, seed + r)
        q_ids = np.array([q.identity for q in queries])
        g_ids = np.array([g.identity for g in gallery])
        scores = engine.score_matrix(load_images([q.path for q in queries]),
                                     load_images([g.path for g in gallery]))
        _add(out, scores, q_ids, g_ids)
    return out


def evaluate_standard(network, dataset: datasets.Dataset, k: int = config.STANDARD_SHORTLIST) -> dict:
    """The standard protocol (Market-1501 and since) on the dataset's fixed query and gallery, scored
    in two stages (reid_tf.shortlist: Eq. 7 on each query's K nearest gallery images by d).

    Returns the shape evaluate_network returns (one "repeat"), plus "standard": skipped queries,
    K, pairs scored and the wall time per stage.
    """
    from reid_tf.scoring import ScoringEngine  # loads TensorFlow: see the imports
    from reid_tf.shortlist import evaluate_standard as two_stage

    result = two_stage(ScoringEngine(network), dataset.query, dataset.gallery, k)
    out = {name: {"curves": [result[name]["curve"].tolist()], "map": [result[name]["map"]]}
           for name in RANKINGS}
    out["standard"] = {"skipped_queries": result["eq7"]["skipped"], "k": result["k"], "pairs": result["pairs"],
                       "queries": len(dataset.query), "gallery": len(dataset.gallery), "seconds": result["seconds"]}
    return out


def summarize(per_trial: list[dict], trial_means: bool = False) -> dict:
    """Mean ± std over every (trial, repeat) of rank-1/5/10, mAP and the mean curve, per ranking;
    trial_means: over the trials, each the mean of its draws ([31]'s protocol: the paper's ± is over
    trials, not over a trial's gallery draws)."""
    def draws(t: dict, name: str, key: str) -> list:
        values = t[name][key]
        if not trial_means:
            return values
        return [np.mean(values, axis=0).tolist()] if key == "curves" else [float(np.mean(values))]

    result = {}
    for name in RANKINGS:
        curves = [c for t in per_trial for c in draws(t, name, "curves")]
        maps = [m for t in per_trial for m in draws(t, name, "map")]
        s = metrics.summarize_trials(curves, config.RANKS)
        result[name] = {
            "rank": {str(k): {"mean": 100 * s["mean"][k], "std": 100 * s["std"][k]} for k in config.RANKS},
            "map": {"mean": 100 * float(np.mean(maps)), "std": 100 * metrics.spread(maps)},
            "curve": [100 * float(v) for v in s["mean_curve"]],
            "n": len(curves),
        }
    return result


def summarize_camera_split(per_trial: list[dict]) -> dict | None:
    """Mean ± std over every draw of camera_split's top-1 and probe counts; None without xcorr draws."""
    draws = [d for t in per_trial for d in t.get("camera_split", [])]
    if not draws:
        return None
    out = {}
    for kind in ("same_camera", "cross_camera"):
        top1 = [d[kind]["rank1"] for d in draws if d[kind]["rank1"] is not None]
        out[kind] = {"rank1": {"mean": float(np.mean(top1)) if top1 else None, "std": metrics.spread(top1)},
                     "probes": float(np.mean([d[kind]["probes"] for d in draws])), "draws": len(top1)}
    return out


def camera_split_markdown(split: dict | None) -> str:
    if not split:
        return ""
    cells = [f"{kind.replace('_', ' ')} {v['rank1']['mean']:.1f} ± {v['rank1']['std']:.1f} "
             f"({v['probes']:.0f} probes a draw)" for kind, v in split.items() if v["rank1"]["mean"] is not None]
    return ("\nTop-1 (Eq. 7) by where the probe's gallery image comes from, mean ± std over draws: "
            + "; ".join(cells) + "\n")


def markdown(summary: dict, title: str) -> str:
    lines = [f"### {title}", "", "| ranking | " + " | ".join(f"top-{k}" for k in config.RANKS) + " | mAP | n |",
             "|---|" + "---|" * (len(config.RANKS) + 2)]
    for name, r in summary.items():
        cells = [f"{r['rank'][str(k)]['mean']:.2f} ± {r['rank'][str(k)]['std']:.2f}" for k in config.RANKS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['map']['mean']:.2f} | {r['n']} |")
    return "\n".join(lines) + "\n"


def _write(prefix: str, body: dict, table: str) -> None:
    fileio.write_json(prefix + ".json", body)
    fileio.write_text(prefix + ".md", table)


def evaluate_workdir(workdir: str, network=None, repeats: int = 1, protocol: str = "single_shot",
                     shortlist: int | None = None) -> dict:
    """Evaluate a training run on its trial's test split; writes workdir/eval.json and eval.md
    (eval_<protocol>.* for another protocol). A run stopped before writing model.keras is evaluated
    from its newest good checkpoint (checkpoints.run_network). Standard-protocol datasets (Market-1501, ...)
    are evaluated on their query / gallery with two-stage scoring, K = `shortlist` (default
    config.STANDARD_SHORTLIST), and write eval_standard.*."""
    run, dataset = run_dataset(workdir)  # refuses data that is not what the run trained on
    record = provenance.start(run_id=read_run(workdir).get("run_id"), gallery_seed=run.seed)
    source, step = run_folder.model_file(workdir), None  # a network passed in: the final one
    if network is None:
        from reid_tf.checkpoints import run_network  # loads TensorFlow: see the imports
        network, source, step = run_network(workdir, run.model)
    split = run.split(dataset)
    if dataset.spec.protocol == datasets.STANDARD:  # Market-1501 and since: fixed query / gallery
        protocol = "standard"
        per_trial = evaluate_standard(network, dataset, shortlist or config.STANDARD_SHORTLIST)
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
    _write(eval_prefix(workdir, protocol), body,
           markdown(summary, title) + camera_split_markdown(body["camera_split"]))
    eq7 = summary["eq7"]["rank"]
    logging.info("test CMC (%s, Eq. 7): rank-1 %.2f%%  rank-5 %.2f%%  rank-10 %.2f%%  (chance %.2f%%)",
                 title, eq7["1"]["mean"], eq7["5"]["mean"], eq7["10"]["mean"], chance["1"])
    return body


def bn_note(precise_bn: int) -> str:
    """Title words for a network whose BN statistics were re-estimated (reid_tf.precise_bn)."""
    return f", BN statistics re-estimated over {precise_bn} training batches" if precise_bn else ""


def _evaluated(workdir: str, repeats: int, protocol: str = "single_shot") -> dict | None:
    """The workdir's eval json of `protocol` if it holds its draws and is newer than its model."""
    path, model = eval_prefix(workdir, protocol) + ".json", run_folder.model_file(workdir)
    if not (os.path.isfile(path) and os.path.isfile(model)) or os.path.getmtime(path) < os.path.getmtime(model):
        return None
    draws = 1 if protocol == "standard" else repeats * (config.XCORR_GALLERY_DRAWS if protocol == "xcorr" else 1)
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
    Under protocol xcorr the ± is the spread of the trials' means (each over its gallery draws).
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
    summary = summarize([b["per_trial"] for b in bodies], trial_means=protocol == "xcorr")
    title = (f"{bodies[0]['dataset']} / {bodies[0]['model']} / {len(bodies)} trial(s){bn_note(precise.pop())} "
             f"— protocol {protocol}: {PROTOCOL_TITLES[protocol]}")
    body = {"dataset": bodies[0]["dataset"], "model": bodies[0]["model"], "protocol": protocol,
            "trials": [b["trial"] for b in bodies], "precise_bn": bodies[0].get("precise_bn", 0),
            "summary": summary, "camera_split": summarize_camera_split([b["per_trial"] for b in bodies]),
            "gallery_seeds": [b.get("provenance", {}).get("gallery_seed", provenance.UNKNOWN) for b in bodies],
            "provenance": provenance.finish(record)}
    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    _write(out_prefix, body, markdown(summary, title) + camera_split_markdown(body["camera_split"]))
    return body


def shortlist_study(network, dataset: datasets.Dataset, identities: list[int], trial: int, seed: int,
                    ks: list[int]) -> dict:
    """Two-stage scoring (top-K gallery by d, then Eq. 7 on those pairs) against exhaustive scoring.

    Per-image features are computed once and shared, so the timings compare the pair scoring
    alone: exhaustive (Q·G pairs) against each K (Q·K pairs). Rankings by Eq. 7.
    """
    from reid_tf.scoring import ScoringEngine  # loads TensorFlow: see the imports

    engine = ScoringEngine(network)
    queries, gallery = datasets.single_shot(dataset, identities, trial, seed)
    q_ids, g_ids = np.array([q.identity for q in queries]), np.array([g.identity for g in gallery])
    fq = engine.image_features(load_images([q.path for q in queries]))
    fg = engine.image_features(load_images([g.path for g in gallery]))
    rows = []
    for k in [None, *ks]:
        engine.score_matrix(fq, fg, shortlist=k)  # warm-up (tracing)
        t = time.perf_counter()
        scores = engine.score_matrix(fq, fg, shortlist=k)
        seconds = time.perf_counter() - t
        ranks = metrics.rank_k(metrics.cmc(scores["score"], q_ids, g_ids), config.RANKS)
        rows.append({"k": k or len(gallery), "exhaustive": k is None, "seconds": seconds,
                     "pairs": int(scores["evaluated"].sum()),
                     **{f"rank{r}": 100 * v for r, v in ranks.items()}})
    for row in rows:
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
    return {"queries": len(queries), "gallery": len(gallery), "rows": rows}


def shortlist_markdown(study: dict, title: str) -> str:
    lines = [f"### {title}: two-stage scoring ({study['queries']} queries × {study['gallery']} gallery)", "",
             "| K | pairs scored | " + " | ".join(f"top-{k}" for k in config.RANKS) +
             " | pair-scoring time | speed-up |", "|---|---|" + "---|" * (len(config.RANKS) + 2)]
    for r in study["rows"]:
        name = f"all ({r['k']}, exhaustive)" if r["exhaustive"] else str(r["k"])
        lines.append(f"| {name} | {r['pairs']} | " + " | ".join(f"{r[f'rank{k}']:.1f}" for k in config.RANKS)
                     + f" | {r['seconds']:.2f} s | {r['speedup']:.1f}× |")
    return "\n".join(lines) + "\n"


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
    """--visrank=N: ranked-results pictures of N test queries (reid_tf.rank.visrank_trial).

    A workdir's go to workdir/visrank and to TensorBoard (workdir/tb/test, beside the Figure 4
    panels, at the last validated step); a checkpoint's to <checkpoint>_visrank (or --out). Returns
    the folder.
    """
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
            per_trial = evaluate_standard(network, dataset, f.top_k)
        else:
            per_trial = evaluate_network(network, dataset, run.split(dataset).test, run.trial, run.seed,
                                         f.repeats)
        summary = summarize([per_trial])
        table = markdown(summary, f"{f.dataset} / {f.checkpoint} / trial {f.trial}")
        _write(f.out or os.path.splitext(f.checkpoint)[0] + "_eval",
               {"summary": summary, "provenance": provenance.finish(record)}, table)
    elif f.workdir and f.shortlist:
        from reid_tf.checkpoints import run_network  # loads TensorFlow: see the imports
        run, dataset = run_dataset(f.workdir)
        network = run_network(f.workdir, run.model)[0]
        split = run.split(dataset)
        study = shortlist_study(network, dataset, split.test, run.trial, run.seed,
                                [int(k) for k in f.shortlist.split(",")])
        table = shortlist_markdown(study, f"{run.dataset} / {run.model} / trial {run.trial}")
        _write(run_folder.shortlist_prefix(f.workdir), study, table)
    elif f.workdir:
        workdirs, tables = f.workdir.split(","), []
        for protocol in f.protocol:  # several protocols: their tables one after the other
            body = evaluate_workdirs(workdirs, f.out or eval_prefix(workdirs[0], protocol, trials=True),
                                     f.repeats, protocol=protocol, shortlist=f.top_k)
            title = f"{body['dataset']} / {body['model']} — protocol {protocol}: {PROTOCOL_TITLES[protocol]}"
            tables.append(markdown(body["summary"], title) + camera_split_markdown(body["camera_split"]))
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
                      "(ours), xcorr ([31]'s, which §4.1 follows for CUHK01); both: single_shot,xcorr")
    flags.DEFINE_string("out", None, "output prefix for .json / .md")
    flags.DEFINE_integer("top_k", config.STANDARD_SHORTLIST, "standard-protocol datasets (Market-1501, ...): "
                         "Eq. 7 on each query's K nearest gallery images by d (reid_tf.shortlist)")
    flags.DEFINE_string("shortlist", None, "e.g. 10,20,50: compare two-stage scoring (top-K by d, then "
                        "Eq. 7) with exhaustive scoring on --workdir's test split")
    flags.DEFINE_integer("visrank", 0, "also write ranked-results pictures (and TensorBoard images) of "
                         "this many test queries")
    cli.run(main)
