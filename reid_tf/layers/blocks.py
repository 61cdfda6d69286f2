"""Conv → BN → ReLU (→ 2×2 max-pool), the unit every convolution of Table 1 is built from."""
from __future__ import annotations

import keras
import tensorflow as tf

from reid_tf import config


def weight_decay() -> keras.regularizers.Regularizer:
    """§4.2 weight decay 5e-4 as TF1's l2_regularizer did it: 5e-4 · Σw² / 2 added to the loss."""
    return keras.regularizers.L2(config.WEIGHT_DECAY / 2)


@keras.saving.register_keras_serializable(package="reid_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training step on one device is TF's fused kernel.

    Keras 3 computes the batch moments with separate reductions (with `synchronized=True` even a
    tensor of ones per element, to count), then normalises elementwise: on conv1's 256 × 160 × 60
    × 32 activations that made BN cost more than the convolution (benchmarks/profile_train.py).
    `tf.nn.fused_batch_norm` does the moments, the normalisation and its gradient in one op each.
    Same layer, weights, momentum and moving statistics as Keras (its unbiased batch variance is
    turned back into Keras's biased one); under a multi-replica tf.distribute strategy, and for
    inference, Keras's own path runs, so synchronized BN across devices is unchanged.
    """

    def _fused_applies(self, inputs, training, mask) -> bool:
        return (bool(training) and self.trainable and mask is None and len(inputs.shape) == 4
                and self.axis in (-1, 3) and self.center and self.scale and not self.renorm
                and inputs.dtype == tf.float32 and self.epsilon > 1.001e-5  # the kernel's floor
                and tf.distribute.get_strategy().num_replicas_in_sync == 1)

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), unbiased.dtype)
        variance = unbiased * (n - 1.0) / n  # Keras keeps the biased batch variance
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y


@keras.saving.register_keras_serializable(package="reid_tf")
class ConvBlock(keras.layers.Layer):
    """Conv2D (same padding, no bias: BN follows) → BatchNorm (§4.2) → ReLU → optional 2×2 max-pool.

    Args:
      filters: output channels.
      kernel_size: square kernel size.
      pool: follow with 2×2 max pooling, stride 2, "same" padding (Table 1).
    Call arguments:
      x: (B, H, W, C_in).
    Returns:
      (B, H, W, filters), or (B, ⌈H/2⌉, ⌈W/2⌉, filters) when pool.
    """

    def __init__(self, filters: int, kernel_size: int, pool: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.pool = int(filters), int(kernel_size), bool(pool)
        self.conv = keras.layers.Conv2D(
            self.filters, self.kernel_size, padding="same", use_bias=False,
            kernel_regularizer=weight_decay(), name="conv",
        )
        # synchronized: under tf.distribute the batch statistics are those of the global batch, so
        # multi-device training computes what one device would (single device: no difference).
        self.bn = FusedBatchNormalization(synchronized=True, name="bn")
        self.pooling = keras.layers.MaxPooling2D(2, padding="same") if self.pool else None

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, x, training=None):
        x = keras.ops.relu(self.bn(self.conv(x), training=training))
        return self.pooling(x) if self.pool else x

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        if self.pool:
            h = None if h is None else -(-h // 2)
            w = None if w is None else -(-w // 2)
        return (b, h, w, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "pool": self.pool}
