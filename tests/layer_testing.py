"""One contract check for every custom layer (after keras-hub's `run_layer_test`).

`run_layer_test` builds the layer from its constructor arguments and checks, in order:
  1. the config round trip: `get_config` holds every constructor argument, `from_config` rebuilds an
     equal config, and a whole `.keras`-style serialisation rebuilds the same class;
  2. a symbolic call on `keras.Input`s (what `build_model` does), against `compute_output_shape`;
  3. an eager call on the given arrays: the symbolic shapes with the batch filled in, finite values,
     and the layer rebuilt from its config with the same weights gives the same outputs;
  4. one training step: gradients of a loss on every float output reach every trainable weight (or,
     for a layer without weights, the inputs), an Adam step moves the weights, and BN moving
     statistics move with training=True.
It returns the eager outputs, so each layer's own test adds its numeric check against a hand-built
answer.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def run_layer_test(cls, init_kwargs: dict, inputs, *, trainable_weights: int, non_trainable_weights: int = 0,
                   call_kwargs: dict | None = None, no_gradient: tuple[str, ...] = ()):
    """The contract checks above for `cls(**init_kwargs)` called on `inputs` (an array or a list).

    trainable_weights / non_trainable_weights: how many variables the built layer must hold.
    no_gradient: substrings of weight paths that may get no gradient on this step (with reasons at
      the call site).
    Returns the eager outputs (a list, one array per output).
    """
    call_kwargs = call_kwargs or {}
    layer = cls(**init_kwargs)

    # 1. config round trip
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert key in config, f"get_config lacks the constructor argument {key!r}"
        assert _same(config[key], value), (key, config[key], value)
    revived = cls.from_config(config)
    assert revived.get_config() == config
    assert type(keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))) is cls

    # 2. symbolic call
    arrays = [np.asarray(x) for x in _as_list(inputs)]
    symbolic_inputs = [keras.Input(x.shape[1:], dtype=x.dtype.name) for x in arrays]
    one = not isinstance(inputs, (list, tuple))
    symbolic = _as_list(layer(symbolic_inputs[0] if one else symbolic_inputs, **call_kwargs))
    declared = layer.compute_output_shape(symbolic_inputs[0].shape if one else [t.shape for t in symbolic_inputs])
    declared = [declared] if len(symbolic) == 1 else list(declared)
    assert [tuple(t.shape) for t in symbolic] == [tuple(s) for s in declared]
    assert len(layer.trainable_weights) == trainable_weights, [w.path for w in layer.trainable_weights]
    assert len(layer.non_trainable_weights) == non_trainable_weights, [w.path for w in layer.non_trainable_weights]

    # 3. eager call
    eager_inputs = [tf.constant(x) for x in arrays]
    call_args = eager_inputs[0] if one else eager_inputs
    # (Keras passes `training` on only to layers whose call takes it)
    outputs = [np.asarray(y) for y in _as_list(layer(call_args, training=False, **call_kwargs))]
    batch = arrays[0].shape[0]
    assert [y.shape for y in outputs] == [(batch, *t.shape[1:]) for t in symbolic]
    assert all(np.all(np.isfinite(y)) for y in outputs if y.dtype.kind == "f")
    rebuilt = cls.from_config(config)
    rebuilt(call_args, **call_kwargs)
    rebuilt.set_weights(layer.get_weights())
    again = _as_list(rebuilt(call_args, training=False, **call_kwargs))
    for want, got in zip(outputs, again):
        np.testing.assert_array_equal(np.asarray(got), want)

    # 4. one training step
    moving_before = [w.numpy().copy() for w in layer.non_trainable_weights]
    with tf.GradientTape() as tape:
        tape.watch(eager_inputs)
        ys = _as_list(layer(call_args, training=True, **call_kwargs))
        loss = tf.add_n([tf.reduce_mean(tf.square(y)) for y in ys if y.dtype.is_floating])
    variables = layer.trainable_weights if trainable_weights else eager_inputs
    grads = tape.gradient(loss, variables)
    names = [getattr(v, "path", f"input {i}") for i, v in enumerate(variables)]
    missing = [n for n, g in zip(names, grads) if g is None or not np.any(np.asarray(g))]
    assert all(any(s in n for s in no_gradient) for n in missing), missing
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads if g is not None)
    if trainable_weights:
        before = [w.numpy().copy() for w in layer.trainable_weights]
        keras.optimizers.Adam(1e-3).apply_gradients(
            [(g, w) for g, w in zip(grads, layer.trainable_weights) if g is not None])
        moved = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.trainable_weights)]
        assert all(m or any(s in n for s in no_gradient) for m, n in zip(moved, names)), names
    for b, w in zip(moving_before, layer.non_trainable_weights):
        assert not np.array_equal(b, w.numpy()), f"{w.path} did not move in a training step"
    return outputs


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b



def find_layer(model: keras.Model, name: str):
    """A layer of a reid_tf network by its name, in the encoder or the pair head (e.g. "csn_2",
    "conv4"): for tests that check one layer of a built network (the library asks model.structure)."""
    from reid_tf.model import encoder_of, pair_head_of

    for part in (encoder_of(model), pair_head_of(model)):
        if name in {layer.name for layer in part.layers}:
            return part.get_layer(name)
    raise ValueError(f"{model.name} has no layer {name!r}")
