"""The affine spatial transformer of a CSN (§3.1, Eq. 1; Table 1 "Localization Net"; §4.2 constraints).

θ parameterisation (our reading of §4.2, recorded in docs/DESIGN.md): the localisation net ends in
"a linear embedding with dimension 6 and tanh" (§3.1), giving u ∈ (−1, 1)^6, mapped to

    s = s_min + (1 − s_min)·(u_s + 1)/2          ∈ [s_min, 1]        (scale > 0 always)
    r = ρ·(1 − s)·u_r                            |r| ≤ ρ(1 − s)
    t = (1 − s − |r|)·u_t                        |t| ≤ 1 − s − |r|   (window inside the stripe)

per axis, so |s·w_out + r·h_out + t| ≤ 1 for every output point: the sampled window can never leave
the stripe and never flip, by construction rather than by a penalty. The last layer starts with a
zero kernel and the bias of the fixed central crop of configuration C2 (Table 4), so C2 is exactly
"this STN frozen at its initial value".
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from reid_tf import config
from reid_tf.layers.blocks import ConvBlock, weight_decay
from reid_tf.layers.sampler import affine_sample

# Position of each θ parameter in the 6 outputs of the localisation net: θ = [[s_w, r_w, t_w],
# [r_h, s_h, t_h]] flattened row-major (Eq. 1).
S_W, R_W, T_W, R_H, S_H, T_H = range(6)


def central_crop_theta(stripe_hw: tuple[int, int], part_size: int) -> np.ndarray:
    """θ (2, 3) of C2: a centred window with one output pixel per input pixel (scale (f−1)/(n−1))."""
    h, w = stripe_hw
    s_h = min(1.0, (part_size - 1) / (h - 1)) if h > 1 else 1.0
    s_w = min(1.0, (part_size - 1) / (w - 1)) if w > 1 else 1.0
    return np.array([[s_w, 0.0, 0.0], [0.0, s_h, 0.0]], dtype="float32")


def _scale_to_unit(s: float, min_scale: float) -> float:
    """Inverse of the scale map: the u that gives scale s (kept strictly inside (−1, 1))."""
    return float(np.clip(2.0 * (s - min_scale) / (1.0 - min_scale) - 1.0, -0.999, 0.999))


def theta_from_unit(u, min_scale: float = config.THETA_MIN_SCALE,
                    max_rotation_fraction: float = config.THETA_MAX_ROTATION_FRACTION):
    """Map tanh outputs u (B, 6) to a constrained θ (B, 2, 3) — see the module docstring."""

    def axis(u_s, u_r, u_t):
        s = min_scale + (1.0 - min_scale) * (u_s + 1.0) / 2.0
        r = max_rotation_fraction * (1.0 - s) * u_r
        t = (1.0 - s - ops.abs(r)) * u_t
        return s, r, t

    s_w, r_w, t_w = axis(u[:, S_W], u[:, R_W], u[:, T_W])
    s_h, r_h, t_h = axis(u[:, S_H], u[:, R_H], u[:, T_H])
    rows = [ops.stack([s_w, r_w, t_w], -1), ops.stack([r_h, s_h, t_h], -1)]
    return ops.stack(rows, axis=1)  # (B, 2, 3)


def initial_unit_bias(stripe_hw: tuple[int, int], part_size: int,
                      min_scale: float = config.THETA_MIN_SCALE) -> np.ndarray:
    """Pre-tanh bias (6,) whose θ is the C2 central crop (rotation and translation zero)."""
    theta = central_crop_theta(stripe_hw, part_size)
    bias = np.zeros(6, dtype="float32")
    bias[S_W] = math.atanh(_scale_to_unit(theta[0, 0], min_scale))
    bias[S_H] = math.atanh(_scale_to_unit(theta[1, 1], min_scale))
    return bias


@keras.saving.register_keras_serializable(package="reid_tf")
class AffineSTN(keras.layers.Layer):
    """Localisation net (Table 1) + tanh + constrained θ + bilinear sampler (§3.1, Eq. 1).

    Args:
      part_size: f, the sampler's output is f × f (f2 = 10, f3 = 5, f4 = 3).
      fixed: no localisation net; θ is always the C2 central crop (Table 4, C2).
      min_scale, max_rotation_fraction: the θ constraints (module docstring).
    Call arguments:
      stripe: (B, H, W, C) one horizontal stripe of a feature map.
    Returns:
      (part (B, f, f, C), θ (B, 2, 3)).
    """

    def __init__(self, part_size: int, fixed: bool = False,
                 min_scale: float = config.THETA_MIN_SCALE,
                 max_rotation_fraction: float = config.THETA_MAX_ROTATION_FRACTION, **kwargs):
        super().__init__(**kwargs)
        if part_size < 1:
            raise ValueError(f"part_size must be ≥ 1, got {part_size}")
        if not 0.0 < min_scale < 1.0:
            raise ValueError(f"min_scale must be in (0, 1), got {min_scale}")
        self.part_size, self.fixed = int(part_size), bool(fixed)
        self.min_scale, self.max_rotation_fraction = float(min_scale), float(max_rotation_fraction)
        if not self.fixed:
            self.loc1 = ConvBlock(*config.LOC_CONV1[::-1], pool=True, name="loc_conv1")
            self.loc2 = ConvBlock(*config.LOC_CONV2[::-1], pool=True, name="loc_conv2")
            self.loc3 = ConvBlock(*config.LOC_CONV3[::-1], pool=False, name="loc_conv3")

    def build(self, input_shape):
        stripe_hw = (int(input_shape[1]), int(input_shape[2]))
        self.theta0 = central_crop_theta(stripe_hw, self.part_size)
        if self.fixed:
            return
        self.loc1.build(input_shape)
        s1 = self.loc1.compute_output_shape(input_shape)
        self.loc2.build(s1)
        s2 = self.loc2.compute_output_shape(s1)
        self.loc3.build(s2)
        self.theta_dense = keras.layers.Dense(
            config.THETA_SIZE, activation="tanh", kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(
                initial_unit_bias(stripe_hw, self.part_size, self.min_scale)),
            kernel_regularizer=weight_decay(), name="theta",
        )
        self.theta_dense.build((None, config.LOC_CONV3[1]))

    @property
    def localisation_layers(self) -> tuple:
        """The localisation net's layers, conv 1–3 and the θ dense layer (none when fixed)."""
        return () if self.fixed else (self.loc1, self.loc2, self.loc3, self.theta_dense)

    def theta(self, stripe, training=None):
        """θ (B, 2, 3) for each stripe (B, H, W, C)."""
        if self.fixed:
            ones = ops.ones_like(stripe[:, :1, 0, 0])  # (B, 1): a batch-sized broadcast anchor
            return ops.expand_dims(ones, -1) * ops.convert_to_tensor(self.theta0)[None]
        z = self.loc3(self.loc2(self.loc1(stripe, training=training), training=training), training=training)
        u = self.theta_dense(ops.mean(z, axis=(1, 2)))  # GAP (Table 1) → linear 6 + tanh (§3.1)
        return theta_from_unit(u, self.min_scale, self.max_rotation_fraction)

    def call(self, stripe, training=None):
        theta = self.theta(stripe, training=training)
        return affine_sample(stripe, theta, (self.part_size, self.part_size)), theta

    def compute_output_shape(self, input_shape):
        b, c = input_shape[0], input_shape[-1]
        return (b, self.part_size, self.part_size, c), (b, 2, 3)

    def get_config(self):
        return {**super().get_config(), "part_size": self.part_size, "fixed": self.fixed,
                "min_scale": self.min_scale, "max_rotation_fraction": self.max_rotation_fraction}
