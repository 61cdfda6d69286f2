"""Figure 4 of the paper: the STN windows and the per-part similarity score maps of each CSN.

§3.2 "Learned visual similarity from different levels": for a query and a matched / an unmatched
gallery image, Figure 4 shows the inputs and, per CSN level, "the convolution results between the
feature maps for query image and the attended upper and middle parts for the test image" — that is
direction 0 of `sim_j` (x_a^(j) * part_k of image b, Eq. 2) with the query fed as image_a.

Geometry (DESIGN "Sampler convention"), from an STN output corner to an image pixel:

    output corner (w_out, h_out) ∈ {±1}²
      → θ (Eq. 1)                     → (u, v) normalised in the stripe, −1/+1 = centres of its
                                         first / last pixel (align corners)
      → map pixels                    x = (u + 1)(W_j − 1)/2,  y = start + (v + 1)(h_s − 1)/2
      → image pixels                  x_img = (x + 0.5)·(W_img / W_j) − 0.5   (same for y with H)

Pixel coordinates are pixel centres (pixel k spans [k − 0.5, k + 0.5]). The last step treats every
map pixel as covering W_img / W_j × H_img / H_j image pixels, i.e. the map is stretched over the
whole image. That is exact where pooling halves evenly (all heights; widths of levels 1–2); for odd
widths (15 → 8 at level 3, then 8 → 4) TF's "same" pooling pads the right, so the true stride is 8
(16) rather than 7.5 (15) and a column can be off by up to half a map pixel. Good enough for a
picture, and it keeps the map and the image the same extent.

Pure numpy + PIL except `run_pairs` (runs the Keras model) and `image_summary` (tf.summary.image,
which TensorBoard, a dependency, provides).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from reid_tf import config
from reid_tf.model import structure

IMAGE_HW = (config.INPUT_HEIGHT, config.INPUT_WIDTH)
# Part colours: upper / middle / bottom (a single part — C1 "no dividing" — uses the first).
PART_COLOURS = ((255, 40, 40), (40, 220, 40), (60, 120, 255))
PART_NAMES = ("upper", "middle", "bottom")
_SEPARATOR = 4  # px between tiles
_BLOCK_GAP = 10  # px between the level blocks
_FONT_SIZE = 11  # PIL's default (FreeType) font at zoom 1; grows by 3 per extra zoom step
_BACKGROUND = 255


# ---------------------------------------------------------------------------------------------
# Geometry
def stn_window_corners(theta, stripe_rows: tuple[int, int], map_hw: tuple[int, int],
                       image_hw: tuple[int, int] = IMAGE_HW, cells: bool = False) -> np.ndarray:
    """Corners of one STN window in image pixel coordinates (see the module docstring).

    Args:
      theta: (2, 3) rows [s_w, r_w, t_w], [r_h, s_h, t_h] (Eq. 1), output → stripe coordinates.
      stripe_rows: [start, stop) rows of the stripe in the level's feature map.
      map_hw: (H_j, W_j) of the feature map.
      image_hw: size of the image the box is drawn on (160 × 60, or a zoomed copy).
      cells: False — the corners are the centres of the window's corner samples (the align-corners
        window itself: an identity θ gives the centres of the stripe's corner map pixels).
        True — grow the window by half a map pixel along each of its edge directions, so the box
        outlines the map cells it covers (an identity θ gives the stripe's full image extent).
    Returns:
      (4, 2) float array of (x, y): the output corners (−1, −1), (+1, −1), (+1, +1), (−1, +1),
      i.e. top-left, top-right, bottom-right, bottom-left for a positive scale.
    """
    theta = np.asarray(theta, dtype=np.float64).reshape(2, 3)
    start, stop = stripe_rows
    H, W = map_hw
    out = np.array([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], dtype=np.float64)  # (4, 3)
    uv = out @ theta.T  # (4, 3) x (3, 2) -> (4, 2) normalised stripe coordinates
    x = (uv[:, 0] + 1.0) * (W - 1) / 2.0
    y = start + (uv[:, 1] + 1.0) * (stop - start - 1) / 2.0
    xy = np.stack([x, y], axis=-1)  # (4, 2) map pixels
    if cells:
        xy = _grow_half_pixel(xy)
    scale = np.array([image_hw[1] / W, image_hw[0] / H])
    return (xy + 0.5) * scale - 0.5


def _grow_half_pixel(xy: np.ndarray) -> np.ndarray:
    """Move each corner of the parallelogram (TL, TR, BR, BL) half a pixel outwards per edge direction."""
    def unit(v, fallback):
        n = np.linalg.norm(v)
        return v / n if n > 1e-9 else np.asarray(fallback, dtype=np.float64)

    u = unit(xy[1] - xy[0], (1.0, 0.0))  # along the width edge
    v = unit(xy[3] - xy[0], (0.0, 1.0))  # along the height edge
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)  # (4, 2)
    return xy + 0.5 * (signs[:, :1] * u + signs[:, 1:] * v)


def draw_boxes(image: np.ndarray, corners: Sequence[np.ndarray], colours: Sequence[tuple[int, int, int]],
               width: int = 1) -> np.ndarray:
    """Draw closed polygons (each (4, 2) of (x, y) pixel centres) on a copy of `image` (H, W, 3) uint8.

    Corners are clipped to the image, so a box on the border stays visible.
    """
    canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    H, W = image.shape[:2]
    for pts, colour in zip(corners, colours):
        pts = np.clip(np.asarray(pts, dtype=np.float64), 0, [W - 1, H - 1])
        pts = [tuple(int(v) for v in np.round(p)) for p in pts]
        draw.line(pts + pts[:1], fill=tuple(colour), width=width, joint="curve")
    return np.asarray(canvas)


# ---------------------------------------------------------------------------------------------
# Score maps and colours
def score_maps(sim: np.ndarray, num_parts: int, direction: int = 0) -> np.ndarray:
    """Per-part similarity score maps (P, H_j, W_j) of one pair from sim_j (H_j, W_j, 2·P·C).

    Channel group k (C channels each) of sim_j is, for k < P, x_a^(j) * part k of image b, and for
    k ≥ P, x_b^(j) * part k − P of image a (CSN.similarity). `direction` 0 picks the first P groups
    (the query, fed as image_a, against the gallery's parts: Figure 4 columns 3–4), 1 the others.

    Reduction: the mean over the C channels of a group. The depth-wise correlation (Eq. 2) keeps a
    map per channel; their sum is the ordinary correlation of x^(j) with the part used as one
    C-channel filter — "how well does this part match here" — and the mean is that divided by C,
    so its scale does not depend on the width of the layer. With "SAME" padding, pixel (y, x) is
    the score of the part centred on the query's map pixel (y, x), so the map aligns with the query.
    """
    sim = np.asarray(sim)
    if sim.ndim != 3:
        raise ValueError(f"sim must be (H, W, 2·P·C) for one pair, got shape {sim.shape}")
    if direction not in (0, 1):
        raise ValueError(f"direction must be 0 (a vs parts of b) or 1 (b vs parts of a), got {direction}")
    H, W, channels = sim.shape
    if channels % (2 * num_parts):
        raise ValueError(f"{channels} channels do not split into 2·{num_parts} groups")
    groups = sim.reshape(H, W, 2 * num_parts, channels // (2 * num_parts))  # (H, W, 2P, C)
    chosen = groups[:, :, direction * num_parts:(direction + 1) * num_parts]  # (H, W, P, C)
    return np.transpose(chosen.mean(axis=-1), (2, 0, 1))  # (H, W, P) -> (P, H, W)


def jet(values: np.ndarray) -> np.ndarray:
    """Jet colour map: values in [0, 1] (clipped) → uint8 RGB, dark blue → cyan → yellow → dark red."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # where red, green, blue peak
    rgb = np.clip(1.5 - 4.0 * np.abs(x - centres), 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


def colour_map(score: np.ndarray, lo: float, hi: float, image_hw: tuple[int, int] = IMAGE_HW,
               resample: str = "nearest") -> np.ndarray:
    """One score map (H_j, W_j) → jet colours normalised to [lo, hi], upsampled to image_hw (uint8)."""
    rgb = jet((np.asarray(score) - lo) / max(hi - lo, 1e-12))
    method = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}[resample]
    return np.asarray(Image.fromarray(rgb).resize((image_hw[1], image_hw[0]), method))


# ---------------------------------------------------------------------------------------------
# Running the model
def as_float_image(image) -> np.ndarray:
    """(160, 60, 3) uint8 [0, 255] or float [0, 1] → float32 [0, 1]."""
    image = np.asarray(image)
    if image.shape != (*IMAGE_HW, 3):
        raise ValueError(f"images must be {(*IMAGE_HW, 3)}, got {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)


def as_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _levels(outputs: dict) -> list[int]:
    return sorted(int(key.split("_")[1]) for key in outputs if key.startswith("sim_"))


def _stripe_rows(model, level: int, map_height: int) -> list[tuple[int, int]]:
    """The stripes the model's CSN of this level uses (the whole map for C1 "no dividing")."""
    return [tuple(s) for s in structure(model).csn_parts[level].stripe_rows(map_height)]


def run_pairs(model, query, matched, unmatched) -> dict:
    """Run the model once on the batch [(query, matched), (query, unmatched)]; outputs as numpy."""
    q = as_float_image(query)
    batch = {"image_a": np.stack([q, q]),
             "image_b": np.stack([as_float_image(matched), as_float_image(unmatched)])}
    outputs = model(batch, training=False)
    return {key: np.asarray(value) for key, value in outputs.items()}


def _windows(model, outputs: dict, level: int, side: str, index: int, image_hw) -> list[np.ndarray]:
    """Corner arrays of the P windows of image `side` ("a"/"b") of pair `index` at `level`."""
    H, W = outputs[f"sim_{level}"].shape[1:3]
    thetas = outputs[f"theta_{level}_{side}"][index]  # (P, 2, 3)
    rows = _stripe_rows(model, level, H)
    return [stn_window_corners(t, r, (H, W), image_hw, cells=True) for t, r in zip(thetas, rows)]


def _zoom(image: np.ndarray, zoom: int) -> np.ndarray:
    return image if zoom == 1 else np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def stn_crops(model, query, matched, unmatched, outputs: dict | None = None, zoom: int = 2) -> dict[int, np.ndarray]:
    """Per level: query, matched and unmatched images side by side with their STN windows (uint8).

    θ depends on one image only, so the query's windows are the same in both pairs.
    """
    outputs = run_pairs(model, query, matched, unmatched) if outputs is None else outputs
    hw = (IMAGE_HW[0] * zoom, IMAGE_HW[1] * zoom)
    images = [(query, "a", 0), (matched, "b", 0), (unmatched, "b", 1)]
    result = {}
    for level in _levels(outputs):
        tiles = []
        for image, side, index in images:
            boxes = _windows(model, outputs, level, side, index, hw)
            tiles.append(draw_boxes(_zoom(as_uint8(as_float_image(image)), zoom), boxes, PART_COLOURS,
                                    width=zoom))
        sep = np.full((hw[0], _SEPARATOR, 3), _BACKGROUND, np.uint8)
        result[level] = np.concatenate([tiles[0], sep, tiles[1], sep, tiles[2]], axis=1)
    return result


# ---------------------------------------------------------------------------------------------
# The panel
def _font_size(zoom: int) -> int:
    return _FONT_SIZE + 3 * (zoom - 1)


def figure4_layout(levels: Sequence[int], num_parts: int, zoom: int = 1) -> dict:
    """Pixel layout of `figure4_panel`: tile size, x offset of every tile, panel height and width.

    Each row (matched pair, then unmatched pair) holds one block per CSN level:
    [query + level-j windows] [gallery + level-j windows] [P score maps], tiles separated by 4 px,
    blocks by 10 px. Two header lines (level name, tile names) sit on top; each row has one line of
    text above it (p_match, d, Eq. 7 score) and the per-level colour range below the last row.
    """
    th, tw = IMAGE_HW[0] * zoom, IMAGE_HW[1] * zoom
    line = _font_size(zoom) + 4  # px per line of text
    per_block = 2 + num_parts
    block_w = per_block * tw + (per_block - 1) * _SEPARATOR
    x0 = [i * (block_w + _BLOCK_GAP) for i in range(len(levels))]
    width = len(levels) * block_w + (len(levels) - 1) * _BLOCK_GAP
    row_top = [3 * line, 4 * line + th]  # 2 header lines, then per row: 1 text line + tiles
    height = row_top[1] + th + line
    tiles_x = [[x + k * (tw + _SEPARATOR) for k in range(per_block)] for x in x0]
    return {"tile_hw": (th, tw), "block_x": x0, "block_w": block_w, "tiles_x": tiles_x,
            "row_top": row_top, "height": height, "width": width, "line": line}


def figure4_panel(model, query, matched, unmatched, zoom: int = 1, resample: str = "nearest",
                  outputs: dict | None = None) -> np.ndarray:
    """Figure 4 as one uint8 (H, W, 3) image, for any preset (layout: `figure4_layout`).

    Args:
      model: a `build_model` network (dict outputs with sim_j, theta_j_a/b, p_match, distance, score).
      query, matched, unmatched: (160, 60, 3) images, float in [0, 1] or uint8. The model runs once
        on [(query, matched), (query, unmatched)], the query as image_a.
      zoom: integer upscaling of every tile (boxes and maps stay sharp).
      resample: "nearest" (shows the map's cells) or "bilinear" upsampling of the score maps.
      outputs: the numpy outputs of `run_pairs` if already computed.
    Score maps are direction 0 (query features * gallery parts), the mean over channels
    (`score_maps`), with one jet colour range per level shared by both rows and all parts, so the
    matched and the unmatched maps of a level can be compared by colour (range printed at the bottom).
    """
    outputs = run_pairs(model, query, matched, unmatched) if outputs is None else outputs
    levels = _levels(outputs)
    num_parts = outputs[f"theta_{levels[0]}_a"].shape[1]
    layout = figure4_layout(levels, num_parts, zoom)
    th, tw = layout["tile_hw"]
    canvas = Image.new("RGB", (layout["width"], layout["height"]), (_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=_font_size(zoom))
    line = layout["line"]
    names = ["query", "gallery"] + (list(PART_NAMES[:num_parts]) if num_parts > 1 else ["whole"])

    maps = {level: np.stack([score_maps(outputs[f"sim_{level}"][i], num_parts) for i in (0, 1)])
            for level in levels}  # (2 pairs, P, H_j, W_j)
    images = {"query": _zoom(as_uint8(as_float_image(query)), zoom),
              0: _zoom(as_uint8(as_float_image(matched)), zoom),
              1: _zoom(as_uint8(as_float_image(unmatched)), zoom)}
    for b, level in enumerate(levels):
        _centred_text(draw, font, f"CSN-{level}", layout["block_x"][b], layout["block_w"], 0)
        rule_y = line - 2  # a rule under the level name spans its block
        draw.line([(layout["block_x"][b], rule_y), (layout["block_x"][b] + layout["block_w"] - 1, rule_y)],
                  fill=(0, 0, 0))
        for x, label in zip(layout["tiles_x"][b], names):
            _centred_text(draw, font, label, x, tw, line)
        lo, hi = float(maps[level].min()), float(maps[level].max())
        _centred_text(draw, font, f"range [{lo:.3g}, {hi:.3g}]", layout["block_x"][b],
                      layout["block_w"], layout["height"] - line)
        for row in (0, 1):
            top = layout["row_top"][row]
            query_tile = draw_boxes(images["query"], _windows(model, outputs, level, "a", row, (th, tw)),
                                    PART_COLOURS, width=zoom)
            gallery_tile = draw_boxes(images[row], _windows(model, outputs, level, "b", row, (th, tw)),
                                      PART_COLOURS, width=zoom)
            tiles = [query_tile, gallery_tile] + [colour_map(m, lo, hi, (th, tw), resample)
                                                  for m in maps[level][row]]
            for x, tile in zip(layout["tiles_x"][b], tiles):
                canvas.paste(Image.fromarray(tile), (x, top))
    for row, label in enumerate(("matched", "unmatched")):
        text = (f"{label}: p_match {outputs['p_match'][row]:.3f}   d {outputs['distance'][row]:.3f}"
                f"   score (Eq. 7) {outputs['score'][row]:.3f}")
        draw.text((2, layout["row_top"][row] - line + 1), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def _centred_text(draw, font, text: str, x: int, width: int, y: int):
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((x + max(0, (width - (right - left)) // 2), y + 1), text, fill=(0, 0, 0), font=font)


# ---------------------------------------------------------------------------------------------
# Output
def write_figure4_summary(writer_or_none, model, query, matched, unmatched, step: int,
                          name: str = "figure4", zoom: int = 2) -> np.ndarray:
    """Log Figure 4 (and per-level "stn_crops") as TensorBoard images (`image_summary`); returns the panel.

    Args:
      writer_or_none: a tf.summary writer, used as the default writer for these summaries; None
        logs to whatever default writer is active (nothing is written if there is none).
      step: the global step of the summaries.
      name: tag of the panel; the crops are tagged f"{name}/stn_crops_level{j}".
    """
    outputs = run_pairs(model, query, matched, unmatched)
    panel = figure4_panel(model, query, matched, unmatched, zoom=zoom, outputs=outputs)
    crops = stn_crops(model, query, matched, unmatched, outputs=outputs, zoom=zoom)

    def log():
        image_summary(name, panel, step)
        for level, image in crops.items():
            image_summary(f"{name}/stn_crops_level{level}", image, step)

    if writer_or_none is None:
        log()
    else:
        with writer_or_none.as_default():
            log()
        writer_or_none.flush()
    return panel


def image_summary(tag: str, image: np.ndarray, step: int) -> bool:
    """One uint8 (H, W, 3) image as a TensorBoard image summary (tf.summary.image) under the default
    writer. Returns False if there is no default writer."""
    return tf.summary.image(tag, np.asarray(image, dtype=np.uint8)[None], step=step)


def save_png(panel: np.ndarray, path) -> None:
    """Write a uint8 (H, W, 3) image as PNG."""
    Image.fromarray(np.asarray(panel, dtype=np.uint8)).save(str(path), format="PNG")
