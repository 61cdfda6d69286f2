"""Ranked-results pictures of a dataset's test trial (`python -m reid_tf.evaluate --visrank=N`).

The trial's queries and gallery are those of its single-shot test (reid_tf.protocols.single_shot),
ranked by reid_tf.rank.Ranker and drawn by reid_tf.ranked_results, with the identities the dataset
gives. It is a module of its own, not a part of ranked_results, because it needs both rank and
ranked_results, and rank's command already writes its pictures through ranked_results.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from reid_tf import config, fileio, protocols, ranked_results
from reid_tf.images import load_images
from reid_tf.rank import Ranker, ranking_json


def visrank_trial(network, dataset, identities: Sequence[int], trial: int, seed: int, n: int, out: str,
                  tb_dir: str | None = None, step: int = 0, title: str = "") -> dict:
    """Pictures of N test queries of a trial, ranked against its gallery.

    The trial's single-shot draw (as evaluation uses), every pair scored; the first N queries;
    identities from the dataset. Writes out/ranking.json, out/ranked/*.png and out/index.html, and
    logs each picture to TensorBoard in tb_dir as "visrank/<query>" at `step`.
    """
    from reid_tf.visualize import image_summary

    queries, gallery = protocols.single_shot(dataset, identities, trial, seed)
    queries = queries[:n]
    q_paths, g_paths = [r.path for r in queries], [r.path for r in gallery]
    q_images, g_images = load_images(q_paths), load_images(g_paths)
    ranking = Ranker(network).rank(q_images, g_images, top=max(config.RANKS), shortlist=0)
    body = ranking_json(ranking, q_paths, g_paths, pictures=ranked_results.picture_names(q_paths),
                        identities=([r.identity for r in queries], [r.identity for r in gallery]),
                        title=title or f"{dataset.name} trial {trial}: ranked test queries",
                        model=getattr(network, "name", ""), gallery=dataset.root, gallery_images=len(gallery),
                        top=int(ranking.index.shape[1]))
    pictures = ranked_results.write_all(out, body, q_images, dict(zip(g_paths, g_images)))
    fileio.write_json(os.path.join(out, "ranking.json"), body)
    if tb_dir:
        import tensorflow as tf

        writer = tf.summary.create_file_writer(tb_dir)
        with writer.as_default():
            for entry, picture in zip(body["queries"], pictures):
                image_summary(f"visrank/{os.path.splitext(os.path.basename(entry['picture']))[0]}", picture, step)
        writer.flush()
    return body
