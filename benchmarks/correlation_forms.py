"""Correlation forms (Eq. 2) that only the benchmarks time: TensorFlow im2col, per sample and for one
signal against many kernels, and TF's depth-wise convolution with a channel multiplier.

They lost to the forms the project uses (the layer's "shift" for training, reid_tf.layers.correlation;
the NumPy im2col of reid_tf.correlation_as_matmul for scoring) and stay here so that `benchmarks/bench_scoring.py`
(f) can keep comparing against them; tests/test_scoring.py checks each against the per-sample loop.
All follow the layer's convention: per channel, no kernel flip, TF "SAME" zero padding (for an even
kernel the extra row/column of padding is at the bottom/right).
"""
from __future__ import annotations

import tensorflow as tf

from reid_tf.layers.correlation import same_padding

__all__ = ["signal_patches", "xcorr_depthwise_multiplier", "xcorr_im2col", "xcorr_shared_kernels"]


def signal_patches(signal, kernel_hw: tuple[int, int]):
    """im2col of the signal in TensorFlow, channel-major: (N, H, W, C) → (C, h·w, N·H·W).

    patches[c, i·w + j, (n·H + y)·W + x] = SAME-padded signal[n, y + i, x + j, c].
    """
    _, H, W, C = signal.shape
    h, w = kernel_hw
    xp = tf.pad(tf.transpose(signal, (3, 0, 1, 2)), [[0, 0], [0, 0], same_padding(h), same_padding(w)])
    # (C, N, H+h−1, W+w−1); each tap is one shifted window, stacked on axis 1 so that every slice is
    # written as one contiguous (N, H, W) block (faster than stacking the taps innermost: docs/RESULTS.md).
    taps = tf.stack([xp[:, :, i:i + H, j:j + W] for i in range(h) for j in range(w)], axis=1)  # (C,hw,N,H,W)
    return tf.reshape(taps, (C, h * w, -1))  # -> (C, h·w, N·H·W)


def xcorr_shared_kernels(signal, kernels):
    """Every signal against every kernel, TF im2col + one batched matmul.

    Args:
      signal: (N, H, W, C).
      kernels: (M, h, w, C).
    Returns:
      (N, M, H, W, C): out[n, m] = Eq. 2 of signal[n] with kernels[m].
    """
    N, H, W, C = signal.shape
    M, h, w, _ = kernels.shape
    k = tf.reshape(tf.transpose(kernels, (3, 1, 2, 0)), (C, h * w, M))  # (M,h,w,C) -> (C, h·w, M)
    out = tf.matmul(signal_patches(signal, (h, w)), k, transpose_a=True)  # (C, N·H·W, M)
    return tf.transpose(tf.reshape(out, (C, N, H, W, M)), (1, 4, 2, 3, 0))  # -> (N, M, H, W, C)


def xcorr_depthwise_multiplier(signal, kernels):
    """Same contract as `xcorr_shared_kernels`, as one TF depth-wise convolution with multiplier M."""
    N, H, W, C = signal.shape
    M = kernels.shape[0]
    k = tf.transpose(kernels, (1, 2, 3, 0))  # (M, h, w, C) -> (h, w, C, M)
    out = tf.nn.depthwise_conv2d(signal, k, [1, 1, 1, 1], "SAME")  # (N, H, W, C·M), channel c·M + m
    return tf.transpose(tf.reshape(out, (N, H, W, C, M)), (0, 4, 1, 2, 3))  # -> (N, M, H, W, C)


def xcorr_im2col(signal, kernels):
    """Per-sample Eq. 2, the layer's contract ((B,H,W,C), (B,h,w,C) → (B,H,W,C)), via im2col + matmul."""
    B, H, W, C = signal.shape
    _, h, w, _ = kernels.shape
    patches = tf.reshape(signal_patches(signal, (h, w)), (C, h * w, B, H * W))
    patches = tf.transpose(patches, (2, 0, 3, 1))  # -> (B, C, H·W, h·w)
    k = tf.reshape(tf.transpose(kernels, (0, 3, 1, 2)), (B, C, h * w, 1))  # (B,h,w,C) -> (B, C, h·w, 1)
    out = tf.matmul(patches, k)  # (B, C, H·W, 1)
    return tf.transpose(tf.reshape(out, (B, C, H, W)), (0, 2, 3, 1))  # -> (B, H, W, C)
