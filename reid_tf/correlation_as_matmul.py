"""Eq. 2 of one signal against many kernels as im2col + batched matmul, fused with the max-pooling
that follows it in the model: the arithmetic of reid_tf.scoring.ScoringEngine, in NumPy.

One signal map x (H, W, C) is unrolled once into its im2col patches (C, H·W, f·f) (`signal_patches_numpy`);
the parts of many partner images form one (C, f·f, N·P) kernel matrix (`kernel_matrix`); a per-channel
batched matmul then gives every correlation at once (`correlate_and_pool`), instead of N·P depth-wise
convolutions. The patch rows are ordered window by window of the model's max-pooling (2^n × 2^n
windows, clipped at the map's end exactly as n successive 2 × 2 "same" poolings are: `pool_blocks`,
`patch_index`), so the pooling is a max over consecutive rows of the matmul's output.

Convention of the layer (reid_tf.layers.correlation): per channel, no kernel flip, TF "SAME" zero
padding. `xcorr_shared_kernels_numpy` is the same arithmetic without pooling, in the (N, M, H, W, C)
contract that tests/test_scoring.py checks against the per-sample loop.
"""
from __future__ import annotations

import functools

import numpy as np

from reid_tf.layers.correlation import same_padding

__all__ = ["correlate_and_pool", "kernel_matrix", "patch_index", "pool_blocks", "signal_patches_numpy",
           "xcorr_shared_kernels_numpy"]


@functools.lru_cache(maxsize=None)
def pool_blocks(map_hw: tuple[int, int], pool: int) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The max-pooling windows of an H × W map as rectangular blocks of grid cells of one window size.

    n successive 2 × 2 "same" poolings (pool = 2^n; each pads only at the end) take the max over
    the window [gy·pool, (gy+1)·pool) × [gx·pool, (gx+1)·pool), clipped to the map, for each cell of
    the ⌈H/pool⌉ × ⌈W/pool⌉ grid. Cells whose windows have the same size form at most 4 blocks
    (full, clipped at the bottom, at the right, at the corner).
    Returns: ((gy0, gy1, gx0, gx1, window height, window width), ...).
    """
    def spans(n):  # [(first cell, stop cell, window size)] along one axis
        full, rest = divmod(n, pool)
        return ([(0, full, pool)] if full else []) + ([(full, full + 1, rest)] if rest else [])

    return tuple((y0, y1, x0, x1, wy, wx) for y0, y1, wy in spans(map_hw[0]) for x0, x1, wx in spans(map_hw[1]))


@functools.lru_cache(maxsize=None)
def patch_index(map_hw: tuple[int, int], kernel_hw: tuple[int, int], pool: int = 1) -> np.ndarray:
    """Flat indices into the SAME-padded map, (R = H·W, h·w), rows ordered by max-pooling window.

    Rows run block by block of `pool_blocks`, cell by cell (row-major) inside a block, and over the
    cell's window (row-major) inside a cell, so that after the matmul the pooling is a max over
    consecutive rows. pool = 1: plain row-major order of the map.
    """
    W, (h, w) = map_hw[1], kernel_hw
    ys, xs = [], []
    for y0, y1, x0, x1, wy, wx in pool_blocks(map_hw, pool):
        y = np.arange(y0, y1)[:, None, None, None] * pool + np.arange(wy)[None, None, :, None]
        x = np.arange(x0, x1)[None, :, None, None] * pool + np.arange(wx)[None, None, None, :]
        y, x = np.broadcast_arrays(y, x)  # (cells down, cells across, wy, wx)
        ys.append(y.reshape(-1))
        xs.append(x.reshape(-1))
    ys, xs = np.concatenate(ys), np.concatenate(xs)  # (H·W,) each, every position once
    ti, tj = (a.reshape(-1) for a in np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))  # (h·w,)
    index = (ys[:, None] + ti[None]) * (W + w - 1) + xs[:, None] + tj[None]  # (R, h·w)
    index.flags.writeable = False
    return index


def signal_patches_numpy(x: np.ndarray, kernel_hw: tuple[int, int], pool: int = 1) -> np.ndarray:
    """One map x (H, W, C) → its im2col patches (C, H·W, h·w), C-contiguous, rows as in `patch_index`."""
    H, W, C = x.shape
    h, w = kernel_hw
    (top, _), (left, _) = same_padding(h), same_padding(w)
    xp = np.zeros((C, H + h - 1, W + w - 1), np.float32)
    xp[:, top:top + H, left:left + W] = x.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W), padded
    # np.take (not xp[:, index]): fancy indexing after a slice returns C innermost, which makes the
    # matmul several times slower (docs/RESULTS.md).
    return np.take(xp.reshape(C, -1), patch_index((H, W), (h, w), pool), axis=1)  # (C, R, h·w)


def kernel_matrix(parts: np.ndarray) -> np.ndarray:
    """Parts (N, P, f, f, C) → (C, f·f, N·P), column n·P + p = part p of image n."""
    N, P, f, _, C = parts.shape
    return np.ascontiguousarray(parts.transpose(4, 2, 3, 0, 1).reshape(C, f * f, N * P))


def correlate_and_pool(patches: np.ndarray, kernels: np.ndarray, map_hw: tuple[int, int], pool: int,
                       channel_block: int = 8) -> np.ndarray:
    """Eq. 2 of one signal with many kernels, then the model's max-pooling.

    Args:
      patches: (C, H·W, t) from `signal_patches_numpy` with the same `pool`.
      kernels: (C, t, K), K kernels per channel (`kernel_matrix`).
      map_hw: (H, W) of the signal.
      pool: pooling window, 2^(number of 2 × 2 poolings); 1 = none.
      channel_block: channels per matmul: a block's (channel_block, H·W, K) product stays in cache
        for the max that follows (faster than one matmul over all channels: docs/RESULTS.md).
    Returns:
      (C, gh·gw, K), cells row-major: out[c, cell, k] = max over the cell's window of Eq. 2 of
      channel c with kernel k.
    """
    C, R, _ = patches.shape
    K = kernels.shape[-1]
    blocks = pool_blocks(tuple(map_hw), pool)
    gh, gw = blocks[-1][1], blocks[-1][3]
    out = np.empty((C, gh, gw, K), np.float32)
    product = np.empty((min(channel_block, C), R, K), np.float32)
    for c0 in range(0, C, channel_block):
        c1 = min(c0 + channel_block, C)
        s = np.matmul(patches[c0:c1], kernels[c0:c1], out=product[:c1 - c0])  # (c, H·W, K)
        r = 0
        for y0, y1, x0, x1, wy, wx in blocks:
            n = (y1 - y0) * (x1 - x0) * wy * wx
            window = s[:, r:r + n].reshape(c1 - c0, y1 - y0, x1 - x0, wy * wx, K)
            np.max(window, axis=3, out=out[c0:c1, y0:y1, x0:x1])  # max per window
            r += n
    return out.reshape(C, gh * gw, K)


def xcorr_shared_kernels_numpy(signal, kernels) -> np.ndarray:
    """`xcorr_shared_kernels` in NumPy, the engine's form (pool 1, rows in map order): (N, M, H, W, C)."""
    signal, kernels = np.asarray(signal, np.float32), np.asarray(kernels, np.float32)
    N, H, W, C = signal.shape
    M, h, w, _ = kernels.shape
    k = np.ascontiguousarray(kernels.transpose(3, 1, 2, 0).reshape(C, h * w, M))  # -> (C, h·w, M)
    maps = [correlate_and_pool(signal_patches_numpy(x, (h, w)), k, (H, W), 1) for x in signal]  # (C, H·W, M) each
    return np.stack(maps).reshape(N, C, H, W, M).transpose(0, 4, 2, 3, 1)  # -> (N, M, H, W, C)
