"""Depth-wise cross-correlation of one image's features with another image's parts (§3.1, Eq. 2)."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def depthwise_xcorr(signal, kernels):
    """Per sample and per channel cross-correlation, no kernel flip, TF "SAME" zero padding.

    The batch is folded into the channel axis so that one depth-wise convolution computes all B·C
    correlations (DESIGN "Depth-wise cross-correlation"): sample b, channel c becomes channel b·C + c.

    Args:
      signal: (B, H, W, C).
      kernels: (B, h, w, C), one kernel per sample and channel.
    Returns:
      (B, H, W, C): out[b, y, x, c] = Σ_ij signal[b, y + i − ⌊(h−1)/2⌋, x + j − ⌊(w−1)/2⌋, c] · kernels[b, i, j, c].
    """
    H, W, C = signal.shape[1], signal.shape[2], signal.shape[3]
    h, w = kernels.shape[1], kernels.shape[2]
    sig = ops.reshape(ops.transpose(signal, (1, 2, 0, 3)), (1, H, W, -1))  # (B,H,W,C) -> (1,H,W,B·C)
    ker = ops.reshape(ops.transpose(kernels, (1, 2, 0, 3)), (h, w, -1, 1))  # (B,h,w,C) -> (h,w,B·C,1)
    out = ops.depthwise_conv(sig, ker, strides=1, padding="same")  # (1, H, W, B·C)
    return ops.transpose(ops.reshape(out, (H, W, -1, C)), (2, 0, 1, 3))  # -> (H,W,B,C) -> (B,H,W,C)


def same_padding(size: int) -> tuple[int, int]:
    """Zero rows (before, after) that TF "SAME" adds around a signal for a kernel of `size` (stride 1)."""
    return (size - 1) // 2, size // 2


def _pad_same(signal, kernel_hw: tuple[int, int]):
    """(B, H, W, C) → (B, H + h − 1, W + w − 1, C), zero-padded as "SAME" does."""
    return tf.pad(signal, [[0, 0], same_padding(kernel_hw[0]), same_padding(kernel_hw[1]), [0, 0]])


def depthwise_xcorr_parts_fft(signal, kernels):
    """Eq. 2 for each sample's signal with its own P kernels, via FFT (same convention as above).

    Padding as "SAME" does and correlating circularly at (H + h − 1, W + w − 1) wraps nothing into
    the first H × W outputs, and each signal's spectrum is shared by its P kernels. CSN's "fft"
    form: to train, slower than the "shift" form below and faster than the folded depth-wise
    convolution (benchmarks/bench_scoring.py (f); the figures: docs/RESULTS.md, "Speed").
    keras.ops has no 2-D real FFT, hence tf.signal.

    Args:
      signal: (B, H, W, C).
      kernels: (B, P, h, w, C).
    Returns:
      (B, P, H, W, C).
    """
    H, W = signal.shape[1], signal.shape[2]
    h, w = kernels.shape[2], kernels.shape[3]
    size = [H + h - 1, W + w - 1]
    X = tf.signal.rfft2d(tf.transpose(_pad_same(signal, (h, w)), (0, 3, 1, 2)))  # (B, C, H', W'')
    K = tf.signal.rfft2d(tf.transpose(kernels, (0, 1, 4, 2, 3)), fft_length=size)  # (B, P, C, H', W'')
    out = tf.signal.irfft2d(X[:, None] * tf.math.conj(K), fft_length=size)[..., :H, :W]  # (B, P, C, H, W)
    return tf.transpose(out, (0, 1, 3, 4, 2))  # -> (B, P, H, W, C)


def _shift_sum(padded, kernels):
    """Σ_ij padded[:, :, i:i+H, j:j+W, :] · kernels[:, :, i, j, :] — Eq. 2 written as h·w shifted
    multiply-adds, which XLA fuses into one loop over the output.

    Args:
      padded: (B, 1 or P, H + h − 1, W + w − 1, C).
      kernels: (B, P, h, w, C).
    Returns:
      (B, P, H, W, C).
    """
    h, w = kernels.shape[2], kernels.shape[3]
    H, W = padded.shape[2] - h + 1, padded.shape[3] - w + 1
    out = padded[:, :, :H, :W] * kernels[:, :, :1, :1]
    for i in range(h):
        for j in range(w):
            if i or j:
                out = out + padded[:, :, i:i + H, j:j + W] * kernels[:, :, i:i + 1, j:j + 1]
    return out


@tf.function(jit_compile=True)
def _xcorr_shift_forward(signal, kernels):
    """(B, H, W, C), (B, P, h, w, C) → (B, P, H, W, C): Eq. 2 with "SAME" zero padding."""
    return _shift_sum(_pad_same(signal, kernels.shape[2:4])[:, None], kernels)


@tf.function(jit_compile=True)
def _xcorr_shift_grad_signal(grad, kernels):
    """∂L/∂signal (B, H, W, C) from ∂L/∂out (B, P, H, W, C): the adjoint of the forward, i.e. the
    output gradient, padded the other way round, correlated with the flipped kernels, summed over P."""
    (top, bottom), (left, right) = same_padding(kernels.shape[2]), same_padding(kernels.shape[3])
    padded = tf.pad(grad, [[0, 0], [0, 0], [bottom, top], [right, left], [0, 0]])
    return tf.reduce_sum(_shift_sum(padded, kernels[:, :, ::-1, ::-1]), axis=1)


# Output-gradient rows per XLA call of the kernel gradient: one call then reads a few rows of the
# gradient and the signal, which stay in cache for all h·w outputs. 4 rows were the fastest measured
# at level 2, faster than all rows in one call and than the FFT (docs/RESULTS.md, "Speed").
_KERNEL_GRAD_ROWS = 4


@tf.function(jit_compile=True)
def _xcorr_grad_kernels_rows(padded, grad):
    """Σ_{y, x} grad[:, :, y, x] · padded[:, :, y + i, x + j] over the rows given → (B, P, h, w, C).

    padded: (B, 1, rows + h − 1, W + w − 1, C); grad: (B, P, rows, W, C).
    """
    rows, W = grad.shape[2], grad.shape[3]
    h, w = padded.shape[2] - rows + 1, padded.shape[3] - W + 1
    out = None
    for y in range(rows):
        for x in range(W):
            term = padded[:, :, y:y + h, x:x + w] * grad[:, :, y:y + 1, x:x + 1]
            out = term if out is None else out + term
    return out


def _xcorr_grad_kernels(grad, signal, kernel_hw):
    """∂L/∂kernels (B, P, h, w, C) = Σ_yx grad[y, x] · padded signal[y + i, x + j], summed over
    blocks of _KERNEL_GRAD_ROWS rows (one XLA call each; see there why)."""
    h, H = kernel_hw[0], signal.shape[1]
    padded = _pad_same(signal, kernel_hw)[:, None]  # (B, 1, H', W', C)
    blocks = [_xcorr_grad_kernels_rows(padded[:, :, y:min(y + _KERNEL_GRAD_ROWS, H) + h - 1],
                                       grad[:, :, y:y + _KERNEL_GRAD_ROWS])
              for y in range(0, H, _KERNEL_GRAD_ROWS)]
    return tf.add_n(blocks)


@tf.autograph.experimental.do_not_convert
@tf.custom_gradient
def depthwise_xcorr_parts_shift(signal, kernels):
    """The same as depthwise_xcorr_parts_fft, computed as XLA-fused shifted sums.

    Forward and ∂/∂signal are h·w shifted multiply-adds (one fused loop each); ∂/∂kernels is the
    same kind of sum over the output positions, in blocks of rows. The fastest training form
    measured on 2 CPU cores (benchmarks/bench_scoring.py (f)); XLA compiles each function once per
    input shape, on CPU and GPU alike.

    Args:
      signal: (B, H, W, C).
      kernels: (B, P, h, w, C).
    Returns:
      (B, P, H, W, C).
    """
    kernel_hw = (kernels.shape[2], kernels.shape[3])

    def grad(upstream):
        return (_xcorr_shift_grad_signal(upstream, kernels),
                _xcorr_grad_kernels(upstream, signal, kernel_hw))

    return _xcorr_shift_forward(signal, kernels), grad


@keras.saving.register_keras_serializable(package="reid_tf")
class DepthwiseCrossCorrelation(keras.layers.Layer):
    """Eq. 2: s = x_i^j * x_{i'}^{(j, part)}, the part used as a depth-wise filter over the other image.

    Call arguments:
      inputs: [signal (B, H, W, C), kernels (B, h, w, C)].
    Returns:
      (B, H, W, C), the similarity score maps (same size as the signal thanks to zero padding).
    Example:
      >>> s = DepthwiseCrossCorrelation()([x2_of_image_1, upper_part_of_image_2])
    """

    def call(self, inputs):
        signal, kernels = inputs
        return depthwise_xcorr(signal, kernels)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])
