"""Validation during training: CMC on held-out identities, TensorBoard scalars and Figure 4 panels.

VIPeR and CUHK01 have no validation split in the paper (§4.1). For them the curve is computed on
the trial's test identities and logged as "test_monitor": it is for watching learning (and for the
validation-against-time curve of issue 5), never for choosing a checkpoint — the final model is the
last step, whatever this curve says.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from reid_tf import config, datasets, fileio, metrics


class Validation(keras.callbacks.Callback):
    """Every `every` steps (0: only at the end): rank-1/5/10 + mAP by Eq. 7 on `identities`."""

    def __init__(self, dataset: datasets.Dataset, identities: list[int], tag: str, opts,
                 every: int, network: keras.Model):
        super().__init__()
        self.dataset, self.identities, self.tag, self.every = dataset, identities, tag, every
        self.network, self.figures, self.workdir = network, opts.figures, opts.workdir
        self.trial, self.seed = opts.trial, opts.seed
        self.history_path = os.path.join(opts.workdir, "history.json")
        self.writer = tf.summary.create_file_writer(os.path.join(opts.workdir, "tb", tag))
        self._images = None
        self.skip_final: Callable[[], bool] = lambda: False  # e.g. on Ctrl-C: exit promptly

    def on_train_begin(self, logs=None):
        self.t0 = time.monotonic()
        self.history = []
        if os.path.isfile(self.history_path):  # resumed run: keep the earlier points
            with open(self.history_path) as f:
                self.history = json.load(f)
        self.elapsed0 = self.history[-1]["train_seconds"] if self.history else 0.0

    def _load(self):
        from reid_tf.pairs import load_images
        if self._images is None:
            queries, gallery = datasets.single_shot(self.dataset, self.identities, self.trial, self.seed)
            self._images = (load_images([q.path for q in queries]), load_images([g.path for g in gallery]),
                            np.array([q.identity for q in queries]), np.array([g.identity for g in gallery]))
        return self._images

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.every and step % self.every == 0:
            self.validate(step)

    def on_train_end(self, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if self.skip_final():
            return
        if not self.history or self.history[-1]["step"] != step:
            self.validate(step)

    def validate(self, step: int) -> dict:
        from reid_tf.scoring import ScoringEngine
        t = time.monotonic()
        q, g, q_ids, g_ids = self._load()
        scores = ScoringEngine(self.network).score_matrix(q, g)["score"]
        ranks = metrics.rank_k(metrics.cmc(scores, q_ids, g_ids), config.RANKS)
        m_ap = metrics.mean_average_precision(scores, q_ids, g_ids)
        train_seconds = self.elapsed0 + (t - self.t0)
        point = {"step": step, "train_seconds": train_seconds, "map": 100 * m_ap,
                 **{f"rank{k}": 100 * v for k, v in ranks.items()}}
        self.history.append(point)
        fileio.write_json(self.history_path, self.history)
        with self.writer.as_default(step=step):
            for k, v in ranks.items():
                tf.summary.scalar(f"cmc/rank{k}", 100 * v)
            tf.summary.scalar("cmc/mAP", 100 * m_ap)
            if self.figures:
                from reid_tf.visualize import write_figure4_summary
                other = 1 if len(g) > 1 else 0
                write_figure4_summary(None, self.network, q[0], g[0], g[other], step)
        self.writer.flush()
        logging.info("%s CMC at step %d (%d identities, chance %.1f%%): rank-1 %.1f%%  rank-5 %.1f%%  "
                     "rank-10 %.1f%%  mAP %.1f%%  [%.0f s]", self.tag, step, len(q_ids), 100 / len(q_ids),
                     point["rank1"], point["rank5"], point["rank10"], point["map"], time.monotonic() - t)
        return point
