"""Ranked results made visible: one picture per query and one page that shows them all.

A picture (`ranked_picture`), left to right: the query, a gap, then its top-k gallery images in rank
order. Every tile is the image as the model saw it (resized to 160 × 60), zoomed; under it: rank
and score (Eq. 7), p(match) and d, and the file name. A frame says whether the gallery image shows
the query's person: green same identity, red another, grey unknown (identities come from the file
names, `reid_tf.datasets.file_names.identity_from_name`, or from the dataset in `evaluate --visrank`).

`write_all(out, body, query_images)` writes the pictures named in a ranking.json body
(`reid_tf.rank.ranking_json`) and `index.html`, a static page (no script) that shows every picture
with its query's table of results.
"""
from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reid_tf import config, fileio
from reid_tf.images import read_images
from reid_tf.visualize import as_float_image, as_uint8, save_png  # Figure 4's image helpers

MATCH, NON_MATCH, UNKNOWN, QUERY = (0, 160, 60), (220, 30, 30), (170, 170, 170), (40, 90, 220)
_BACKGROUND = (255, 255, 255)


def _frame_colour(match: bool | None) -> tuple[int, int, int]:
    return UNKNOWN if match is None else MATCH if match else NON_MATCH


def _fit(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """`text`, shortened in the middle with "…" until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        short = text[:keep // 2] + "…" + text[len(text) - (keep - keep // 2):]
        if draw.textlength(short, font=font) <= width:
            return short
    return "…"


def ranked_picture(query: np.ndarray, gallery: Sequence[np.ndarray], captions: Sequence[Sequence[str]],
                   matches: Sequence[bool | None], query_caption: Sequence[str], zoom: int = 2) -> np.ndarray:
    """One query and its ranked gallery images as a uint8 (H, W, 3) picture.

    Args:
      query: (160, 60, 3) image, float in [0, 1] or uint8.
      gallery: the top-k images, best first, same format.
      captions: per gallery image, the lines of text under it (e.g. rank + score, p(match) + d, name).
      matches: per gallery image True / False / None (same identity as the query / other / unknown):
        a green / red / grey frame.
      query_caption: lines under the query (it gets a blue frame).
      zoom: integer upscaling of every tile.
    """
    th, tw = config.INPUT_HEIGHT * zoom, config.INPUT_WIDTH * zoom
    border, gap, query_gap = 2 * zoom, 3 * zoom, 12 * zoom
    font = ImageFont.load_default(size=10 + 2 * zoom)
    line = 12 + 3 * zoom
    lines = max([len(query_caption), *(len(c) for c in captions)])
    tile_w, tile_h = tw + 2 * border, th + 2 * border
    width = tile_w * (1 + len(gallery)) + gap * max(0, len(gallery) - 1) + query_gap
    height = tile_h + lines * line + 4
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    def tile(image, x, colour, text):
        draw.rectangle([x, 0, x + tile_w - 1, tile_h - 1], fill=colour)
        canvas.paste(Image.fromarray(as_uint8(as_float_image(image))).resize((tw, th), Image.BILINEAR),
                     (x + border, border))
        for i, t in enumerate(text):
            t = _fit(draw, font, t, tile_w)
            draw.text((x + (tile_w - draw.textlength(t, font=font)) / 2, tile_h + 2 + i * line), t,
                      fill=(0, 0, 0), font=font)

    tile(query, 0, QUERY, query_caption)
    x = tile_w + query_gap
    draw.line([(tile_w + query_gap // 2, 0), (tile_w + query_gap // 2, height - 1)], fill=(120, 120, 120), width=1)
    for image, text, match in zip(gallery, captions, matches):
        tile(image, x, _frame_colour(match), text)
        x += tile_w + gap
    return np.asarray(canvas)


def picture_names(query_paths: Sequence[str]) -> list[str]:
    """Relative file names of the per-query pictures: ranked/NNNN_<query file stem>.png (unique)."""
    names = []
    for i, path in enumerate(query_paths):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(os.path.basename(path))[0])[:60]
        names.append(f"ranked/{i:04d}_{stem}.png")
    return names


def _short_name(path: str) -> str:
    """folder/file: datasets reuse file names across camera folders (cam_a/0001_0.png, cam_b/0001_0.png)."""
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{parent}/{os.path.basename(path)}" if parent else os.path.basename(path)


def _query_picture(entry: dict, query_image, gallery_images: dict) -> np.ndarray:
    results = entry["results"]
    captions = [[f"#{r['rank']}  {r['score']:.3f}", f"p {r['p_match']:.2f}  d {r['distance']:.2f}",
                 _short_name(r["path"])] for r in results]
    q_id = entry.get("identity")
    query_caption = ["query", "" if q_id is None else f"id {q_id}", _short_name(entry["query"])]
    return ranked_picture(query_image, [gallery_images[r["path"]] for r in results], captions,
                          [r.get("match") for r in results], query_caption)


def write_all(out: str, body: dict, query_images: Sequence[np.ndarray], gallery_images: dict | None = None
              ) -> list[np.ndarray]:
    """Write every query's picture (at entry["picture"], relative to `out`) and out/index.html.

    Args:
      body: a ranking.json body (reid_tf.rank.ranking_json with picture names).
      query_images: the queries' images, in body["queries"] order.
      gallery_images: path → image of every gallery image shown; read from the files if None.
    Returns the pictures.
    """
    if gallery_images is None:
        paths = sorted({r["path"] for q in body["queries"] for r in q["results"]})
        images, kept = read_images(paths, "skip")
        gallery_images = {paths[k]: image for k, image in zip(kept, images)}
        blank = np.full((config.INPUT_HEIGHT, config.INPUT_WIDTH, 3), 0.5, np.float32)
        for p in paths:  # a file changed since it was ranked: show a grey tile
            gallery_images.setdefault(p, blank)
    pictures = []
    for entry, image in zip(body["queries"], query_images):
        picture = _query_picture(entry, image, gallery_images)
        path = os.path.join(out, entry["picture"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_png(picture, path)
        pictures.append(picture)
    fileio.write_text(os.path.join(out, "index.html"), index_html(body))
    return pictures


def index_html(body: dict) -> str:
    """A static page with every query's picture and, folded under it, its table of results."""
    e = html.escape
    queries = body["queries"]
    known = [q for q in queries if q["results"] and q["results"][0].get("match") is not None]
    rank1 = sum(q["results"][0]["match"] for q in known)
    shortlist = body.get("shortlist")
    facts = [f"model <code>{e(str(body.get('model', '')))}</code>",
             f"{len(queries)} queries × {body.get('gallery_images', '?')} gallery images"
             + (f" (<code>{e(str(body['gallery']))}</code>)" if body.get("gallery") else ""),
             f"top {body.get('top', '')} by Eq. 7 (p(match) + λ/(d + ε))",
             "every pair scored" if shortlist is None else f"two-stage: Eq. 7 on each query's {shortlist} nearest by d"]
    if known:
        facts.append(f"rank-1 correct for {rank1} of {len(known)} queries with a known identity")
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(body.get('title', 'reid_tf ranked results'))}</title>", "<style>",
             "body{font:14px/1.4 sans-serif;margin:20px;color:#222;background:#fff}",
             "h1{font-size:20px;margin:0 0 6px} h2{font-size:15px;margin:22px 0 6px;word-break:break-all}",
             ".facts{color:#444;margin:0 0 8px} .legend span{display:inline-block;width:12px;height:12px;"
             "vertical-align:-2px;margin:0 4px 0 12px}",
             "img{display:block;max-width:100%;height:auto;border:1px solid #ddd}",
             "table{border-collapse:collapse;font-size:12px;margin-top:6px} td,th{padding:2px 8px;"
             "border-bottom:1px solid #eee;text-align:left} td.n{text-align:right;font-variant-numeric:tabular-nums}",
             ".yes{color:#0a0} .no{color:#c11}", "</style></head><body>",
             f"<h1>{e(body.get('title', 'Ranked results'))}</h1>",
             "<p class=facts>" + " · ".join(facts) + "</p>",
             f'<p class="facts legend">frame:<span style="background:rgb{QUERY}"></span>query'
             f'<span style="background:rgb{MATCH}"></span>same identity'
             f'<span style="background:rgb{NON_MATCH}"></span>another identity'
             f'<span style="background:rgb{UNKNOWN}"></span>identity unknown</p>']
    for i, q in enumerate(queries):
        parts.append(f'<section><h2>{i + 1}. {e(q["query"])}'
                     + (f" (identity {q['identity']})" if q.get("identity") is not None else "") + "</h2>")
        if q.get("picture"):
            parts.append(f'<img src="{e(q["picture"])}" alt="ranked results of {e(os.path.basename(q["query"]))}"'
                         ' loading="lazy">')
        parts.append("<details><summary>results</summary><table><tr><th>rank</th><th>gallery image</th>"
                     "<th>score</th><th>p(match)</th><th>d</th><th>same identity</th></tr>")
        for r in q["results"]:
            m = r.get("match")
            cell = "" if m is None else ('<span class=yes>yes</span>' if m else '<span class=no>no</span>')
            parts.append(f"<tr><td class=n>{r['rank']}</td><td>{e(r['path'])}</td><td class=n>{r['score']:.4f}</td>"
                         f"<td class=n>{r['p_match']:.4f}</td><td class=n>{r['distance']:.4f}</td><td>{cell}</td></tr>")
        parts.append("</table></details></section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
