"""The training step: the network plus the objective of §3.1 (Eq. 6), stepped by `model.fit`
with the optimiser of §4.2.

- `PairTrainer` wraps the network and overrides `compute_loss` (the Keras 3 hook for losses that
  need several outputs) with the objective of reid_tf.losses (`objective_terms`, `total_objective`:
  L_cls (Eq. 3) + L_ctr (Eq. 4, not for "cls") + θ penalty (§4.2) + weight decay (§4.2, the layers'
  L2 regularisers)), with one Mean tracker per term for logs/TensorBoard.
- `make_optimizer`: Adam, as §4.2.

What a step's state is saved to and restored from is reid_tf.checkpoints; the callbacks of a run
(checkpoints every N steps, the time budget, Ctrl-C, progress lines, validation) are in
reid_tf.callbacks; reid_tf.train is the command that puts them together.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from reid_tf import config, losses
from reid_tf import model as model_lib


@keras.saving.register_keras_serializable(package="reid_tf")
class PairTrainer(keras.Model):
    """The network plus the paper's objective. Call arguments and outputs are the network's."""

    TERMS = losses.OBJECTIVE_TERMS

    def __init__(self, network: keras.Model, contrastive: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.network, self.contrastive = network, bool(contrastive)
        # the parts that shared-image inputs run separately (found once, not per call)
        self.levels = model_lib.structure(network).levels
        self.encoder, self.head = model_lib.encoder_of(network), model_lib.pair_head_of(network)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (*self.TERMS, "loss")}
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="pair_accuracy")

    def call(self, inputs, training=False):
        """Per-pair inputs {"image_a", "image_b"} run the Siamese network; shared-image inputs
        {"images", "index_a", "index_b"} (reid_tf.pairs.make_shared_dataset) encode every image
        once and run the pair head on (images[index_a[i]], images[index_b[i]]): the same outputs."""
        if "images" not in inputs:
            return self.network(inputs, training=training)
        levels = self.levels
        features = self.encoder(inputs["images"], training=training)
        fa = {k: tf.gather(v, inputs["index_a"]) for k, v in features.items()}  # (N, …) -> (M, …)
        fb = {k: tf.gather(v, inputs["index_b"]) for k, v in features.items()}
        head = self.head(model_lib.head_inputs(fa, fb, levels), training=training)
        return model_lib.pair_outputs(fa, fb, head, levels)

    def loss_terms(self, y, y_pred) -> dict:
        """Every term of the objective, as scalars (reid_tf.losses.objective_terms)."""
        return losses.objective_terms(y, y_pred, self.network.losses, self.contrastive)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        terms = self.loss_terms(y, y_pred)
        total = losses.total_objective(terms)  # Eq. 6 with the regularisers
        for name, value in terms.items():
            self.trackers[name].update_state(value)
        self.trackers["loss"].update_state(total)
        self.accuracy.update_state(y, y_pred["logits"])
        # Under tf.distribute each replica sees 1/n of the batch and the gradients are summed, so
        # the per-replica mean is divided by n (Keras does this only for its own compiled losses).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return total / replicas if replicas > 1 else total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return self.get_metrics_result()

    @property
    def metrics(self):
        return [*self.trackers.values(), self.accuracy]


def make_optimizer(learning_rate: float = config.LEARNING_RATE) -> keras.optimizers.Optimizer:
    """Adam, lr 5e-4 (§4.2); weight decay is the layers' L2 regulariser (coupled, as TF1 did)."""
    return keras.optimizers.Adam(learning_rate)
