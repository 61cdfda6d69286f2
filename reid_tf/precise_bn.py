"""Precise batch-norm statistics: a trained network's moving means and variances re-estimated with
its final weights (docs/DESIGN.md "Precise BN").

Training keeps each BN layer's statistics as an exponential moving average over the batches of
the last few hundred steps (Keras's momentum 0.99), computed with the weights of those steps; with
Adam at a constant learning rate the weights move enough in that window that the averages lag
them. `recalibrate` sets every BN layer's moving mean and variance to the plain mean of its batch
statistics over `n` training batches run forward (training mode) with the current weights; no
weight changes. The paper's models are evaluated on their moving averages as trained; this is a
separate measurement (`experiments.curve --precise_bn=N`), never the default.

A layer's "batch statistic" is that of every activation it sees during the batch's forward pass:
the Siamese network of per-pair batches runs its encoder twice (image_a, then image_b), so the
encoder's BN layers are called twice and their statistic pools both calls (the mean and the biased
variance of the union, from each call's moments and size); on shared-image batches the encoder
runs once over the batch's images and the head once over its pairs.
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
    calls = [[] for _ in layers]  # per layer, this batch's (mean, variance, count) of each call
    used = 0
    try:
        for layer, seen in zip(layers, calls):
            layer.momentum = 0.0  # each training call leaves exactly that call's statistics ...
            layer.call = _recording(layer, seen)  # ... which are read after every call, not per batch
        for batch in itertools.islice(batches, n):
            for seen in calls:
                seen.clear()
            model(batch[0] if isinstance(batch, tuple) else batch, training=True)
            for total, seen, layer in zip(sums, calls, layers):
                # a layer not updated in training mode (frozen) keeps its statistics, as Keras does
                mean, variance = pooled(seen) if seen else (layer.moving_mean.numpy(), layer.moving_variance.numpy())
                total[0] += mean
                total[1] += variance
            used += 1
    except BaseException:  # a failed batch (or Ctrl-C): the statistics as they were
        _set(layers, before)
        raise
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
            layer.__dict__.pop("call", None)  # the class's call again
    if not used:
        _set(layers, before)
        raise ValueError("precise BN: no batch to average over")
    _set(layers, [(mean / used, variance / used) for mean, variance in sums])
    return used


def _recording(layer, seen: list):
    """`layer.call`, appending (mean, biased variance, activations per channel) of each training
    call to `seen`, as the layer itself computed them (momentum 0: its moving statistics)."""
    call = type(layer).call.__get__(layer)

    def recording_call(inputs, training=None, mask=None):
        out = call(inputs, training=training, mask=mask)
        if training and layer.trainable:  # when Keras updates the moving statistics
            count = int(np.prod(inputs.shape)) // int(inputs.shape[layer.axis])
            seen.append((layer.moving_mean.numpy(), layer.moving_variance.numpy(), count))
        return out

    return recording_call


def pooled(seen: list) -> tuple[np.ndarray, np.ndarray]:
    """The mean and biased variance of the union of several calls' activations, from each call's
    (mean, biased variance, count): the count-weighted means, and the count-weighted variances plus
    the spread of the calls' means about the union's (no E[x²] − E[x]²: that cancels badly)."""
    weights = np.array([c for _, _, c in seen], np.float64)
    weights /= weights.sum()
    means = np.array([m for m, _, _ in seen], np.float64)
    variances = np.array([v for _, v, _ in seen], np.float64)
    mean = weights @ means
    return mean, weights @ (variances + (means - mean) ** 2)


def _set(layers, statistics) -> None:
    for layer, (mean, variance) in zip(layers, statistics):
        layer.moving_mean.assign(np.asarray(mean, layer.moving_mean.dtype))
        layer.moving_variance.assign(np.asarray(variance, layer.moving_variance.dtype))
