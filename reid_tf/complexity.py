"""Model size and inference cost per pair, counted from the traced graph (§4.5, Table 5).

    python -m reid_tf.complexity                 # every preset of config.PRESETS
    python -m reid_tf.complexity --presets=l23,l234 --breakdown

How it counts. The Keras model is traced once, at inference (`training=False`), on a batch of one
pair, into a `tf.function` concrete graph; every op of that graph is then costed from its real
input/output shapes:

* convolutions and matrix products (Conv2D, DepthwiseConv2dNative, MatMul, BatchMatMul*, Einsum):
  MACs (multiply-accumulates) from the shapes by the rules of `mac_count`, and FLOPs = 2 × MACs.
  The depth-wise cross-correlation of Eq. 2 is one DepthwiseConv2dNative with the batch folded
  into the channels, input (1, H, W, B·C) and kernel (h, w, B·C, 1): H·W·B·C·h·w MACs.
* every other op with a FLOP rule in TensorFlow's own profiler registry
  (`tf.compat.v1.profiler`, `float_operation()`): that value (1 per element for Add/Mul/…,
  kernel area per output for MaxPool, the inputs for Mean, …). For the MAC ops the profiler's value
  is checked to equal 2 × our MACs (it does for Conv2D, DepthwiseConv2dNative, MatMul and
  BatchMatMulV2; it has no rule for Einsum, which we then count ourselves).
* arithmetic ops the profiler does not register (Relu, Tanh, Abs, Floor, Round, Sqrt, Exp, …):
  1 FLOP per output element, counted by us (the tool logs which types these were).
* data movement, selects, logical ops and casts (Reshape, Transpose, GatherV2, SelectV2,
  LogicalAnd, Cast, …): 0. (Comparisons do count: the profiler gives them 1 per element.)

So "GFLOPs" = 2 × MACs of the conv/matmul ops + the elementwise work (BN at inference, ReLU,
pooling, the sampler's arithmetic; < 1 % here); "GMACs" = the MACs alone, the quantity many 2018
papers called "FLOPs". Parameters are `model.count_params()`: the trainable weights plus the
BatchNormalization moving mean/variance (non-trainable), both reported.

Measured (`python -m reid_tf.complexity`, TF 2.21; per pair = one forward pass on both images):

    preset params(M) trainable BN stats  GFLOPs  GMACs   paper params ratio paper GFLOPs ratio
    l23        0.647     0.644   0.0031   0.939  0.466           0.50  1.29         0.96  0.98
    l234       0.982     0.978   0.0041   1.015  0.503           0.80  1.23         1.31  0.77

Reading of the gaps, from the per-block breakdown (`--breakdown`, and the "readings" printed):
* FLOPs, (L2, L3): 0.98 of the paper when FLOPs = 2 × MACs over the whole Siamese pair, i.e. both
  images' trunks, STNs and ranking branches. Counting MACs (0.47 G) or the per-image blocks once
  (0.51 G) gives half the paper's value, so the paper most likely counted 2 × MACs and both
  images.
* Params, (L2, L3): +29 % (the only gap beyond ±25 %). BN is not the cause (moving statistics
  0.003 M, all BN parameters 0.006 M). Table 1 specifies conv1–6 and the localisation nets, which
  come to 0.26 M here; the rest, 0.38 M (59 %), is the ranking net (rank_2, rank_3: two 3×3×96→96
  convs each, 0.167 M per level) and its 256-d embedding (0.049 M), which the paper describes only
  in words and DESIGN fixes. The paper's ranking net was probably lighter: with one conv per level
  the model would have 0.480 M (ratio 0.96; for l234 0.732 M, ratio 0.92) — a hypothesis that
  fits, not something the paper states.
* Params, (L2, L3, L4): +23 %, a similar absolute excess (+0.18 M; l23 +0.15 M); adding level 4 costs
  +0.335 M here and +0.30 M in the paper (conv3b 0.083, CSN-4 0.043, rank_4 0.167, wider conv4
  and embedding 0.043), so the per-level structure agrees and the offset is the ranking net above.
* FLOPs, (L2, L3, L4): −23 %. The counting convention is pinned by the l23 row, so this is
  structural: our level 4 adds 0.076 GFLOPs (conv3b on the 20×8 map 0.053, rank_4 0.013, CSN-4
  0.008), the paper's adds 0.35 G, 4.6× more, and its depth grows 12 → 18 (Table 5). The
  extension the paper measured was bigger than the one 3×3×96→96 conv after conv3 that §3.2
  describes and DESIGN adopts (x(4) 10×4 × 96, part size 3).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import flags, logging

from reid_tf import cli, config
from reid_tf.model import build_model, encoder_of, pair_head_of

# Table 5 (§4.5): "#param(M)" and "FLOPs(G)" of the two models of the paper.
PAPER_TABLE5 = {
    "l23": {"row": "Ours-(L2, L3)", "params_m": 0.5, "gflops": 0.96, "depth": 12},
    "l234": {"row": "Ours-(L2, L3, L4)", "params_m": 0.8, "gflops": 1.31, "depth": 18},
}
GAP_TOLERANCE = 0.25  # a gap beyond ±25 % of the paper's value gets an explanation

MAC_OPS = frozenset({"Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul", "BatchMatMulV2",
                     "BatchMatMulV3", "Einsum"})
# Arithmetic ops with no rule in TF's profiler registry: 1 FLOP per output element.
ELEMENTWISE_OPS = frozenset({"Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Tanh", "Sigmoid",
                             "Softplus", "Abs", "Floor", "Ceil", "Round", "Sqrt", "Exp", "Sign",
                             "FloorDiv", "FloorMod", "Mod", "DivNoNan", "BiasAdd", "Erf"})
# Ops that call a nested function; the counter walks one flat graph, so it flags them.
_NESTED_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile",
                         "If", "StatelessIf", "Case"})


@dataclasses.dataclass(frozen=True)
class OpCost:
    """Cost of one graph op: MACs (conv/matmul only), FLOPs and where the FLOP number came from."""

    name: str
    type: str
    macs: int
    flops: int
    source: str  # "shape" (2 × MACs), "tf-profiler", "elementwise" (1 per output element)
    profiler_flops: int = 0  # what TF's profiler alone gives this op (0: no rule)


def _dims(tensor) -> list[int]:
    shape = tensor.shape
    if not shape.is_fully_defined():
        raise ValueError(f"{tensor.name}: shape {shape} is not fully defined; trace with a fixed batch")
    return [int(d) for d in shape]


def _einsum_macs(op) -> int:
    """MACs of a two-operand Einsum: the product of the sizes of every distinct index."""
    equation = op.get_attr("equation").decode().replace(" ", "")
    inputs, _ = equation.split("->")
    operands = inputs.split(",")
    if len(operands) != 2 or "." in equation:
        raise NotImplementedError(f"{op.name}: only two-operand Einsum without ellipsis, got {equation}")
    sizes = {}
    for letters, tensor in zip(operands, op.inputs):
        sizes.update(zip(letters, _dims(tensor)))
    return math.prod(sizes.values())


def mac_count(op) -> int | None:
    """Multiply-accumulates of a conv / matmul op from its real shapes; None for any other op.

    Conv2D: outputs × kh·kw·C_in/group (the kernel's third dim). DepthwiseConv2dNative: outputs ×
    kh·kw (each output channel reads one input channel). MatMul / BatchMatMul: outputs × K.
    """
    if op.type not in MAC_OPS:
        return None
    out = math.prod(_dims(op.outputs[0]))
    if op.type == "Conv2D":
        kh, kw, cin, _ = _dims(op.inputs[1])
        return out * kh * kw * cin
    if op.type == "DepthwiseConv2dNative":
        kh, kw, _, _ = _dims(op.inputs[1])
        return out * kh * kw
    if op.type == "MatMul":
        a = _dims(op.inputs[0])
        return out * (a[0] if op.get_attr("transpose_a") else a[1])
    if op.type.startswith("BatchMatMul"):
        a = _dims(op.inputs[0])
        return out * (a[-2] if op.get_attr("adj_x") else a[-1])
    return _einsum_macs(op)


def profiler_flops(graph: tf.Graph) -> dict[str, int]:
    """Per-op FLOPs by TensorFlow's profiler (`float_operation()` rules), keyed by op name."""
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    verbosity = tf.compat.v1.logging.get_verbosity()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)  # a v1 deprecation notice
    try:
        root = tf.compat.v1.profiler.profile(graph, options=options)
    finally:
        tf.compat.v1.logging.set_verbosity(verbosity)
    flops, stack = {}, list(root.children)
    while stack:
        node = stack.pop()
        if node.float_ops:
            flops[node.name] = int(node.float_ops)
        stack.extend(node.children)
    return flops


def graph_costs(graph: tf.Graph) -> list[OpCost]:
    """Cost every op of `graph` (rules in the module docstring); ops with no cost are left out."""
    from_profiler = profiler_flops(graph)
    costs = []
    for op in graph.get_operations():
        if op.type in _NESTED_OPS:  # their bodies live in the function library, not in `graph`
            logging.warning("%s (%s) is not costed: its body is a nested function", op.name, op.type)
        macs, prof = mac_count(op), from_profiler.get(op.name)
        if macs is not None:
            if prof is not None and prof != 2 * macs:
                raise AssertionError(f"{op.type} {op.name}: profiler {prof} FLOPs != 2 × {macs} MACs")
            if prof is None and macs:
                logging.info("no profiler rule for %s (%s): counted from shapes, %d MACs",
                             op.type, op.name, macs)
            costs.append(OpCost(op.name, op.type, macs, 2 * macs, "shape", prof or 0))
        elif prof is not None:
            costs.append(OpCost(op.name, op.type, 0, prof, "tf-profiler", prof))
        elif op.type in ELEMENTWISE_OPS:
            costs.append(OpCost(op.name, op.type, 0, math.prod(_dims(op.outputs[0])), "elementwise"))
    return costs


def inference_graph(model: keras.Model, batch: int = 1) -> tf.Graph:
    """The model's inference call (training=False) on `batch` pairs, as a concrete tf.function graph."""
    # (B, 160, 60, 3) per named input ("image_a", "image_b"); a fixed batch makes every shape static
    spec = {t.name: tf.TensorSpec((batch, *t.shape[1:]), t.dtype) for t in model.inputs}
    fn = tf.function(lambda inputs: model(inputs, training=False))
    return fn.get_concrete_function(spec).graph


# ------------------------------------------------------------------------------------------------
def _layer_of(component: str, layer_names: Iterable[str]) -> str | None:
    """'csn_2_1' -> 'csn_2': the layer whose name scope (name or name_<n>) this component is."""
    matches = [n for n in layer_names if component == n or re.fullmatch(re.escape(n) + r"_\d+", component)]
    return max(matches, key=len) if matches else None


def block_of(op_name: str, layer_names: Iterable[str]) -> str:
    """Block of a graph op: the layer of the encoder or pair head it belongs to, with a CSN split
    into loc / stn / xcorr.

    csn_j.loc: the localisation net (loc conv1–3 and the θ dense layer); csn_j.stn: the rest of the
    encoder's CSNParts (the stripes, the loc net's GAP, the θ map and the bilinear sampler);
    csn_j.xcorr: the pair head's depth-wise cross-correlation of Eq. 2 (layer similarity_j). Ops
    outside every layer go to "other".
    """
    parts = op_name.split("/")
    for i, component in enumerate(parts[:-1]):
        layer = _layer_of(component, layer_names)
        if layer is None:
            continue
        if layer.startswith("csn_"):
            inner = parts[i + 1:-1]
            is_loc = (len(inner) > 1 and re.fullmatch(r"stn(_\d+)?", inner[0])
                      and re.match(r"(loc_conv\d|theta)(_\d+)?$", inner[1]))
            return f"{layer}.loc" if is_loc else f"{layer}.stn"
        if layer.startswith("similarity_"):
            return f"csn_{layer.removeprefix('similarity_')}.xcorr"
        return layer
    return "other"


def _layers(model: keras.Model) -> list[tuple[keras.layers.Layer, bool]]:
    """(layer, per image?) for every layer of the encoder, then of the pair head."""
    return [(layer, part is encoder) for encoder in (encoder_of(model),)
            for part in (encoder, pair_head_of(model)) for layer in part.layers]


def param_breakdown(model: keras.Model) -> dict[str, dict[str, int]]:
    """Parameters per top-level layer (a CSN's all sit in its loc net), trainable vs BN statistics."""
    table: dict[str, dict[str, int]] = {}
    for layer, _ in _layers(model):
        for w in layer.weights:
            block = f"{layer.name}.loc" if layer.name.startswith("csn_") else layer.name
            row = table.setdefault(block, {"trainable": 0, "non_trainable": 0})
            row["trainable" if w.trainable else "non_trainable"] += int(np.prod(w.shape))
    return table


def complexity(name: str | config.ModelConfig) -> dict:
    """Parameters and inference cost per pair of one preset, counted from its real graph (§4.5).

    Returns a dict: params, trainable_params, non_trainable_params (BN moving mean/variance),
    flops and macs per pair (batch of one pair, both images' trunks, training=False),
    profiler_flops (the TF profiler's own total, for comparison), unregistered (op types counted
    by us because the profiler has no rule), and breakdown {block: {params, trainable,
    non_trainable, flops, macs, per_image}}.
    """
    model = build_model(name, correlation="direct")  # count the paper's arithmetic, not the FFT's
    costs = graph_costs(inference_graph(model, batch=1))
    layer_names = [layer.name for layer, _ in _layers(model)]
    blocks: dict[str, dict] = {}
    per_image: dict[str, bool] = {}
    for layer, image in _layers(model):  # rows in the encoder's, then the head's order
        names = [f"{layer.name}.loc", f"{layer.name}.stn"] if layer.name.startswith("csn_") else [
            f"csn_{layer.name.removeprefix('similarity_')}.xcorr" if layer.name.startswith("similarity_")
            else layer.name]
        for block in names:
            blocks[block], per_image[block] = None, image

    def row(block):
        if blocks.get(block) is None:
            blocks[block] = {"params": 0, "trainable": 0, "non_trainable": 0, "flops": 0, "macs": 0,
                             "per_image": per_image.get(block, False)}
        return blocks[block]

    for block, p in param_breakdown(model).items():
        r = row(block)
        r.update(trainable=p["trainable"], non_trainable=p["non_trainable"],
                 params=p["trainable"] + p["non_trainable"])
    for cost in costs:
        r = row(block_of(cost.name, layer_names))
        r["flops"] += cost.flops
        r["macs"] += cost.macs
    blocks = {k: v for k, v in blocks.items() if v is not None}
    result = {
        "name": model.name.removeprefix("reid_"),
        "params": model.count_params(),
        "trainable_params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        "non_trainable_params": sum(int(np.prod(w.shape)) for w in model.non_trainable_weights),
        "flops": sum(c.flops for c in costs),
        "macs": sum(c.macs for c in costs),
        "profiler_flops": sum(c.profiler_flops for c in costs),
        "unregistered": sorted({c.type for c in costs if c.flops and not c.profiler_flops}),
        "breakdown": blocks,
        # the second 3×3×96→96 conv of every ranking branch, for the "one conv per level" reading
        "rank_second_conv_params": sum(int(np.prod(w.shape)) for w in model.weights
                                       if "/rank_conv2/" in w.path),
    }
    logging.info("%s: %d params, %.4f GFLOPs, %.4f GMACs per pair (TF profiler alone: %.4f GFLOPs)",
                 result["name"], result["params"], result["flops"] / 1e9, result["macs"] / 1e9,
                 result["profiler_flops"] / 1e9)
    return result


# ------------------------------------------------------------------------------------------------
def readings(result: Mapping) -> dict[str, list[tuple[str, float]]]:
    """Alternative ways of counting, derived from the breakdown, to explain a gap to Table 5.

    Returns {"params": [(reading, millions)], "flops": [(reading, giga)]}.
    """
    b = result["breakdown"]
    ranking = sum(r["params"] for k, r in b.items() if k.startswith("rank_") or k == "embedding")
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


# Where the parameters sit, by the parts of Figure 2 / Table 1 (block-name patterns).
_PARTS = {"trunk conv1–3b": r"conv(1|2|3|3b)$", "localisation nets": r"csn_\d\.loc$",
          "ranking net + embedding": r"(rank_\d|embedding)$", "head conv4–6 + logits": r"(conv[456]|logits)$"}


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
    for label, pattern in _PARTS.items():
        held = sum(r["params"] for k, r in result["breakdown"].items() if re.match(pattern, k))
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
