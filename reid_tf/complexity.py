"""Model size and inference cost per pair, counted from the traced graph (§4.5, Table 5).

    from reid_tf.complexity import complexity
    complexity("l23")  # {"params": ..., "flops": ..., "macs": ..., "breakdown": {block: ...}, ...}

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

What the counts come to for the paper's two models, beside Table 5, and how the gaps read:
`python -m experiments.table5` (`make table5`); the figures: docs/RESULTS.md, "Model complexity".
"""
from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from reid_tf import config
from reid_tf.model import blocks, build_model, op_blocks, structure

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
def param_breakdown(model: keras.Model) -> dict[str, dict[str, int]]:
    """Parameters per block (reid_tf.model.blocks; a CSN's all sit in its loc net), trainable vs BN
    statistics; blocks without weights are left out."""
    table: dict[str, dict[str, int]] = {}
    for block in blocks(model):
        for w in block.weights:
            row = table.setdefault(block.name, {"trainable": 0, "non_trainable": 0})
            row["trainable" if w.trainable else "non_trainable"] += int(np.prod(w.shape))
    return table


def complexity(name: str | config.ModelConfig) -> dict:
    """Parameters and inference cost per pair of one preset, counted from its real graph (§4.5).

    Returns a dict: params, trainable_params, non_trainable_params (BN moving mean/variance),
    flops and macs per pair (batch of one pair, both images' trunks, training=False),
    profiler_flops (the TF profiler's own total, for comparison), unregistered (op types counted
    by us because the profiler has no rule), and breakdown {block: {params, trainable,
    non_trainable, flops, macs, per_image, part}} (part: Figure 2's, reid_tf.model.PARTS).
    """
    model = build_model(name, correlation="direct")  # count the paper's arithmetic, not the FFT's
    costs = graph_costs(inference_graph(model, batch=1))
    kinds = {b.name: b for b in blocks(model)}  # rows in the encoder's, then the head's order
    rows: dict[str, dict | None] = dict.fromkeys(kinds)

    def row(block):
        if rows.get(block) is None:
            kind = kinds.get(block)
            rows[block] = {"params": 0, "trainable": 0, "non_trainable": 0, "flops": 0, "macs": 0,
                           "per_image": kind is not None and kind.per_image,
                           "part": kind.part if kind else "other"}
        return rows[block]

    for block, p in param_breakdown(model).items():
        r = row(block)
        r.update(trainable=p["trainable"], non_trainable=p["non_trainable"],
                 params=p["trainable"] + p["non_trainable"])
    block_of = op_blocks(model)
    for cost in costs:
        r = row(block_of(cost.name))
        r["flops"] += cost.flops
        r["macs"] += cost.macs
    ranking = structure(model).ranking
    result = {
        "name": config.get_model_config(name).name,
        "params": model.count_params(),
        "trainable_params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        "non_trainable_params": sum(int(np.prod(w.shape)) for w in model.non_trainable_weights),
        "flops": sum(c.flops for c in costs),
        "macs": sum(c.macs for c in costs),
        "profiler_flops": sum(c.profiler_flops for c in costs),
        "unregistered": sorted({c.type for c in costs if c.flops and not c.profiler_flops}),
        "breakdown": {k: v for k, v in rows.items() if v is not None},
        # the second 3×3×96→96 conv of every ranking branch, for the "one conv per level" reading
        "rank_second_conv_params": sum(int(np.prod(w.shape)) for branch in ranking.values()
                                       for w in branch.conv_b.weights),
    }
    logging.info("%s: %d params, %.4f GFLOPs, %.4f GMACs per pair (TF profiler alone: %.4f GFLOPs)",
                 result["name"], result["params"], result["flops"] / 1e9, result["macs"] / 1e9,
                 result["profiler_flops"] / 1e9)
    return result
