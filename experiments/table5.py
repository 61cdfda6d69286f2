"""Table 5 (§4.5): model size and inference cost per pair, ours beside the paper's.

    python -m experiments.table5                                # every preset (make table5)
    python -m experiments.table5 --presets=l23,l234 --breakdown

Paper (Table 5): Ours-(L2, L3) 0.5 M parameters, 0.96 GFLOPs, depth 12; Ours-(L2, L3, L4) 0.8 M,
1.31 GFLOPs, depth 18. Our counts come from reid_tf.complexity (the traced inference graph; its
docstring says how each op is counted). The report prints them beside the paper's with the ratio;
for the paper's two models every other way of counting (`readings`: MACs instead of FLOPs, the
per-image blocks once, without BN, without the ranking net, ...) with its ratio, flagged when it
is beyond ±25 %; what adding level 4 costs here and in the paper; with --breakdown, params and
FLOPs per block. What it measured and how the gaps read: docs/RESULTS.md, "Model complexity".
"""
from __future__ import annotations

from collections.abc import Mapping

from absl import flags, logging

from reid_tf import cli, config
from reid_tf.complexity import complexity

# Table 5 (§4.5): "#param(M)" and "FLOPs(G)" of the two models of the paper.
PAPER_TABLE5 = {
    "l23": {"row": "Ours-(L2, L3)", "params_m": 0.5, "gflops": 0.96, "depth": 12},
    "l234": {"row": "Ours-(L2, L3, L4)", "params_m": 0.8, "gflops": 1.31, "depth": 18},
}
GAP_TOLERANCE = 0.25  # a gap beyond ±25 % of the paper's value gets an explanation



def readings(result: Mapping) -> dict[str, list[tuple[str, float]]]:
    """Alternative ways of counting, derived from the breakdown, to explain a gap to Table 5.

    Returns {"params": [(reading, millions)], "flops": [(reading, giga)]}.
    """
    b = result["breakdown"]
    ranking = sum(r["params"] for r in b.values() if r["part"] == "ranking")  # rank_j, embedding
    bn_all = 2 * result["non_trainable_params"]  # γ, β beside every moving mean, variance
    per_image = sum(r["flops"] for r in b.values() if r["per_image"])
    params = [
        ("all weights (count_params)", result["params"] / 1e6),
        ("trainable only (no BN moving stats)", result["trainable_params"] / 1e6),
        ("no BN parameters at all (γ, β, mean, variance)", (result["params"] - bn_all) / 1e6),
        ("without the ranking net (rank_j + embedding)", (result["params"] - ranking) / 1e6),
        ("hypothesis: ranking net with one conv per level",
         (result["params"] - result["rank_second_conv_params"]) / 1e6),
    ]
    flops = [
        ("FLOPs = 2×MACs + elementwise, both images", result["flops"] / 1e9),
        ("FLOPs of conv/matmul only (2×MACs)", 2 * result["macs"] / 1e9),
        ("MACs, both images", result["macs"] / 1e9),
        ("FLOPs, per-image blocks counted once", (result["flops"] - per_image / 2) / 1e9),
        ("FLOPs, per-pair blocks only (gallery features cached)", (result["flops"] - per_image) / 1e9),
    ]
    return {"params": params, "flops": flops}


def format_table(results: list[Mapping]) -> str:
    """The Table 5 comparison: one line per preset, the paper's value and our/paper ratio beside."""
    head = (f"{'preset':<7}{'params(M)':>10}{'trainable':>10}{'BN stats':>9}{'GFLOPs':>9}{'GMACs':>8}"
            f"   {'paper params':>12}{'ratio':>7}{'paper GFLOPs':>13}{'ratio':>7}")
    lines = [head, "-" * len(head)]
    for r in results:
        line = (f"{r['name']:<7}{r['params'] / 1e6:>10.3f}{r['trainable_params'] / 1e6:>10.3f}"
                f"{r['non_trainable_params'] / 1e6:>9.4f}{r['flops'] / 1e9:>9.3f}{r['macs'] / 1e9:>8.3f}")
        paper = PAPER_TABLE5.get(r["name"])
        if paper:
            line += (f"   {paper['params_m']:>12.2f}{r['params'] / 1e6 / paper['params_m']:>7.2f}"
                     f"{paper['gflops']:>13.2f}{r['flops'] / 1e9 / paper['gflops']:>7.2f}")
        lines.append(line)
    return "\n".join(lines)


# Where the parameters sit, by the parts of Figure 2 / Table 1 (reid_tf.model.PARTS).
_PARTS = {"trunk conv1–3b": "trunk", "localisation nets": "localisation",
          "ranking net + embedding": "ranking", "head conv4–6 + logits": "head"}


def format_gaps(result: Mapping) -> str:
    """For a preset in Table 5: every reading, its ratio to the paper, and whether it is within ±25 %."""
    paper = PAPER_TABLE5[result["name"]]
    lines = [f"{result['name']} vs Table 5 {paper['row']} ({paper['params_m']} M params, "
             f"{paper['gflops']} GFLOPs):"]
    for kind, unit, ref in (("params", "M", paper["params_m"]), ("flops", "G", paper["gflops"])):
        for label, value in readings(result)[kind]:
            ratio = value / ref
            flag = "within ±25 %" if abs(ratio - 1) <= GAP_TOLERANCE else "gap"
            lines.append(f"  {kind:<6} {label:<55}{value:>8.3f} {unit}  ratio {ratio:5.2f}  {flag}")
    parts = []
    for label, part in _PARTS.items():
        held = sum(r["params"] for r in result["breakdown"].values() if r["part"] == part)
        parts.append(f"{label} {held / 1e6:.3f} M")
    bn = 2 * result["non_trainable_params"]  # γ, β, moving mean, moving variance
    lines.append(f"  params by part: {', '.join(parts)}; of all these, BN {bn / 1e6:.3f} M")
    for kind, scale, unit in (("params", 1e6, "M"), ("flops", 1e9, "G")):
        top = sorted(result["breakdown"].items(), key=lambda kv: -kv[1][kind])[:4]
        total = result[kind]
        lines.append(f"  largest {kind}: " + ", ".join(
            f"{k} {v[kind] / scale:.3f} {unit} ({100 * v[kind] / total:.0f} %)" for k, v in top))
    return "\n".join(lines)


def format_increment(base: Mapping, extended: Mapping) -> str:
    """What adding a level costs here and in Table 5 (e.g. l23 → l234), block by block."""
    pb, pe = PAPER_TABLE5[base["name"]], PAPER_TABLE5[extended["name"]]
    d_params = (extended["params"] - base["params"]) / 1e6
    d_flops = (extended["flops"] - base["flops"]) / 1e9
    lines = [f"{base['name']} → {extended['name']}: params +{d_params:.3f} M "
             f"(paper +{pe['params_m'] - pb['params_m']:.2f} M), "
             f"FLOPs +{d_flops:.3f} G (paper +{pe['gflops'] - pb['gflops']:.2f} G)"]
    for block, r in extended["breakdown"].items():
        old = base["breakdown"].get(block, {"params": 0, "flops": 0})
        dp, df = r["params"] - old["params"], r["flops"] - old["flops"]
        if dp or abs(df) >= 1e5:
            lines.append(f"  {block:<14} params {dp / 1e6:+.3f} M   FLOPs {df / 1e9:+.4f} G")
    return "\n".join(lines)


def format_breakdown(result: Mapping) -> str:
    """Params and FLOPs per top-level block, in graph order, with the per-image / per-pair tag."""
    head = f"{'block':<16}{'params':>9}{'of which BN stats':>18}{'MFLOPs':>10}{'MMACs':>9}{'share':>7}  kind"
    lines = [f"[{result['name']}]", head, "-" * len(head)]
    for block, r in result["breakdown"].items():
        if not (r["params"] or r["flops"]):
            continue
        lines.append(f"{block:<16}{r['params']:>9d}{r['non_trainable']:>18d}{r['flops'] / 1e6:>10.2f}"
                     f"{r['macs'] / 1e6:>9.2f}{100 * r['flops'] / result['flops']:>6.1f}%  "
                     f"{'per image' if r['per_image'] else 'per pair'}")
    lines.append(f"{'total':<16}{result['params']:>9d}{result['non_trainable_params']:>18d}"
                 f"{result['flops'] / 1e6:>10.2f}{result['macs'] / 1e6:>9.2f}")
    return "\n".join(lines)


def _define_flags() -> None:
    flags.DEFINE_list("presets", list(config.PRESETS), "Presets of config.PRESETS to measure.")
    flags.DEFINE_bool("breakdown", False, "Also print params and FLOPs per top-level block.")


def main(argv: list[str]) -> None:
    del argv
    FLAGS = flags.FLAGS
    results = [complexity(name) for name in FLAGS.presets]
    print("Per pair at inference (batch of one pair, both images, training=False); "
          "FLOPs = 2 × MACs for conv/matmul + 1 per element for elementwise ops.")
    print(format_table(results))
    for r in results:
        if r["unregistered"]:
            logging.info("%s: counted from shapes (no TF profiler rule): %s", r["name"],
                         ", ".join(r["unregistered"]))
        logging.info("%s: trainable %d + BN moving statistics %d = %d parameters", r["name"],
                     r["trainable_params"], r["non_trainable_params"], r["params"])
    for r in results:
        if r["name"] in PAPER_TABLE5:
            print()
            print(format_gaps(r))
    by_name = {r["name"]: r for r in results}
    if "l23" in by_name and "l234" in by_name:
        print()
        print(format_increment(by_name["l23"], by_name["l234"]))
    if FLAGS.breakdown:
        for r in results:
            print()
            print(format_breakdown(r))


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
