"""Pieces the benchmarks share: the real training step (reid_tf.pair_trainer.PairTrainer, the objective
of training itself) on per-pair and on shared-image batches."""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from reid_tf import config, pairs
from reid_tf.model import build_model
from reid_tf.pair_trainer import PairTrainer, make_optimizer

# Shared batches as training makes them by default (K camera-A + K camera-B images a visit).
SHARED_K = config.SHARED_IMAGES_PER_CAMERA


def random_images(n: int, seed: int) -> np.ndarray:
    shape = (n, config.INPUT_HEIGHT, config.INPUT_WIDTH, config.INPUT_CHANNELS)
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


def training_model(preset: str, correlation: str = "shift") -> PairTrainer:
    """The network in PairTrainer, compiled as reid_tf.train compiles it: L_cls + L_ctr (not for
    "cls") + θ penalty + weight decay, Adam."""
    cfg = config.get_model_config(preset)
    model = PairTrainer(build_model(cfg, correlation=correlation), contrastive=cfg.contrastive)
    model.compile(optimizer=make_optimizer(), jit_compile=False)
    return model


def train_step(model: PairTrainer):
    """One optimisation step of model.fit's own train function: step(x, y) -> logs."""
    return lambda x, y: model.train_on_batch(x, y, return_dict=True)


def per_pair_batch(batch: int, seed: int = 7) -> tuple[dict, tf.Tensor]:
    """`batch` pairs of random images, 1 : 2 positives : negatives (§4.2)."""
    x = {"image_a": tf.constant(random_images(batch, seed)), "image_b": tf.constant(random_images(batch, seed + 1))}
    return x, tf.constant((np.arange(batch) % 3 == 0).astype("int32"))


def shared_batch(batch: int, seed: int = 7, k: int = SHARED_K) -> tuple[dict, tf.Tensor]:
    """A shared-image batch of the size reid_tf.pairs gives for `batch` (random images, the pair
    structure of reid_tf.pairs.batch_pairs): 2KV images, 3K²V pairs."""
    v = pairs.visits_per_batch(batch, k)
    index_a, index_b, labels = pairs.batch_pairs(np.arange(v), k, np.random.default_rng(seed), swap=True)
    x = {"images": tf.constant(random_images(2 * k * v, seed)), "index_a": tf.constant(index_a),
         "index_b": tf.constant(index_b)}
    return x, tf.constant(labels)
