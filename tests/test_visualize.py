"""Figure 4 (§3.2): window geometry against hand-computed boxes, score-map channel groups, the panel
on random-init models, and the TensorBoard summary read back from the event file."""
import glob

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from reid_tf import config, visualize
from reid_tf.layers import CSN, central_crop_theta, depthwise_xcorr
from reid_tf.layers.csn import similarity_direct
from reid_tf.model import build_model

RNG = np.random.default_rng(4)
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def images(n=3):
    return [RNG.uniform(size=(config.INPUT_HEIGHT, config.INPUT_WIDTH, 3)).astype("float32") for _ in range(n)]


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    return {name: build_model(name) for name in ("l23", "c1")}


def box(corners):
    """(x_min, y_min, x_max, y_max) of corner points."""
    return (*corners.min(axis=0), *corners.max(axis=0))


def test_identity_window_of_a_full_stripe_is_the_stripe():
    # level 2: map 40 × 15, each map pixel 4 × 4 image pixels; middle stripe rows [10, 30) = image rows 40–119
    centres = visualize.stn_window_corners(IDENTITY, (10, 30), (40, 15))
    np.testing.assert_allclose(centres, [[1.5, 41.5], [57.5, 41.5], [57.5, 117.5], [1.5, 117.5]])
    cells = visualize.stn_window_corners(IDENTITY, (10, 30), (40, 15), cells=True)
    np.testing.assert_allclose(cells, [[-0.5, 39.5], [59.5, 39.5], [59.5, 119.5], [-0.5, 119.5]])
    # level 3: map 20 × 8 (7.5 image columns per map column); bottom stripe rows [10, 20) = image rows 80–159
    cells = visualize.stn_window_corners(IDENTITY, (10, 20), (20, 8), cells=True)
    np.testing.assert_allclose(box(cells), (-0.5, 79.5, 59.5, 159.5))
    # zoomed image: everything scales
    cells = visualize.stn_window_corners(IDENTITY, (10, 20), (20, 8), image_hw=(320, 120), cells=True)
    np.testing.assert_allclose(box(cells), (-0.5, 159.5, 119.5, 319.5))


def test_central_crop_window_is_centred_and_f_map_pixels_wide():
    # C2 at level 2: stripe 20 × 15, f = 10 → a 10 × 10 map-pixel window = 40 × 40 image pixels,
    # centred on the stripe (image rows 0–79, columns 0–59).
    theta = central_crop_theta((20, 15), config.PART_SIZE[2])
    x0, y0, x1, y1 = box(visualize.stn_window_corners(theta, (0, 20), (40, 15), cells=True))
    np.testing.assert_allclose((x1 - x0, y1 - y0), (40.0, 40.0), atol=1e-9)
    np.testing.assert_allclose(((x0 + x1) / 2, (y0 + y1) / 2), (29.5, 39.5), atol=1e-9)
    # centres of the corner samples: 9 map pixels apart
    x0, y0, x1, y1 = box(visualize.stn_window_corners(theta, (0, 20), (40, 15)))
    np.testing.assert_allclose((x1 - x0, y1 - y0), (36.0, 36.0), atol=1e-9)
    # level 3 bottom stripe rows [10, 20) of 20 × 8, f = 5: 5 × 5 map pixels = 37.5 × 40 image pixels
    theta = central_crop_theta((10, 8), config.PART_SIZE[3])
    x0, y0, x1, y1 = box(visualize.stn_window_corners(theta, (10, 20), (20, 8), cells=True))
    np.testing.assert_allclose((x1 - x0, y1 - y0), (37.5, 40.0), atol=1e-9)
    np.testing.assert_allclose(((x0 + x1) / 2, (y0 + y1) / 2), (29.5, 119.5), atol=1e-9)


def test_translated_and_rotated_windows():
    # t_w = 0.5 moves the window a quarter of the stripe width right (half of the half-width)
    theta = np.array([[0.5, 0.0, 0.5], [0.0, 0.5, 0.0]])
    c = visualize.stn_window_corners(theta, (0, 20), (40, 15))
    # u ∈ [0, 1] → map x ∈ [7, 14]; v ∈ [−0.5, 0.5] → map y ∈ [4.75, 14.25]
    np.testing.assert_allclose(box(c), (7.5 * 4 - 0.5, 5.25 * 4 - 0.5, 14.5 * 4 - 0.5, 14.75 * 4 - 0.5))
    # a shear keeps the corner order TL, TR, BR, BL and the growth of `cells` follows the edges
    theta = np.array([[0.5, 0.2, 0.0], [0.1, 0.5, 0.0]])
    c = visualize.stn_window_corners(theta, (0, 20), (40, 15))
    g = visualize.stn_window_corners(theta, (0, 20), (40, 15), cells=True)
    assert c[1, 0] > c[0, 0] and c[3, 1] > c[0, 1]
    np.testing.assert_allclose(g.mean(axis=0), c.mean(axis=0))  # grown symmetrically about the centre
    top = (c[1] - c[0]) / np.linalg.norm(c[1] - c[0])
    # half a map pixel (4 image px) at each end of the top edge
    np.testing.assert_allclose(np.dot(g[1] - g[0], top), np.linalg.norm(c[1] - c[0]) + 4.0)


def test_draw_boxes_draws_only_the_outline():
    image = np.zeros((20, 10, 3), np.uint8)
    corners = np.array([[2.0, 3.0], [7.0, 3.0], [7.0, 15.0], [2.0, 15.0]])
    out = visualize.draw_boxes(image, [corners, corners + 100], [(255, 0, 0), (0, 255, 0)])
    assert out.dtype == np.uint8 and out.shape == image.shape and not image.any()  # input untouched
    red = np.all(out == (255, 0, 0), axis=-1)
    assert red[3, 2:8].all() and red[15, 2:8].all() and red[3:16, 2].all() and red[3:16, 7].all()
    assert not red[4:15, 3:7].any() and not red[:3].any()
    # the off-image box is clipped onto the border, not dropped
    assert np.all(out == (0, 255, 0), axis=-1)[-1].any()


def test_score_maps_pick_the_channel_groups():
    H, W, P, C = 4, 3, 3, 5
    ramp = np.arange(H * W, dtype=float).reshape(H, W, 1)
    # group g, channel c: (g + 1) · 10 + c + ramp → mean over c = (g + 1) · 10 + 2 + ramp
    sim = np.concatenate([(g + 1) * 10.0 + np.arange(C) + ramp for g in range(2 * P)], axis=-1)
    assert sim.shape == (H, W, 2 * P * C)
    for direction in (0, 1):
        maps = visualize.score_maps(sim, P, direction)
        assert maps.shape == (P, H, W)
        for k in range(P):
            np.testing.assert_allclose(maps[k], (direction * P + k + 1) * 10.0 + 2.0 + ramp[..., 0])
    with pytest.raises(ValueError):
        visualize.score_maps(sim, 4)


def test_score_maps_follow_the_csn_layout():
    """Direction 0, part k = mean over channels of x_a * part k of b (Eq. 2) as the CSN lays it out."""
    x_a, x_b = RNG.normal(size=(2, 1, 8, 5, 4)).astype("float32")
    parts_a, parts_b = RNG.normal(size=(2, 1, 3, 3, 3, 4)).astype("float32")
    sim = np.asarray(similarity_direct(x_a, x_b, parts_a, parts_b))[0]
    for direction, (x, parts) in enumerate(((x_a, parts_b), (x_b, parts_a))):
        maps = visualize.score_maps(sim, 3, direction)
        for k in range(3):
            reference = np.asarray(depthwise_xcorr(x, parts[:, k]))[0].mean(axis=-1)
            np.testing.assert_allclose(maps[k], reference, rtol=1e-5, atol=1e-5)


def test_jet_runs_blue_to_red():
    lut = visualize.jet(np.array([0.0, 0.5, 1.0]))
    assert lut.dtype == np.uint8
    assert lut[0, 2] > lut[0, 0] and lut[2, 0] > lut[2, 2] and lut[1, 1] == 255


@pytest.mark.parametrize("name,levels,parts,width", [("l23", (2, 3), 3, 2 * 316 + 10), ("c1", (2, 3, 4), 1, 3 * 188 + 20)])
def test_figure4_panel(models, name, levels, parts, width):
    model = models[name]
    query, matched, unmatched = images()
    panel = visualize.figure4_panel(model, query, matched, unmatched)
    # blocks of (2 + P) tiles of 60 px with 4 px separators, 10 px between blocks; height: 3 text lines
    # (2 headers + row text) + tiles + row text + tiles + range line, at 15 px per line
    assert panel.dtype == np.uint8 and panel.shape == (15 * 3 + 160 + 15 + 160 + 15, width, 3)
    layout = visualize.figure4_layout(levels, parts)
    assert panel.shape[:2] == (layout["height"], layout["width"])
    top, (x_query, x_gallery, x_map) = layout["row_top"][0], layout["tiles_x"][0][:3]
    query_tile = panel[top:top + 160, x_query:x_query + 60]
    map_tile = panel[top:top + 160, x_map:x_map + 60]
    assert np.all(query_tile == visualize.PART_COLOURS[0], axis=-1).any()  # the upper window is drawn
    assert map_tile.std() > 0 and panel.std() > 0
    # the same panel from precomputed outputs; uint8 inputs give the same picture
    outputs = visualize.run_pairs(model, query, matched, unmatched)
    assert outputs[f"sim_{levels[-1]}"].shape[0] == 2
    as_uint8 = [np.round(i * 255).astype(np.uint8) for i in (query, matched, unmatched)]
    again = visualize.figure4_panel(model, *[i.astype("float32") / 255 for i in as_uint8])
    np.testing.assert_array_equal(visualize.figure4_panel(model, *as_uint8), again)


def test_bilinear_maps_and_zoom(models):
    panel = visualize.figure4_panel(models["c1"], *images(), zoom=2, resample="bilinear")
    layout = visualize.figure4_layout((2, 3, 4), 1, zoom=2)
    assert panel.shape == (layout["height"], layout["width"], 3) and layout["tile_hw"] == (320, 120)


def test_stn_crops(models):
    crops = visualize.stn_crops(models["l23"], *images(), zoom=2)
    assert set(crops) == {2, 3}
    assert crops[2].shape == (320, 3 * 120 + 2 * 4, 3) and crops[2].dtype == np.uint8


def test_write_figure4_summary_and_png(models, tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path / "logs"))
    panel = visualize.write_figure4_summary(writer, models["l23"], *images(), step=7)
    writer.close()
    found = {}
    for path in glob.glob(str(tmp_path / "logs" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    found[value.tag] = (event.step, tf.make_ndarray(value.tensor))
    assert set(found) == {"figure4", "figure4/stn_crops_level2", "figure4/stn_crops_level3"}
    step, tensor = found["figure4"]  # [width, height, PNG bytes]
    assert step == 7
    decoded = tf.io.decode_png(tensor[2]).numpy()
    np.testing.assert_array_equal(decoded, panel)

    # None: whatever writer is the default
    other = tf.summary.create_file_writer(str(tmp_path / "default"))
    with other.as_default():
        visualize.write_figure4_summary(None, models["l23"], *images(), step=1, name="fig")
    other.close()
    tags = {value.tag for path in glob.glob(str(tmp_path / "default" / "events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
    assert "fig" in tags

    visualize.save_png(panel, tmp_path / "figure4.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "figure4.png")), panel)
