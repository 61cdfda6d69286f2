"""The bilinear sampler of the spatial transformer (Jaderberg et al. 2015; paper §3.1, Eq. 1).

Convention (DESIGN "Sampler convention"): normalised coordinates in [−1, 1] where −1 and +1 are
the centres of the first and last pixel; θ maps output (w_out, h_out, 1) to input (w_in, h_in);
bilinear interpolation with neighbours outside the input contributing zero. Written as a gather so
that gradients reach both the features and θ (the image ops of Keras/TF give none w.r.t. θ).
"""
from __future__ import annotations

from keras import ops


def _grid(n: int):
    """n normalised coordinates from −1 to +1 (a single sample sits at the centre, 0)."""
    return ops.linspace(-1.0, 1.0, n) if n > 1 else ops.zeros((1,))


def _snap(p, tol: float = 1e-4):
    """Move coordinates within `tol` of a pixel centre onto it, keeping d(out)/d(p) = 1.

    Float rounding of the grid puts e.g. 2.9999998 where 3 is meant, which would blend in 2e-7 of
    a neighbour: with the snap an identity θ (and the C2 crop) reproduces its input exactly. The
    straight-through form (value snapped, gradient of the identity) keeps gradients w.r.t. θ alive
    on pixel centres, where the C2 initialisation of the STN starts.
    """
    nearest = ops.round(p)
    close = ops.abs(p - nearest) < tol
    return p + ops.stop_gradient(ops.where(close, nearest - p, ops.zeros_like(p)))


def affine_sample(features, theta, size: tuple[int, int]):
    """Sample `features` on the grid of the affine `theta`.

    Args:
      features: (B, H, W, C) float.
      theta: (B, 2, 3) rows [s_w, r_w, t_w], [r_h, s_h, t_h] (Eq. 1).
      size: output (h, w).
    Returns:
      (B, h, w, C), differentiable w.r.t. features and theta.
    """
    h, w = size
    H, W, C = features.shape[1], features.shape[2], features.shape[3]
    theta = ops.cast(theta, features.dtype)
    ys, xs = ops.meshgrid(_grid(h), _grid(w), indexing="ij")  # (h, w) each
    grid = ops.stack([ops.reshape(xs, (-1,)), ops.reshape(ys, (-1,)), ops.ones((h * w,))])  # (3, hw)
    src = ops.einsum("bij,jp->bip", theta, ops.cast(grid, features.dtype))  # (B, 2, hw)
    # normalised → pixel coordinates (align-corners): −1 ↦ 0, +1 ↦ size − 1
    x = (src[:, 0] + 1.0) * (W - 1) / 2.0  # (B, hw)
    y = (src[:, 1] + 1.0) * (H - 1) / 2.0
    # Non-finite coordinates (a diverged θ) would become garbage gather indices; send them far
    # outside instead, where they sample zeros, so the NaN shows up in the loss guard, not as a crash.
    x = ops.where(ops.isfinite(x), x, -2.0 * ops.ones_like(x))
    y = ops.where(ops.isfinite(y), y, -2.0 * ops.ones_like(y))
    x, y = _snap(x), _snap(y)
    x0, y0 = ops.floor(x), ops.floor(y)
    # The four neighbours of every sample point at once: (B, 4, hw) rows of the flattened batch.
    xi = ops.stack([x0, x0 + 1.0, x0, x0 + 1.0], axis=1)
    yi = ops.stack([y0, y0, y0 + 1.0, y0 + 1.0], axis=1)
    # Floor-based weights (x − x0 and x0 + 1 − x), as in standard bilinear samplers: on a pixel
    # centre (x = x0) the gradient w.r.t. x is the forward difference f(x0 + 1) − f(x0). The form
    # 1 − |x − x_i| would give f(x0 + 1) alone there (TF's d|t|/dt at 0 is 0), and the C2
    # initialisation of every STN puts all sample points on pixel centres.
    dx, dy = x - x0, y - y0  # in [0, 1); floor has no gradient, so d(dx)/dx = 1
    wx = ops.stack([1.0 - dx, dx, 1.0 - dx, dx], axis=1)
    wy = ops.stack([1.0 - dy, 1.0 - dy, dy, dy], axis=1)
    weight = wx * wy  # (B, 4, hw)
    inside = (xi >= 0) & (xi <= W - 1) & (yi >= 0) & (yi <= H - 1)
    weight = weight * ops.cast(inside, weight.dtype)
    local = ops.cast(ops.clip(yi, 0, H - 1) * W + ops.clip(xi, 0, W - 1), "int32")  # (B, 4, hw)
    row = local + ops.reshape(ops.arange(ops.shape(features)[0], dtype="int32") * (H * W), (-1, 1, 1))
    # One row gather (C values each) from (B·H·W, C); its gradient is a row-wise segment sum.
    values = ops.take(ops.reshape(features, (-1, C)), row, axis=0)  # (B, 4, hw, C)
    out = ops.sum(values * ops.expand_dims(weight, -1), axis=1)  # (B, hw, C)
    return ops.reshape(out, (-1, h, w, C))  # (B, hw, C) -> (B, h, w, C)
