"""Where a training step's time goes, op by op, grouped by the model's blocks.

    python -m benchmarks.profile_train                  # `make profile-train`; l23, batch 128, ~1 min
    python -m benchmarks.profile_train --preset=l234 --batch=64 --correlation=direct

Runs the real training step (benchmarks.common.train_step: PairTrainer's, the whole objective,
backward, Adam; --pairing=shared for a shared-image batch) under TensorFlow's profiler and reads the trace it writes (the XSpace
protobuf that ships inside TensorFlow, so no TensorBoard plugin is needed). Every op event of the
step is attributed to a block with reid_tf.model.op_blocks — the same blocks as
`python -m experiments.table5 --breakdown` — and to the forward pass, the backward pass (ops under
`gradient_tape/`) or the optimizer. Printed per block: milliseconds per step forward and backward,
the share of the op time, the block's forward FLOPs per step (from reid_tf.complexity, counted with
the folded depth-wise correlation) and the GFLOP/s it achieves counted as 3× forward.

Op times are summed over both cores' threads, so their total can exceed the wall time of a step
when two ops run at once; the shares are what to read. The XLA-compiled correlation ("shift") runs
outside TensorFlow's op events: its forward and backward together are the row "XLA (correlation)".
"""
from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
import time

import tensorflow as tf
from absl import flags, logging

from benchmarks.common import SHARED_K, per_pair_batch, shared_batch, train_step, training_model
from reid_tf import cli, config
from reid_tf.complexity import complexity
from reid_tf.layers.csn import CORRELATIONS
from reid_tf.model import op_blocks

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "l23", "Model preset (reid_tf.config.PRESETS).")
flags.DEFINE_integer("batch", config.BATCH_SIZE["default"], "Pairs per training step (§4.2: 128).")
flags.DEFINE_integer("steps", 3, "Steps timed without, then with the profiler (after two warm-up steps).")
flags.DEFINE_enum("correlation", CORRELATIONS[0], list(CORRELATIONS), "The CSN correlation form (reid_tf.layers.CSN).")
flags.DEFINE_enum("pairing", "per_pair", list(config.PAIRINGS), "Per-pair or shared-image batch (reid_tf.pairs).")
flags.DEFINE_integer("shared_k", SHARED_K, "--pairing=shared: images per camera of a visit (K; [31]'s recipe "
                     "trains with 1).")
flags.DEFINE_integer("top_ops", 15, "Also list the most expensive op types.")
flags.DEFINE_list("detail", [], "Blocks whose op types to list too (e.g. csn_2.stn,conv1).")

# An op event's name in the host trace is "<op name>:<op type>"; function and executor events
# (no slash-free type after the colon, or no colon) are containers of op events and are skipped.
_OP_EVENT = re.compile(r"^(?P<name>[^:]+/[^:]+):(?P<type>[A-Za-z0-9_]+)$")
# XLA-compiled functions (here only the "shift" correlation's) run outside TF's op events; their
# execution shows as this event on the calling thread, without the op's name.
_XLA_EVENT = "CpuExecutable::ExecuteAsyncOnStream"
XLA_BLOCK = "XLA (correlation)"


def op_events(logdir: str):
    """(op name, op type, duration in ns) of every op event in the profile under `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"no *.xplane.pb under {logdir}: the profiler wrote no trace")
    space = xplane_pb2.XSpace()
    with open(paths[0], "rb") as f:
        space.ParseFromString(f.read())
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name == _XLA_EVENT:
                    yield XLA_BLOCK, "XlaExecutable", event.duration_ps // 1000
                match = _OP_EVENT.match(name)
                if match:
                    yield match["name"], match["type"], event.duration_ps // 1000


def phase_of(op_name: str) -> str:
    if op_name == XLA_BLOCK:
        return "forward"  # forward and backward together
    if op_name.startswith("gradient_tape/") or "/gradient_tape/" in op_name:
        return "backward"
    if re.search(r"(^|/)(adam|Adam|optimizer)", op_name):
        return "optimizer"
    return "forward"


def main(argv: list[str]) -> None:
    del argv
    model = training_model(FLAGS.preset, FLAGS.correlation)
    step = train_step(model)
    x, y = per_pair_batch(FLAGS.batch, seed=0) if FLAGS.pairing == "per_pair" else shared_batch(
        FLAGS.batch, seed=0, k=FLAGS.shared_k)
    pairs_per_step = int(y.shape[0])
    step(x, y)  # tracing, optimizer slots
    step(x, y)  # the first backward pass also sets up oneDNN primitives
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        step(x, y)
    unprofiled = (time.perf_counter() - start) / FLAGS.steps

    logdir = tempfile.mkdtemp(prefix="reid_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        step(x, y)
    wall = (time.perf_counter() - start) / FLAGS.steps
    tf.profiler.experimental.stop()

    block_of = op_blocks(model.network)
    by_block = collections.defaultdict(lambda: collections.Counter())
    by_type = collections.Counter()
    detail = collections.defaultdict(lambda: collections.Counter())
    for name, op_type, ns in op_events(logdir):
        phase = phase_of(name)
        if name == XLA_BLOCK or phase == "optimizer":
            block = XLA_BLOCK if name == XLA_BLOCK else "optimizer"
        else:
            block = block_of(name.removeprefix("gradient_tape/"))
        by_block[block][phase] += ns
        by_type[(op_type, phase)] += ns
        if block in FLAGS.detail:
            detail[block][(op_type, phase)] += ns
    total = sum(sum(c.values()) for c in by_block.values())
    if not total:
        raise RuntimeError(f"the profile under {logdir} holds no op events")

    flops = {k: v["flops"] for k, v in complexity(FLAGS.preset)["breakdown"].items()}
    per_step = lambda ns: ns / 1e6 / FLAGS.steps  # noqa: E731  ns summed over steps → ms per step
    print(f"\nprofile_train: {FLAGS.preset}, {FLAGS.pairing} batch of {pairs_per_step} pairs, "
          f"correlation={FLAGS.correlation}; wall {1e3 * wall:.0f} ms/step profiled, {1e3 * unprofiled:.0f} ms "
          f"unprofiled ({pairs_per_step / unprofiled:.1f} pairs/s); op time {per_step(total):.0f} ms/step (both cores)")
    head = f"{'block':<16}{'fwd ms':>9}{'bwd ms':>9}{'share':>7}{'fwd GFLOP':>11}{'GFLOP/s (3×fwd)':>17}"
    print(head + "\n" + "-" * len(head))
    rows = sorted(by_block.items(), key=lambda kv: -sum(kv[1].values()))
    for block, phases in rows:
        ms = per_step(sum(phases.values()))
        gflop = flops.get(block, 0) * pairs_per_step / 1e9  # per-pair FLOPs: a shared batch does less
        rate = f"{3 * gflop / (ms / 1e3):>17.1f}" if gflop else f"{'':>17}"
        print(f"{block:<16}{per_step(phases['forward']):>9.0f}{per_step(phases['backward'] + phases['optimizer']):>9.0f}"
              f"{100 * sum(phases.values()) / total:>6.1f}%{gflop:>11.2f}{rate}")
    print(f"\ntop {FLAGS.top_ops} op types (phase): ms per step, share")
    for (op_type, phase), ns in by_type.most_common(FLAGS.top_ops):
        print(f"  {op_type:<34}{phase:<10}{per_step(ns):>8.0f}{100 * ns / total:>7.1f}%")
    for block, types in detail.items():
        print(f"\n{block}: op types (phase), ms per step")
        for (op_type, phase), ns in types.most_common(FLAGS.top_ops):
            print(f"  {op_type:<34}{phase:<10}{per_step(ns):>8.0f}")
    logging.info("trace kept in %s (tensorboard --logdir %s, with the profile plugin, shows it)", logdir, logdir)


if __name__ == "__main__":
    cli.run(main)
