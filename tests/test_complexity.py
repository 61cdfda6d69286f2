"""The FLOP/MAC counter of reid_tf.complexity (§4.5, Table 5) on tiny graphs with hand answers."""
import numpy as np
import pytest
import tensorflow as tf

from reid_tf import complexity
from reid_tf.layers import depthwise_xcorr
from reid_tf.model import build_model


def _graph(fn, *shapes):
    return tf.function(fn).get_concrete_function(*[tf.TensorSpec(s, tf.float32) for s in shapes]).graph


def _by_type(costs):
    out = {}
    for c in costs:
        macs, flops = out.get(c.type, (0, 0))
        out[c.type] = (macs + c.macs, flops + c.flops)
    return out


def test_conv_and_depthwise_hand_values():
    def fn(x, k, d, dk):
        y = tf.nn.conv2d(x, k, strides=1, padding="SAME")  # (1, 8, 6, 4)
        z = tf.nn.depthwise_conv2d(d, dk, strides=[1, 1, 1, 1], padding="SAME")  # (1, 8, 6, 10)
        return y, z

    # conv: 8·6 positions × 4 filters × 3·3·3 taps = 5184 MACs.
    # depthwise, batch 2 × 5 channels folded into 10: 8·6·10 outputs × 3·2 taps = 2880 MACs.
    costs = complexity.graph_costs(_graph(fn, (1, 8, 6, 3), (3, 3, 3, 4), (1, 8, 6, 10), (3, 2, 10, 1)))
    by_type = _by_type(costs)
    assert by_type["Conv2D"] == (5184, 2 * 5184)
    assert by_type["DepthwiseConv2dNative"] == (2880, 2 * 2880)
    # TF's profiler agrees with 2 × MACs on both (graph_costs raises otherwise) — check it directly.
    prof = [c.profiler_flops for c in costs if c.type in ("Conv2D", "DepthwiseConv2dNative")]
    assert sorted(prof) == [2 * 2880, 2 * 5184]


def test_matmul_einsum_and_elementwise():
    def fn(a, b, c, d):
        return tf.matmul(a, b), tf.einsum("bij,bjk->bik", c, d), tf.nn.relu(a)

    costs = complexity.graph_costs(_graph(fn, (3, 4), (4, 5), (2, 3, 4), (2, 4, 5)))
    by_type = _by_type(costs)
    assert by_type["MatMul"] == (3 * 5 * 4, 2 * 3 * 5 * 4)
    # the profiler has no Einsum rule (profiler_flops 0): counted from the shapes, b·i·j·k MACs
    assert by_type["Einsum"] == (2 * 3 * 4 * 5, 2 * 2 * 3 * 4 * 5)
    assert [c.profiler_flops for c in costs if c.type == "Einsum"] == [0]
    relu = [c for c in costs if c.type == "Relu"]
    assert relu[0].flops == 12 and relu[0].source == "elementwise"  # no profiler rule: 1 per element


def test_depthwise_xcorr_of_the_model():
    # signal (2, 6, 5, 3), kernels (2, 3, 3, 3) → one depth-wise conv over (1, 6, 5, 6), kernel (3, 3, 6, 1)
    costs = complexity.graph_costs(_graph(depthwise_xcorr, (2, 6, 5, 3), (2, 3, 3, 3)))
    assert sum(c.macs for c in costs) == 6 * 5 * 6 * 9


def test_block_of():
    names = ["conv2", "csn_2", "csn_3", "rank_2", "similarity_3", "sim_2_pool0"]
    assert complexity.block_of("reid_l23_1/conv2_3/conv_1/convolution", names) == "conv2"
    assert complexity.block_of("reid_l23_1/csn_2_1/stn_3/loc_conv1_1/conv_1/convolution", names) == "csn_2.loc"
    assert complexity.block_of("reid_l23_1/csn_2_1/stn_1/theta_1/MatMul", names) == "csn_2.loc"
    assert complexity.block_of("reid_l23_1/csn_2_1/stn_1/GatherV2", names) == "csn_2.stn"
    assert complexity.block_of("reid_l23_1/csn_3_1/split", names) == "csn_3.stn"  # the stripes
    assert complexity.block_of("reid_l23_1/pair_head_1/similarity_3_1/depthwise", names) == "csn_3.xcorr"
    assert complexity.block_of("reid_l23_1/sim_2_pool0_1/MaxPool", names) == "sim_2_pool0"
    assert complexity.block_of("reid_l23_1/Identity", names) == "other"


@pytest.fixture(scope="module")
def measured():
    return {name: complexity.complexity(name) for name in ("l23", "l234")}


def test_model_counts(measured):
    l23, l234 = measured["l23"], measured["l234"]
    assert 0 < l23["flops"] < l234["flops"] and 0 < l23["params"] < l234["params"]
    assert l23["flops"] > 2 * l23["macs"] > 0  # elementwise work on top of the conv/matmul FLOPs
    for name, r in measured.items():
        assert r["params"] == build_model(name).count_params()
        assert r["params"] == r["trainable_params"] + r["non_trainable_params"]
        assert sum(b["params"] for b in r["breakdown"].values()) == r["params"]
        assert sum(b["flops"] for b in r["breakdown"].values()) == r["flops"]
    # CSN-2's correlation, from the real graph: 2 directions × 3 parts × 40·15·96 outputs × 10·10 taps.
    assert l23["breakdown"]["csn_2.xcorr"]["macs"] == 2 * 3 * 40 * 15 * 96 * 100
    # conv2 runs on both images: 2 × 80·30 positions × 96 filters × 3·3·32 taps.
    assert l23["breakdown"]["conv2"]["macs"] == 2 * 80 * 30 * 96 * 288


def test_report_formats(measured):
    table = complexity.format_table(list(measured.values()))
    assert "0.96" in table and "1.31" in table
    assert "csn_2.xcorr" in complexity.format_breakdown(measured["l23"])
    assert "within ±25 %" in complexity.format_gaps(measured["l23"])
    assert "conv3b" in complexity.format_increment(measured["l23"], measured["l234"])
    np.testing.assert_allclose(dict(complexity.readings(measured["l23"])["flops"])[
        "MACs, both images"], measured["l23"]["macs"] / 1e9)
