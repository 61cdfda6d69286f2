"""The built-in synthetic two-camera dataset (ours), for tests and for training without data.

    python -m data_tools.make_synthetic --out /tmp/synth --identities 400 --seed 0

It lives in the library because it is the embedded default: `python -m reid_tf.train` with no
prepared dataset generates it under the data root on first use (`data_tools.make_synthetic` is the
command that calls `make_synthetic` below). Protocol (ours): a quarter of the identities test, an
eighth validation, the rest training; single-shot CMC like VIPeR and CUHK01.

Writes `OUT/cam_a/IIII_K.png` and `OUT/cam_b/IIII_K.png` (160 × 60 RGB; identity IIII, image K of
that camera) and then, last, `OUT/manifest.json` through `reid_tf.datasets.write_manifest`
(camera 0 = cam_a, 1 = cam_b), so the folder loads like any prepared dataset.

What makes an identity (drawn per identity from small palettes, so that several identities share
any one attribute and only combinations tell them apart): colours of top, trousers / shorts /
skirt, shoes, hair and skin; the top's pattern (plain, horizontal stripes, checks, chest logo that
only shows from the front); sleeve length; hair length; build; a carried object (none, shoulder bag
on the left or right, backpack) and its colour.

What the cameras change (the ReID nuisances): viewpoint (camera A mostly front / back, camera B
mostly side views, as in CUHK01 and VIPeR — the logo, the backpack and the bag side appear or vanish
with it), pose (leg stride, arm swing, lean), scale and position jitter, a per-camera colour cast and
brightness plus per-image gain / cast / gamma / vertical shading, per-camera background (wall and
floor colours, panel and tile textures, low-frequency blotches) with per-image horizon, phase and
clutter boxes, blur (more often in camera B) and sensor noise.

Determinism: every random draw comes from a numpy Generator seeded by (seed, purpose, identity,
camera, image), so a rerun is byte-identical and the dataset for N identities is a prefix of the one
for N' > N with the same seed. `make_synthetic` is idempotent: a folder whose manifest already
records the same (identities, seed, images_per_camera) is returned untouched, and a folder holding
the set of other settings is refused (`check_setting`), never regenerated under the runs that use it.

Difficulty, by design: the camera changes defeat raw matching (position / scale jitter most of
all), yet the identity signal survives them, and the least a model can learn about the cameras (a
per-camera standardisation of simple colour features) recovers much of it. tests/test_synthetic.py
checks this with margin; the measured generation time and the rank-1 of simple matchers are in
docs/RESULTS.md.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import time

import numpy as np
from absl import logging
from PIL import Image

from reid_tf import config
from reid_tf.datasets.base import MANIFEST, SINGLE_SHOT, DatasetSpec, read_manifest, write_manifest

H, W = config.INPUT_HEIGHT, config.INPUT_WIDTH
CAMERA_DIRS = ("cam_a", "cam_b")  # camera 0, camera 1
DATASET_NAME = "synthetic"

SPEC = DatasetSpec(
    name=DATASET_NAME,
    subdir="synthetic",
    prepare="python -m data_tools.make_synthetic --out {root}",
    protocol=SINGLE_SHOT,
    split_sizes=lambda n: (max(1, round(n / 4)), max(1, round(n / 8))),  # ours: 1/4 test, 1/8 val
    batch_size=config.BATCH_SIZE["synthetic"],  # ours, sized for the 15-minute main job
    crops_per_image=config.CROPS_PER_IMAGE["synthetic"],
    trials=config.TRIALS["default"],
)

# Seed-sequence tags: one per purpose, so no two streams of random numbers coincide.
_TAG_IDENTITY, _TAG_CAMERA, _TAG_IMAGE = 1, 2, 3
_OUR_FILE = re.compile(r"\d{4,}_\d+\.png")  # the names _relative_path writes
_CHUNK = 256  # images rendered at once: (256, 160, 60, 3) float32 ≈ 30 MB per array

# Background blotch amplitudes (luminance, chroma) and the per-image share of them.
BLOTCH_LUMA, BLOTCH_CHROMA, BLOTCH_PER_IMAGE = 0.25, 0.12, 0.4

# Palettes (RGB in [0, 1]). Small on purpose: many identities share each entry.
TOP = np.array([[.80, .12, .12], [.15, .25, .75], [.92, .92, .90], [.10, .10, .12], [.50, .50, .52],
                [.20, .58, .25], [.90, .80, .20], [.90, .50, .65], [.95, .55, .15]], np.float32)
SECONDARY = np.array([[.95, .95, .95], [.08, .08, .08], [.85, .15, .15], [.20, .30, .85],
                      [.95, .85, .25]], np.float32)
LOWER = np.array([[.08, .08, .10], [.25, .35, .58], [.50, .50, .50], [.80, .72, .55],
                  [.45, .30, .20], [.92, .92, .92]], np.float32)
SHOES = np.array([[.06, .06, .06], [.95, .95, .95], [.45, .28, .15], [.80, .15, .15]], np.float32)
HAIR = np.array([[.05, .04, .04], [.30, .18, .10], [.85, .72, .40], [.60, .60, .60]], np.float32)
SKIN = np.array([[.95, .80, .68], [.80, .60, .45], [.50, .35, .25]], np.float32)
BAG = np.array([[.08, .08, .08], [.45, .28, .15], [.80, .15, .15], [.20, .30, .75],
                [.70, .65, .45]], np.float32)

PATTERNS = ("plain", "stripes", "checks", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
CARRY = ("none", "bag_left", "bag_right", "backpack")
VIEWS = ("front", "back", "side")
VIEW_PROBS = ((0.45, 0.35, 0.20), (0.20, 0.20, 0.60))  # camera A, camera B


def _categorical(u: np.ndarray, probs) -> np.ndarray:
    """Map uniforms u in [0, 1) to category indices with the given probabilities."""
    return np.searchsorted(np.cumsum(probs)[:-1], u, side="right")


def _lerp(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (lo + (hi - lo) * u).astype(np.float32)


# ----------------------------------------------------------------------------- parameters
def _identity_attributes(seed: int, identities: np.ndarray) -> dict[str, np.ndarray]:
    """Per-identity appearance: categorical indices and colours, arrays of length len(identities)."""
    u = np.stack([np.random.default_rng([seed, _TAG_IDENTITY, int(i)]).random(24) for i in identities])
    jitter = ((u[:, 12:24].reshape(-1, 4, 3) - 0.5) * 0.06).astype(np.float32)  # per-identity shade
    pick = lambda palette, col: np.floor(u[:, col] * len(palette)).astype(int)
    a = {
        "top": TOP[pick(TOP, 0)] + jitter[:, 0],
        "secondary": SECONDARY[pick(SECONDARY, 1)],
        "lower": LOWER[pick(LOWER, 2)] + jitter[:, 1],
        "shoes": SHOES[pick(SHOES, 3)],
        "hair": HAIR[pick(HAIR, 4)] + jitter[:, 2],
        "skin": SKIN[pick(SKIN, 5)],
        "bag": BAG[pick(BAG, 6)] + jitter[:, 3],
        "pattern": _categorical(u[:, 7], (0.4, 0.2, 0.2, 0.2)),
        "lower_type": _categorical(u[:, 8], (0.7, 0.15, 0.15)),
        "carry": _categorical(u[:, 9], (0.4, 0.2, 0.2, 0.2)),
        "short_sleeves": u[:, 10] < 0.35,
        "long_hair": u[:, 11] < 0.3,
        # Build and stripe period reuse uniforms through independent transforms (fractional parts).
        "build": _lerp((u[:, 10] * 7.0) % 1.0, 0.85, 1.15),
        "height": _lerp((u[:, 11] * 7.0) % 1.0, 0.93, 1.03),
        "period": np.where((u[:, 7] * 5.0) % 1.0 < 0.5, 5.0, 8.0).astype(np.float32),
    }
    # A secondary colour equal to the main one would hide the pattern: use its complement then.
    same = np.all(np.abs(a["secondary"] - a["top"]) < 0.1, axis=1)
    a["secondary"][same] = 1.0 - a["secondary"][same]
    return {k: np.clip(v, 0, 1) if v.dtype == np.float32 and v.ndim == 2 else v for k, v in a.items()}


def _camera_parameters(seed: int, camera: int) -> dict[str, np.ndarray]:
    """Per-camera colour cast, lighting and background style (one dict of small arrays)."""
    u = np.random.default_rng([seed, _TAG_CAMERA, camera]).random(16)
    base_cast = np.array([[1.15, 1.0, 0.80], [0.80, 0.95, 1.20]], np.float32)[camera]
    return {
        "cast": base_cast * (1.0 + (u[0:3] - 0.5) * 0.1).astype(np.float32),
        "brightness": np.float32([1.0, 0.8][camera] * (0.95 + 0.1 * u[3])),
        "wall": (0.25 + 0.5 * u[4:7]).astype(np.float32),
        "floor": (0.25 + 0.5 * u[7:10]).astype(np.float32),
        "horizon": np.float32([0.62, 0.45][camera] * H),
        "wall_period": np.float32([12.0, 7.0][camera]),  # vertical panels (A) / siding (B)
        "floor_period": np.float32([14.0, 9.0][camera]),  # floor tiles
        "blur_prob": np.float32([0.3, 0.7][camera]),
        "noise": np.float32([0.02, 0.035][camera]),
        "shade": np.float32((u[10] - 0.5) * 0.5),  # vertical illumination gradient
        # The scene's fixed low-frequency blotches (shadows, distant objects): (6, 4, 4) grid of
        # luminance + 3 chroma offsets, bilinearly upsampled to the image.
        "blotches": np.random.default_rng([seed, _TAG_CAMERA, camera, 1]).random((6, 4, 4),
                                                                                   np.float32) - 0.5,
    }


def _image_parameters(seed: int, keys: np.ndarray, views: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image nuisances for keys (n, 3) = (identity, camera, image); arrays of length n."""
    u = np.stack([np.random.default_rng([seed, _TAG_IMAGE, *map(int, key)]).random(48) for key in keys])
    f32 = lambda x: np.asarray(x, np.float32)
    return {
        "view": views,
        "facing": np.where(u[:, 0] < 0.5, -1.0, 1.0).astype(np.float32),
        "scale": _lerp(u[:, 1], 0.80, 1.0),
        "dy": _lerp(u[:, 2], -5, 5),
        "dx": _lerp(u[:, 3], -4, 4),
        "lean": _lerp(u[:, 4], -0.06, 0.06),
        "spread": _lerp(u[:, 5], 0.0, 0.035),  # feet apart, frontal views
        "stride": _lerp(u[:, 6], 0.0, 0.12),  # feet apart, side views
        "swing": _lerp(u[:, 7], -0.10, 0.10),  # arm swing (side) / arm spread (frontal)
        "gain": _lerp(u[:, 8], 0.80, 1.20),
        "cast": f32(1.0 + (u[:, 9:12] - 0.5) * 0.16),
        "gamma": _lerp(u[:, 12], 0.85, 1.18),
        "horizon": _lerp(u[:, 13], -6, 6),
        "phase": _lerp(u[:, 14], 0, 20),
        "bg_jitter": f32((u[:, 15:18] - 0.5) * 0.14),
        "blur": u[:, 18],  # compared with the camera's blur probability
        "noise": _lerp(u[:, 19], 0.5, 1.5),
        # Up to three clutter boxes: (present, y0, x0, height, width, r, g, b) each.
        "clutter": f32(u[:, 20:44].reshape(-1, 3, 8)),
        "blotch_seed": (u[:, 44] * 2**31).astype(np.int64),
        "leg_order": np.where(u[:, 45] < 0.5, -1.0, 1.0).astype(np.float32),
    }


def _draw_views(seed: int, keys: np.ndarray) -> np.ndarray:
    u = np.array([np.random.default_rng([seed, _TAG_IMAGE, *map(int, k), 1]).random() for k in keys])
    cams = keys[:, 1]
    return np.where(cams == 0, _categorical(u, VIEW_PROBS[0]), _categorical(u, VIEW_PROBS[1]))


# ----------------------------------------------------------------------------- drawing
def _col(x: np.ndarray) -> np.ndarray:
    """(n,) -> (n, 1, 1) for broadcasting against (n, H, W) pixel grids (floats as float32)."""
    x = np.asarray(x)
    return (x.astype(np.float32) if x.dtype == np.float64 else x)[:, None, None]


def _sel(cond, a, b) -> np.ndarray:
    """np.where for the small per-image (n, 1, 1) parameters, kept in float32."""
    return np.where(cond, a, b).astype(np.float32)


def _segment(u, v, u0, v0, u1, v1, radius) -> np.ndarray:
    """Mask of pixels within `radius` of the segment (u0, v0)–(u1, v1); all in figure units."""
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
    return (u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2 <= radius * radius


def _ellipse(u, v, uc, vc, ru, rv) -> np.ndarray:
    return ((u - uc) / ru) ** 2 + ((v - vc) / rv) ** 2 <= 1.0


def _box(u, v, u0, u1, v0, v1) -> np.ndarray:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


class _Layers:
    """Painter's algorithm on a label map: each paint() stores a colour per image and writes its
    index into (n, H, W) uint8 labels; compose() gathers the colours once (3× fewer bytes moved
    than painting RGB layer by layer)."""

    def __init__(self, n: int):
        self.labels = np.zeros((n, H, W), np.uint8)  # 0 = background
        self.colours = [np.zeros((n, 3), np.float32)]

    def paint(self, mask: np.ndarray, colour: np.ndarray) -> None:
        self.colours.append(np.asarray(colour, np.float32))
        np.copyto(self.labels, np.uint8(len(self.colours) - 1),
                  where=np.broadcast_to(mask, self.labels.shape))

    def compose(self, background: np.ndarray) -> np.ndarray:
        """background (n, H, W, 3) -> image with the figure over it, (n, H, W, 3)."""
        table = np.stack(self.colours, axis=1)  # (n, L, 3)
        n = table.shape[0]
        figure = table[np.arange(n)[:, None, None], self.labels]  # (n, H, W, 3)
        return np.where((self.labels > 0)[..., None], figure, background)


def _upsample(grid: np.ndarray) -> np.ndarray:
    """Bilinear upsampling (n, gh, gw, C) -> (n, H, W, C) with two interpolation matrices."""
    def matrix(out: int, inp: int) -> np.ndarray:
        pos = np.linspace(0, inp - 1, out)
        lo = np.minimum(np.floor(pos).astype(int), inp - 2)
        m = np.zeros((out, inp), np.float32)
        m[np.arange(out), lo] = 1 - (pos - lo)
        m[np.arange(out), lo + 1] = pos - lo
        return m
    n, gh, gw, c = grid.shape
    rows = np.matmul(matrix(H, gh), grid.reshape(n, gh, gw * c)).reshape(n, H, gw, c)
    return np.matmul(matrix(W, gw), rows)  # (W, gw) @ (n, H, gw, C) -> (n, H, W, C)


def _background(cam: dict, p: dict, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-camera scene with per-image horizon, texture phase, blotches and clutter: (n, H, W, 3)."""
    horizon = _col(cam["horizon"] + p["horizon"])
    phase = _col(p["phase"])
    wall_lines = ((x + phase) % cam["wall_period"]) < 1.5  # (n, 1, W)
    tile = (((y - horizon) % cam["floor_period"]) < 1.2) | (
        ((x + 2 * phase) % (1.5 * cam["floor_period"])) < 1.2)  # (n, H, W)
    wall = cam["wall"] * _sel(wall_lines, 0.7, 1.0)[..., None]  # (n, 1, W, 3)
    floor = cam["floor"] * _sel(tile, 0.75, 1.0)[..., None]  # (n, H, W, 3)
    bg = np.where((y < horizon)[..., None], wall, floor) + p["bg_jitter"][:, None, None, :]
    # Blotches: the camera's fixed ones plus a weaker per-image part (passers-by, light changes).
    grid = np.stack([np.random.default_rng(int(s)).random((6, 4, 4), np.float32)
                     for s in p["blotch_seed"]]) - 0.5  # (n, 6, 4, 4): luminance + 3 chroma
    blotch = _upsample(cam["blotches"] + BLOTCH_PER_IMAGE * grid)  # (n, H, W, 4)
    bg = bg + BLOTCH_LUMA * blotch[..., :1] + BLOTCH_CHROMA * blotch[..., 1:]
    layers = _Layers(len(horizon))
    for box in range(p["clutter"].shape[1]):
        c = p["clutter"][:, box]  # (n, 8): present, y0, x0, h, w, r, g, b
        y0, x0 = _col(c[:, 1] * H), _col(c[:, 2] * W)
        layers.paint((_col(c[:, 0]) < 0.3) & (y >= y0) & (y < y0 + _col(10 + 50 * c[:, 3]))
                     & (x >= x0) & (x < x0 + _col(4 + 16 * c[:, 4])), c[:, 5:8] * 0.8 + 0.1)
    return layers.compose(bg)


def _figure(background: np.ndarray, a: dict, p: dict, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Paint the person over background (n, H, W, 3), back to front. Figure units: height = 1."""
    n = background.shape[0]
    hgt = _col(150.0 * p["scale"] * a["height"])
    top = (H - hgt) / 2 + _col(p["dy"])
    u = (y - top) / hgt  # (n, H, 1): 0 at the top of the head, 1 under the feet
    v = (x - W / 2 - _col(p["dx"]) - _col(p["lean"]) * (top + hgt - y)) / hgt  # (n, H, W)
    view = _col(p["view"])
    front, back, side = view == 0, view == 1, view == 2
    v = np.where(side, v * _col(p["facing"]), v)  # side views: canonical frame faces +v
    tw = _col(a["build"]) * _sel(side, 0.062, 0.092)  # torso half-width
    carry, pattern = _col(a["carry"]), _col(a["pattern"])
    layers = _Layers(n)
    paint = layers.paint

    # Backpack seen from the side sits behind the body.
    paint(side & (carry == 3) & _box(u, v, 0.16, 0.40, -tw - 0.075, -tw + 0.01), a["bag"])
    # Legs, shoes, lower garment.
    hip = _sel(side, 0.012, 0.036)
    foot = _sel(side, _col(p["stride"]) * _col(p["leg_order"]), 0.036 + _col(p["spread"]))
    legs = _segment(u, v, 0.50, -hip, 0.92, -foot, 0.036) | _segment(u, v, 0.50, hip, 0.92, foot, 0.036)
    lower_type = _col(a["lower_type"])
    bare = (lower_type == 2) | ((lower_type == 1) & (u > 0.68))
    paint(legs & bare, a["skin"])
    paint(legs & ~bare, a["lower"])
    toe, shoe_rv = _sel(side, 0.02, 0.0), _sel(side, 0.05, 0.04)
    for sgn in (-1.0, 1.0):
        paint(_ellipse(u, v, 0.945, sgn * foot + toe, 0.025, shoe_rv), a["shoes"])
    paint((lower_type != 2) & _box(u, v, 0.46, 0.55, -hip - 0.036, hip + 0.036), a["lower"])
    skirt_w = tw * (0.95 + 0.5 * (u - 0.46) / 0.24)
    paint((lower_type == 2) & (u >= 0.46) & (u <= 0.70) & (np.abs(v) <= skirt_w), a["lower"])
    # Torso with its pattern.
    tw_u = tw * (1.0 - 0.12 * np.clip((u - 0.17) / 0.33, 0, 1))
    torso = ((u >= 0.17) & (u <= 0.50) & (np.abs(v) <= tw_u)) | _ellipse(u, v, 0.19, 0.0, 0.045, tw)
    period = _col(a["period"]) / 150.0
    stripe = np.floor((u - 0.17) / period) % 2 == 1  # (n, H, 1)
    check = stripe ^ (np.floor(v / period) % 2 == 1)
    logo = front & _box(u, v, 0.23, 0.31, -0.035, 0.035)
    second = ((pattern == 1) & stripe) | ((pattern == 2) & check) | ((pattern == 3) & logo)
    paint(torso & ~second, a["top"])
    paint(torso & second, a["secondary"])
    # Arms: two in frontal views, the near one in side views; sleeves short or long.
    sleeve = _sel(_col(a["short_sleeves"]), 0.30, 0.45)
    for sgn, shown in ((-1.0, ~side), (1.0, ~side), (0.0, side)):
        v0 = sgn * (tw - 0.018)
        v1 = _sel(side, _col(p["swing"]), sgn * (tw + 0.015 + 0.2 * np.abs(_col(p["swing"]))))
        arm = shown & _segment(u, v, 0.20, v0, 0.47, v1, 0.024)
        paint(arm & (u > sleeve), a["skin"])
        paint(arm & (u <= sleeve), a["top"])
        paint(shown & _ellipse(u, v, 0.485, v1, 0.022, 0.02), a["skin"])
    # Shoulder bag: image side from the person's side and the view; in side views only the near one.
    person_side = _sel(carry == 1, -1.0, 1.0)
    img_side = _sel(back, -person_side, person_side)
    bag_shown = ((carry == 1) | (carry == 2)) & (~side | (person_side == _col(p["facing"])))
    bag_v0 = _sel(side, -0.06, _sel(img_side > 0, tw - 0.01, -tw - 0.075))
    strap = _segment(u, v, 0.17, -img_side * tw * 0.6, 0.42, img_side * tw, 0.008)
    paint(bag_shown & ~side & strap, a["bag"])
    paint(bag_shown & _box(u, v, 0.40, 0.56, bag_v0, bag_v0 + 0.085), a["bag"])
    # Backpack: the pack from behind, two straps from the front.
    paint((carry == 3) & back & _ellipse(u, v, 0.29, 0.0, 0.13, tw * 0.8), a["bag"])
    for sgn in (-1.0, 1.0):
        straps = _segment(u, v, 0.17, sgn * tw * 0.55, 0.36, sgn * tw * 0.5, 0.01)
        paint((carry == 3) & front & straps, a["bag"])
    # Neck, head, hair.
    paint(_box(u, v, 0.12, 0.18, -0.02, 0.02), a["skin"])
    head = _ellipse(u, v, 0.085, _sel(side, 0.006, 0.0), 0.06, 0.043)
    hair_cap = head & (back | (u < 0.065) | (side & (v < 0.004)))
    hair_band = np.where(side, (v >= -0.05) & (v <= 0.0), np.where(
        back, np.abs(v) <= 0.05, (np.abs(v) >= 0.03) & (np.abs(v) <= 0.052)))
    long_hair = _col(a["long_hair"]) & (u >= 0.08) & (u <= 0.24) & hair_band
    paint(head, a["skin"])
    paint(hair_cap | long_hair, a["hair"])
    return layers.compose(background)


def _camera_effects(img: np.ndarray, cam: dict, p: dict, y: np.ndarray) -> np.ndarray:
    """Illumination (cast, gain, gamma, shading), blur and noise; (n, H, W, 3) -> same in [0, 1]."""
    shade = 1.0 + cam["shade"] * (y / H - 0.5)  # (1, H, 1)
    gain = (cam["brightness"] * cam["cast"] * p["cast"] * p["gain"][:, None])[:, None, None, :]
    img = np.clip(img, 0, 1) ** _col(p["gamma"])[..., None] * gain * shade[..., None]
    blur = _col(p["blur"] < cam["blur_prob"])[..., None] > 0
    soft = img.copy()
    soft[:, 1:-1] = (img[:, :-2] + img[:, 1:-1] + img[:, 2:]) / 3  # 3-tap box, rows
    soft[:, :, 1:-1] = (soft[:, :, :-2] + soft[:, :, 1:-1] + soft[:, :, 2:]) / 3  # then columns
    img = np.where(blur, soft, img)
    noise = np.stack([np.random.default_rng(int(s) + 1).standard_normal(img.shape[1:], np.float32)
                      for s in p["blotch_seed"]])  # per image, so chunking never changes a pixel
    img = img + noise * (cam["noise"] * _col(p["noise"]))[..., None]
    return np.clip(img, 0, 1)


def render(seed: int, keys: np.ndarray) -> np.ndarray:
    """Render the images keys (n, 3) = (identity, camera, image index) -> uint8 (n, 160, 60, 3).

    All keys of one call must share the camera (the caller groups them).
    """
    camera = int(keys[0, 1])
    assert np.all(keys[:, 1] == camera), "render() takes one camera at a time"
    cam = _camera_parameters(seed, camera)
    attrs = _identity_attributes(seed, keys[:, 0])
    params = _image_parameters(seed, keys, _draw_views(seed, keys))
    y = np.arange(H, dtype=np.float32)[None, :, None] + 0.5  # (1, H, 1) pixel centres
    x = np.arange(W, dtype=np.float32)[None, None, :] + 0.5  # (1, 1, W)
    img = _figure(_background(cam, params, y, x), attrs, params, y, x)
    img = _camera_effects(img, cam, params, y)
    return np.round(img * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- dataset
def _relative_path(identity: int, camera: int, k: int) -> str:
    return f"{CAMERA_DIRS[camera]}/{identity:04d}_{k}.png"


def _write_chunk(out_dir: str, seed: int, keys: np.ndarray) -> list[dict]:
    """Render and save the images keys (n, 3); returns their manifest records."""
    records = []
    for key, image in zip(keys, render(seed, keys)):
        identity, camera, k = map(int, key)
        path = _relative_path(identity, camera, k)
        # compress_level=1: faster than the default for files a little larger, since noise barely
        # compresses (measured: docs/RESULTS.md).
        Image.fromarray(image).save(os.path.join(out_dir, path), format="PNG", compress_level=1)
        records.append({"path": path, "identity": identity, "camera": camera})
    return records


def setting_of(body: dict) -> str:
    """A synthetic manifest's generator settings, in words (for messages)."""
    return (f"{body.get('identities')} identities, seed {body.get('seed')}, "
            f"{body.get('images_per_camera')} images per camera")


def check_setting(out_dir: str, identities: int, seed: int, images_per_camera: int = 2) -> bool:
    """Whether out_dir already holds the synthetic set of these settings (True) or none (False).

    A complete set of other settings is refused (ValueError), never regenerated: runs that trained
    on it read it again to evaluate, and would then score other images without a word. The settings
    live in its manifest; the set of other settings belongs in another folder.
    """
    if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
        return False
    body = read_manifest(out_dir)
    if body.get("dataset") != DATASET_NAME:
        raise ValueError(f"{out_dir} holds the prepared dataset {body.get('dataset')!r}; "
                         "refusing to overwrite it with synthetic data")
    if (body.get("identities"), body.get("seed"), body.get("images_per_camera")) == (
            identities, seed, images_per_camera):
        return True
    raise ValueError(
        f"{out_dir} holds the synthetic set of {setting_of(body)}, which runs trained on it read "
        f"again; the set of {identities} identities, seed {seed} goes in another folder: pass another "
        f"--data_dir (e.g. {os.path.join(os.path.dirname(os.path.abspath(out_dir)), f'seed{seed}_n{identities}')}"
        f"), or delete {out_dir} if no run uses it")


def _clear_camera_dirs(out_dir: str) -> None:
    """Empty (or create) out_dir/cam_a, cam_b, refusing to delete anything this module did not write
    (a raw VIPeR folder also has cam_a/ and cam_b/)."""
    for name in CAMERA_DIRS:
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        entries = os.listdir(folder)
        foreign = [e for e in entries if not _OUR_FILE.fullmatch(e)]
        if foreign:
            raise ValueError(f"{folder} holds files make_synthetic did not write (e.g. {foreign[0]!r}); "
                             "choose another --out")
        for entry in entries:
            os.remove(os.path.join(folder, entry))


def make_synthetic(out_dir: str, identities: int, seed: int, images_per_camera: int = 2) -> str:
    """Generate (or find already generated) the synthetic dataset in out_dir; returns out_dir.
    A folder holding the set of other settings is refused (check_setting: ValueError).

    identities × 2 cameras × images_per_camera PNGs, then the manifest (written last, atomically).
    """
    if identities < 1 or images_per_camera < 1:
        raise ValueError(f"need identities >= 1 and images_per_camera >= 1, got {identities}, "
                         f"{images_per_camera}")
    if check_setting(out_dir, identities, seed, images_per_camera):
        logging.info("synthetic dataset already complete in %s", out_dir)
        return out_dir
    start = time.perf_counter()
    _clear_camera_dirs(out_dir)  # no manifest: the images of an interrupted generation, if any
    keys = np.array([(i, camera, k) for camera in range(len(CAMERA_DIRS))
                     for i in range(identities) for k in range(images_per_camera)])
    # Chunks never mix cameras (render() takes one); numpy and PNG encoding release the GIL, so
    # two threads use both cores. Every pixel depends only on its own key: order is irrelevant.
    chunks = [keys[lo:lo + _CHUNK][keys[lo:lo + _CHUNK, 1] == camera]
              for lo in range(0, len(keys), _CHUNK) for camera in range(len(CAMERA_DIRS))]
    chunks = [c for c in chunks if len(c)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        records = [r for rs in pool.map(lambda c: _write_chunk(out_dir, seed, c), chunks) for r in rs]
    records.sort(key=lambda r: (r["identity"], r["camera"], r["path"]))
    write_manifest(out_dir, DATASET_NAME, records, seed=seed, identities=identities,
                   images_per_camera=images_per_camera)
    logging.info("wrote %d synthetic images (%d identities) to %s in %.1f s", len(records),
                 identities, out_dir, time.perf_counter() - start)
    return out_dir
