"""The objective (§3.1, Eq. 3–6), the θ penalty (§4.2) and the test score (Eq. 7)."""
from __future__ import annotations

from keras import ops

from reid_tf import config


def softmax_loss(labels, logits):
    """L_cls (Eq. 3): 2-way softmax cross-entropy, mean over the batch.

    Eq. 3 as printed is garbled (it sums probabilities, not log-probabilities); this is the usual
    softmax loss the text names. labels (B,) int, 1 = matched; logits (B, 2).
    """
    log_p = ops.log_softmax(logits, axis=-1)
    onehot = ops.one_hot(ops.cast(labels, "int32"), 2, dtype=log_p.dtype)
    return -ops.mean(ops.sum(onehot * log_p, axis=-1))


def embedding_distance(r1, r2):
    """d = ‖r1 − r2‖ (Eq. 5) per row, with a safe gradient at r1 = r2."""
    sq = ops.sum(ops.square(r1 - r2), axis=-1)
    return ops.sqrt(ops.maximum(sq, 1e-12))


def contrastive_loss(y, d, margin: float = config.CONTRASTIVE_MARGIN):
    """L_ctr (Eq. 4) = 1/(2m) Σ [y d² + (1 − y) max(0, α − d)²]; y (B,) 1 = matched, d (B,)."""
    y = ops.cast(y, d.dtype)
    per_pair = y * ops.square(d) + (1.0 - y) * ops.square(ops.relu(margin - d))
    return 0.5 * ops.mean(per_pair)


def theta_penalty(thetas, weight: float = config.ROTATION_L1):
    """§4.2 "L1 regularization for r_w and r_h": weight · mean |r| over every θ given.

    thetas: iterable of (..., 2, 3) tensors; r_w = θ[0, 1], r_h = θ[1, 0]. Scale > 0 and the window
    staying inside the stripe are guaranteed by the parameterisation (reid_tf.layers.stn), so no
    penalty is needed for them.
    """
    terms = [ops.mean(ops.abs(t[..., 0, 1])) + ops.mean(ops.abs(t[..., 1, 0])) for t in thetas]
    return weight * ops.sum(ops.stack(terms)) if terms else 0.0


# The terms of the value training minimises (`objective_terms`), in the order they are summed.
OBJECTIVE_TERMS = ("l_cls", "l_ctr", "l_theta", "l_decay")


def objective_terms(labels, outputs: dict, decay, contrastive: bool = True) -> dict:
    """Every term of the training objective, as scalars.

    Args:
      labels: (B,) int, 1 = matched.
      outputs: the network's output dict (reid_tf.model.build_model): "logits", "distance" and the
        θ of every level and image ("theta_*").
      decay: the layers' L2 regularisation losses (§4.2 weight decay; `network.losses`).
      contrastive: False for Ours-cls (Table 3): no L_ctr, though the ranking net still computes d.
    Returns:
      {name: scalar} for OBJECTIVE_TERMS: L_cls (Eq. 3), L_ctr (Eq. 4; 0 when not contrastive), the
      θ penalty (§4.2; 0 without an STN) and the weight decay (0 without regularisers).
    """
    thetas = [v for k, v in outputs.items() if k.startswith("theta_")]
    return {
        "l_cls": softmax_loss(labels, outputs["logits"]),
        "l_ctr": contrastive_loss(labels, outputs["distance"]) if contrastive else 0.0,
        "l_theta": theta_penalty(thetas) if thetas else 0.0,
        "l_decay": ops.sum(ops.stack(decay)) if decay else 0.0,
    }


def total_objective(terms: dict):
    """Eq. 6, L_com = L_cls + L_ctr, plus §4.2's regularisers (θ penalty, weight decay): the value
    training minimises, from `objective_terms`."""
    return terms["l_cls"] + terms["l_ctr"] + terms["l_theta"] + terms["l_decay"]


def final_score(p_match, d, lam: float = config.SCORE_LAMBDA, eps: float = config.SCORE_EPS):
    """Eq. 7: SimiScore = s_softmax + λ / (d + ε); higher = more similar."""
    return p_match + lam / (d + eps)
