"""Throughput of the pair pipeline against the training step it feeds, in pairs per second.

    python -m benchmarks.bench_data                      # synthetic data in a temporary folder
    python -m benchmarks.bench_data --data_dir DIR       # any prepared dataset (manifest.json)

Measures (batch 128 by default, after warm-up): the pipeline of reid_tf.pairs with the decoded images
cached in memory and without (decoding both PNGs of every pair), then a few training steps of
`build_model(--model)` (Adam; L_cls on "logits" + L_ctr on "distance" + weight decay; one fixed batch
so no input cost is counted), and prints both rates and their ratio. The pipeline only has to stay
ahead of training.

The figures measured on this project's machines are in docs/RESULTS.md. Runs in a few minutes,
nearly all of it the training steps (one warm-up + two timed).
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import flags, logging

from benchmarks.common import train_step
from reid_tf import cli, config, pairs
from reid_tf.datasets import manifest_records, read_manifest

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Prepared dataset; default: synthetic data in a temp folder.")
flags.DEFINE_integer("identities", 400, "Identities of the synthetic dataset.")
flags.DEFINE_integer("batch_size", config.BATCH_SIZE["default"], "Pairs per batch (§4.2: 128).")
flags.DEFINE_integer("batches", 40, "Pipeline batches timed (after warm-up).")
flags.DEFINE_integer("warmup", 5, "Pipeline batches before timing (tracing, cache, prefetch fill).")
flags.DEFINE_integer("train_steps", 2, "Training steps timed (after one warm-up step).")
flags.DEFINE_string("model", "l23", "Model preset for the training step ('' skips it).")


def bench_pipeline(records, batch_size: int, batches: int, warmup: int, cache: bool) -> float:
    """Pairs per second delivered by make_pair_dataset (construction and cache fill excluded)."""
    dataset = pairs.make_pair_dataset(records, batch_size, seed=0,
                                      crops_per_image=config.CROPS_PER_IMAGE["default"],
                                      cache_images=cache)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        inputs, labels = next(iterator)
    labels.numpy()  # make sure the last batch really arrived
    return batches * batch_size / (time.perf_counter() - start)


def bench_train(model_name: str, inputs: dict, labels: tf.Tensor, steps: int) -> float | None:
    """Pairs per second of one optimisation step on a fixed batch: forward, L_cls + L_ctr (Eq. 6,
    no L_ctr for "cls") + the layers' weight decay, backward, Adam (§4.2)."""
    try:
        from reid_tf.model import build_model
    except ImportError as e:  # the model is written by someone else; the pipeline part still runs
        logging.warning("training step not measured: reid_tf.model.build_model unavailable (%s)", e)
        return None

    model = build_model(model_name)
    contrastive = config.get_model_config(model_name).contrastive
    step = train_step(model, contrastive)

    step(inputs, labels).numpy()  # warm-up: tracing and optimizer slots
    start = time.perf_counter()
    for _ in range(steps):
        loss = step(inputs, labels)
    loss.numpy()
    return steps * int(labels.shape[0]) / (time.perf_counter() - start)


def _records(tmp: str) -> list:
    if FLAGS.data_dir:
        root = FLAGS.data_dir
    else:
        from data_tools.make_synthetic import make_synthetic

        start = time.perf_counter()
        root = make_synthetic(os.path.join(tmp, "synthetic"), FLAGS.identities, seed=0)
        logging.info("synthetic dataset (%d identities) in %.1f s", FLAGS.identities,
                     time.perf_counter() - start)
    return manifest_records(root, read_manifest(root))


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        records = _records(tmp)
        logging.info("%d images, %d pairs per epoch", len(records),
                     pairs.epoch_size(records, config.CROPS_PER_IMAGE["default"]))
        rates = {}
        for cache in (True, False):
            rates[f"pipeline ({'cached' if cache else 'decoding'})"] = rate = bench_pipeline(
                records, FLAGS.batch_size, FLAGS.batches, FLAGS.warmup, cache)
            logging.info("pipeline cache_images=%s: %.0f pairs/s", cache, rate)
        inputs, labels = next(iter(pairs.make_pair_dataset(records, FLAGS.batch_size, 0, 1)))
    train = bench_train(FLAGS.model, inputs, labels, FLAGS.train_steps) if FLAGS.model else None
    if train is not None:
        rates[f"train step ({FLAGS.model})"] = train
        logging.info("training step: %.1f pairs/s; pipeline (cached) / training = %.0f×", train,
                     rates["pipeline (cached)"] / train)
    reference = train or np.nan
    print(f"\n{'stage':<26}{'pairs/s':>10}{'× training':>12}")
    for name, rate in rates.items():
        print(f"{name:<26}{rate:>10.1f}{rate / reference:>12.1f}")


if __name__ == "__main__":
    cli.run(main)
