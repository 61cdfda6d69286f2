"""Convolution Similarity Network, one per level (§3.1, Figure 3)."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from reid_tf.layers.correlation import depthwise_xcorr, depthwise_xcorr_parts_fft, depthwise_xcorr_parts_shift
from reid_tf.layers.stn import AffineSTN

CORRELATIONS = ("shift", "fft", "direct")


def _similarity_by_parts(xcorr_parts, x_a, x_b, parts_a, parts_b):
    """CSN.similarity from a per-sample form (signal (N,H,W,C), kernels (N,P,f,f,C) → (N,P,H,W,C)):
    maps (B,H,W,C), parts (B,P,f,f,C) → (B, H, W, 2·P·C), channels [x_a * parts_b (part-major),
    x_b * parts_a]; each map is read once for its P parts."""
    P = parts_a.shape[1]
    H, W, C = x_a.shape[1], x_a.shape[2], x_a.shape[3]
    s = xcorr_parts(ops.concatenate([x_a, x_b], 0), ops.concatenate([parts_b, parts_a], 0))  # (2B, P, H, W, C)
    s = ops.transpose(ops.reshape(s, (2, -1, P, H, W, C)), (1, 3, 4, 0, 2, 5))  # -> (B, H, W, 2, P, C)
    return ops.reshape(s, (-1, H, W, 2 * P * C))  # -> (B, H, W, 2P·C)


def similarity_fft(x_a, x_b, parts_a, parts_b):
    """CSN.similarity by FFT, each map's spectrum shared by its P parts."""
    return _similarity_by_parts(depthwise_xcorr_parts_fft, x_a, x_b, parts_a, parts_b)


def similarity_shift(x_a, x_b, parts_a, parts_b):
    """CSN.similarity by XLA-fused shifted sums, with their hand-written gradient (the default)."""
    return _similarity_by_parts(depthwise_xcorr_parts_shift, x_a, x_b, parts_a, parts_b)


def similarity(correlation: str, x_a, x_b, parts_a, parts_b):
    """Eq. 2 in both directions by the named form: (B, H, W, 2·P·C) from maps (B,H,W,C), parts (B,P,f,f,C)."""
    if correlation not in CORRELATIONS:
        raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
    form = {"shift": similarity_shift, "fft": similarity_fft, "direct": similarity_direct}[correlation]
    return form(x_a, x_b, parts_a, parts_b)


def similarity_direct(x_a, x_b, parts_a, parts_b):
    """The same maps as `similarity`, by the batch-folded depth-wise convolution."""
    P = parts_a.shape[1]
    H, W, C = x_a.shape[1], x_a.shape[2], x_a.shape[3]
    f = parts_a.shape[2]
    signal = ops.concatenate([x_a] * P + [x_b] * P, axis=0)  # (2P·B, H, W, C)
    # kernels: parts of b for the signal x_a, parts of a for x_b; (B,P,f,f,C) -> (P·B,f,f,C)
    kb = ops.reshape(ops.transpose(parts_b, (1, 0, 2, 3, 4)), (-1, f, f, C))
    ka = ops.reshape(ops.transpose(parts_a, (1, 0, 2, 3, 4)), (-1, f, f, C))
    s = depthwise_xcorr(signal, ops.concatenate([kb, ka], axis=0))  # (2P·B, H, W, C)
    s = ops.transpose(ops.reshape(s, (2 * P, -1, H, W, C)), (1, 2, 3, 0, 4))  # -> (B,H,W,2P,C)
    return ops.reshape(s, (-1, H, W, 2 * P * C))  # -> (B, H, W, 2P·C)


@keras.saving.register_keras_serializable(package="reid_tf")
class CSNParts(keras.layers.Layer):
    """The per-image half of a CSN: stripes → one shared STN per level → parts and θ.

    Args:
      part_size: f_j of the sampler.
      stripes: [start, stop) rows of each horizontal stripe (§4.2); None = one stripe, the whole
        map (Table 4, C1 "no dividing").
      stn: learn θ (False = Table 4, C2, the fixed central crop).
    Call arguments:
      x: (B, H, W, C), one image's level-j feature map.
    Returns:
      parts (B, P, f, f, C): the STN outputs (upper, middle, bottom), kernels of Eq. 2 and input of
        the ranking net; theta (B, P, 2, 3).
    """

    def __init__(self, part_size: int, stripes=None, stn: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.part_size, self.use_stn = int(part_size), bool(stn)
        self.stripes = None if stripes is None else [tuple(int(v) for v in s) for s in stripes]
        if self.stripes is not None:
            heights = {stop - start for start, stop in self.stripes}
            if len(heights) != 1 or min(heights) <= 0:
                raise ValueError(f"stripes must be non-empty and of one height, got {self.stripes}")
        self.stn = AffineSTN(self.part_size, fixed=not self.use_stn, name="stn")

    @property
    def num_parts(self) -> int:
        return 1 if self.stripes is None else len(self.stripes)

    def stripe_rows(self, height: int) -> list[tuple[int, int]]:
        """[start, stop) rows of every stripe of a map of this height."""
        return self.stripes if self.stripes is not None else [(0, height)]

    def _build_stn(self, map_shape):
        b, h, w, c = map_shape
        for start, stop in self.stripe_rows(h):
            if stop > h:
                raise ValueError(f"stripe rows [{start}, {stop}) exceed the feature map height {h}")
        start, stop = self.stripe_rows(h)[0]
        self.stn.build((None, stop - start, w, c))

    def build(self, input_shape):
        self._build_stn(input_shape)

    def parts(self, x, training=None):
        """x (B, H, W, C) → parts (B, P, f, f, C) and θ (B, P, 2, 3); depends on one image only."""
        rows = self.stripe_rows(x.shape[1])
        # Split the map once at every stripe boundary and build each (overlapping) stripe from its
        # segments: the backward pass then adds segment gradients instead of writing one
        # full-size, mostly-zero gradient per stripe (measured: benchmarks/profile_train.py).
        cuts = sorted({0, x.shape[1], *(r for stripe in rows for r in stripe)})
        # tf.split with static sizes (its gradient is one concat); keras.ops.split makes them dynamic
        segments = dict(zip(cuts[:-1], tf.split(x, [b - a for a, b in zip(cuts[:-1], cuts[1:])], axis=1)))
        stripes = []
        for start, stop in rows:
            pieces = [segments[c] for c in cuts[:-1] if start <= c < stop]
            stripes.append(pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=1))
        stacked = ops.stack(stripes, axis=1)  # (B, P, hs, W, C): sample-major, no transposes
        P, f, C = self.num_parts, self.part_size, x.shape[-1]
        part, theta = self.stn(ops.reshape(stacked, (-1, *stacked.shape[2:])), training=training)  # B·P stripes
        return ops.reshape(part, (-1, P, f, f, C)), ops.reshape(theta, (-1, P, 2, 3))

    def call(self, x, training=None):
        return self.parts(x, training=training)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        P, f = self.num_parts, self.part_size
        return (b, P, f, f, c), (b, P, 2, 3)

    def get_config(self):
        return {**super().get_config(), "part_size": self.part_size, "stripes": self.stripes,
                "stn": self.use_stn}


@keras.saving.register_keras_serializable(package="reid_tf")
class CSNSimilarity(keras.layers.Layer):
    """The pair half of a CSN: Eq. 2 in both directions, no weights.

    Args:
      correlation: how Eq. 2 is computed — "shift" (default: XLA-fused shifted multiply-adds, the
        fastest for training on CPU), "fft", or "direct" (the batch-folded depth-wise convolution:
        the paper's arithmetic, which reid_tf.complexity counts, and plain TF ops for export). All
        equal the per-sample loop (tests/test_layers.py); benchmarks/bench_scoring.py times them.
    Call arguments:
      inputs: [x_a, x_b, parts_a, parts_b]: maps (B, H, W, C), parts (B, P, f, f, C).
    Returns:
      sim (B, H, W, 2·P·C): s_a^(part) = x_a * part_b for the P parts, then s_b^(part) = x_b * part_a
        (Eq. 2, both directions, concatenated on channels; P = 3 → 6C).
    """

    def __init__(self, correlation: str = "shift", **kwargs):
        super().__init__(**kwargs)
        if correlation not in CORRELATIONS:
            raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
        self.correlation = correlation

    def call(self, inputs):
        x_a, x_b, parts_a, parts_b = inputs
        return similarity(self.correlation, x_a, x_b, parts_a, parts_b)

    def compute_output_shape(self, input_shape):
        (b, h, w, c), parts = input_shape[0], input_shape[2]
        return (b, h, w, 2 * parts[1] * c)

    def get_config(self):
        return {**super().get_config(), "correlation": self.correlation}


@keras.saving.register_keras_serializable(package="reid_tf")
class CSN(CSNParts):
    """Convolution Similarity Network (Figure 3) in one layer: both images' parts, then Eq. 2.

    The network (reid_tf.model) uses its two halves, CSNParts in the image encoder and
    CSNSimilarity in the pair head; this composite keeps the layer of Figure 3 whole for tests and
    for loading models saved before that split (same weights as CSNParts).

    Args: those of CSNParts, plus `correlation` (see CSNSimilarity).
    Call arguments:
      inputs: [x_a, x_b], the level-j feature maps of both images, (B, H, W, C) each.
    Returns:
      sim (B, H, W, 2·P·C), parts_a, parts_b (B, P, f, f, C), theta_a, theta_b (B, P, 2, 3).
    """

    def __init__(self, part_size: int, stripes=None, stn: bool = True, correlation: str = "shift", **kwargs):
        if correlation not in CORRELATIONS:
            raise ValueError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
        super().__init__(part_size, stripes, stn, **kwargs)
        self.correlation = correlation

    def build(self, input_shape):
        self._build_stn(input_shape[0])

    def similarity(self, x_a, x_b, parts_a, parts_b):
        """Eq. 2 in both directions: (B, H, W, 2·P·C) from maps (B,H,W,C) and parts (B,P,f,f,C)."""
        return similarity(self.correlation, x_a, x_b, parts_a, parts_b)

    def call(self, inputs, training=None):
        x_a, x_b = inputs
        parts_a, theta_a = self.parts(x_a, training=training)
        parts_b, theta_b = self.parts(x_b, training=training)
        return self.similarity(x_a, x_b, parts_a, parts_b), parts_a, parts_b, theta_a, theta_b

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape[0]
        P, f = self.num_parts, self.part_size
        return ((b, h, w, 2 * P * c), (b, P, f, f, c), (b, P, f, f, c), (b, P, 2, 3), (b, P, 2, 3))

    def get_config(self):
        return {**super().get_config(), "correlation": self.correlation}
