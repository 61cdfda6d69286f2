"""The report of an evaluation: the mean ± std of a protocol's draws (reid_tf.protocols) and its
files, PREFIX.json and PREFIX.md, written the same way by reid_tf.evaluate (eval*.json / .md of a
run, the mean over trials, a --checkpoint's, the shortlist study) and experiments/curve.py (a
curve's table).

The json keys are those of the committed results/*.json and every run's eval.json: "summary" maps a
ranking (protocols.RANKINGS) to {"rank": {"1": {"mean", "std"}, ...}, "map": {"mean", "std"},
"curve", "n"} in %; "camera_split" (under [31]'s protocol) to the same-camera and cross-camera
top-1 of its probes.
"""
from __future__ import annotations

import numpy as np

from reid_tf import config, fileio, metrics
from reid_tf.protocols import PROTOCOL_TITLES, RANKINGS, SINGLE_SHOT_PROTOCOLS


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


def eq7_figures(summary: dict) -> dict:
    """Rank-1/5/10 and mAP (%, means) of Eq. 7's ranking in a `summarize` result: a point of a curve,
    a line of a network's card."""
    eq7 = summary["eq7"]
    return {"rank1": eq7["rank"]["1"]["mean"], "rank5": eq7["rank"]["5"]["mean"],
            "rank10": eq7["rank"]["10"]["mean"], "map": eq7["map"]["mean"]}


def summarize_camera_split(per_trial: list[dict]) -> dict | None:
    """Mean ± std over every draw of camera_split's top-1 and probe counts; None without random-gallery draws."""
    draws = [d for t in per_trial for d in t.get("camera_split", [])]
    if not draws:
        return None
    out = {}
    for kind in ("same_camera", "cross_camera"):
        top1 = [d[kind]["rank1"] for d in draws if d[kind]["rank1"] is not None]
        out[kind] = {"rank1": {"mean": float(np.mean(top1)) if top1 else None, "std": metrics.spread(top1)},
                     "probes": float(np.mean([d[kind]["probes"] for d in draws])), "draws": len(top1)}
    return out


def bn_note(precise_bn: int) -> str:
    """Title words for a network whose BN statistics were re-estimated (reid_tf.precise_bn)."""
    return f", BN statistics re-estimated over {precise_bn} training batches" if precise_bn else ""


def markdown(summary: dict, title: str) -> str:
    """One table: a row per ranking, top-k and mAP as mean ± std, n draws."""
    lines = [f"### {title}", "", "| ranking | " + " | ".join(f"top-{k}" for k in config.RANKS) + " | mAP | n |",
             "|---|" + "---|" * (len(config.RANKS) + 2)]
    for name, r in summary.items():
        cells = [f"{r['rank'][str(k)]['mean']:.2f} ± {r['rank'][str(k)]['std']:.2f}" for k in config.RANKS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['map']['mean']:.2f} | {r['n']} |")
    return "\n".join(lines) + "\n"


def camera_split_markdown(split: dict | None) -> str:
    """The line under a table of [31]'s protocol: top-1 of same-camera and cross-camera probes."""
    if not split:
        return ""
    cells = [f"{kind.replace('_', ' ')} {v['rank1']['mean']:.1f} ± {v['rank1']['std']:.1f} "
             f"({v['probes']:.0f} probes a draw)" for kind, v in split.items() if v["rank1"]["mean"] is not None]
    return ("\nTop-1 (Eq. 7) by where the probe's gallery image comes from, mean ± std over draws: "
            + "; ".join(cells) + "\n")


def evaluation_markdown(body: dict, title: str) -> str:
    """An evaluation's table and, under [31]'s protocol, its camera-split line."""
    return markdown(body["summary"], title) + camera_split_markdown(body.get("camera_split"))


def shortlist_markdown(study: dict, title: str) -> str:
    """The shortlist study's table (reid_tf.shortlist.shortlist_study): a row per K."""
    lines = [f"### {title}: two-stage scoring ({study['queries']} queries × {study['gallery']} gallery)", "",
             "| K | pairs scored | " + " | ".join(f"top-{k}" for k in config.RANKS) +
             " | pair-scoring time | speed-up |", "|---|---|" + "---|" * (len(config.RANKS) + 2)]
    for r in study["rows"]:
        name = f"all ({r['k']}, exhaustive)" if r["exhaustive"] else str(r["k"])
        lines.append(f"| {name} | {r['pairs']} | " + " | ".join(f"{r[f'rank{k}']:.1f}" for k in config.RANKS)
                     + f" | {r['seconds']:.2f} s | {r['speedup']:.1f}× |")
    return "\n".join(lines) + "\n"


def curve_markdown(body: dict, run_title: str) -> str:
    """An accuracy curve's table (experiments/curve.py): a row per (point, protocol), and what each
    protocol is. run_title: the words that name the run."""
    lines = [f"### {run_title}: test CMC (Eq. 7) against pairs seen", "",
             "| step | epochs | pairs seen | protocol | top-1 | top-5 | top-10 | mAP |",
             "|---|---|---|---|---|---|---|---|"]
    for p in body["points"]:
        for protocol, r in p["results"].items():
            lines.append(f"| {p['step']} | {p['epochs']:.2f} | {p['pairs_seen']:,} | {protocol} | "
                         f"{r['rank1']:.1f} | {r['rank5']:.1f} | {r['rank10']:.1f} | {r['map']:.1f} |")
    lines += ["", "Protocols: " + "; ".join(f"**{k}** — {PROTOCOL_TITLES[k]}" for k in SINGLE_SHOT_PROTOCOLS)]
    return "\n".join(lines) + "\n"


def write(prefix: str, body: dict, table: str) -> None:
    """PREFIX.json (the body) and PREFIX.md (the table), each written atomically."""
    fileio.write_json(prefix + ".json", body)
    fileio.write_text(prefix + ".md", table)
