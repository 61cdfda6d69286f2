"""Precise batch-norm statistics: a trained network's moving means and variances re-estimated with
its final weights (issue 11; docs/DESIGN.md "Precise BN").

Training keeps each BN layer's statistics as an exponential moving average over the batches of
the last few hundred steps (Keras's momentum 0.99), computed with the weights of those steps; with
Adam at a constant learning rate the weights move enough in that window that the averages lag
them. `recalibrate` sets every BN layer's moving mean and variance to the plain mean of its batch
statistics over `n` training batches run forward (training mode) with the current weights; no
weight changes. The paper's models are evaluated on their moving averages as trained; this is a
separate measurement (`experiments.curve --precise_bn=N`), never the default.
"""
from __future__ import annotations

import itertools

import keras
import numpy as np


def batch_norm_layers(model: keras.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer inside `model`, nested ones included, each once."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True):  # Keras's own recursive walk
        if isinstance(layer, keras.layers.BatchNormalization) and id(layer) not in seen:
            seen.add(id(layer))
            found.append(layer)
    return found


def recalibrate(model: keras.Layer, batches, n: int) -> int:
    """Set the moving statistics of `model`'s BN layers to the mean over `n` batches of the
    statistics each batch gives it in training mode.

    Args:
      model: the layers to recalibrate (e.g. a PairTrainer or its network).
      batches: an iterable of (inputs, labels) or inputs, e.g. the run's training dataset.
      n: batches to average over (>= 1).
    Returns: the number of batches used (fewer than n if `batches` ran out; 0 if the model has no
      BN layer). A batch that fails leaves the statistics as they were.
    """
    if n < 1:
        raise ValueError(f"precise BN needs at least one batch, not {n}")
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    before = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape, np.float64), np.zeros(layer.moving_variance.shape, np.float64)]
            for layer in layers]
    used = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # each training call leaves exactly that batch's statistics
        for batch in itertools.islice(batches, n):
            model(batch[0] if isinstance(batch, tuple) else batch, training=True)
            for total, layer in zip(sums, layers):
                total[0] += layer.moving_mean.numpy()
                total[1] += layer.moving_variance.numpy()
            used += 1
    except BaseException:  # a failed batch (or Ctrl-C): the statistics as they were
        _set(layers, before)
        raise
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not used:
        _set(layers, before)
        raise ValueError("precise BN: no batch to average over")
    _set(layers, [(mean / used, variance / used) for mean, variance in sums])
    return used


def _set(layers, statistics) -> None:
    for layer, (mean, variance) in zip(layers, statistics):
        layer.moving_mean.assign(np.asarray(mean, layer.moving_mean.dtype))
        layer.moving_variance.assign(np.asarray(variance, layer.moving_variance.dtype))
