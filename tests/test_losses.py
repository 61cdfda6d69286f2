"""Losses and score against hand-computed values (Eq. 3–7)."""
import math

import numpy as np
import pytest

from reid_tf import losses


def test_softmax_loss_hand_value():
    logits = np.array([[0.0, 0.0], [2.0, 0.0]], "float32")
    labels = np.array([1, 0])
    expect = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert float(losses.softmax_loss(labels, logits)) == pytest.approx(expect, rel=1e-6)


def test_contrastive_loss_hand_value():
    y = np.array([1, 0, 0], "float32")
    d = np.array([0.5, 0.3, 1.5], "float32")
    # 1/(2m) Σ: matched 0.5² = 0.25; unmatched max(0, 1 − 0.3)² = 0.49; unmatched beyond margin 0
    assert float(losses.contrastive_loss(y, d)) == pytest.approx((0.25 + 0.49 + 0.0) / 6, rel=1e-6)
    assert float(losses.contrastive_loss(y, d, margin=2.0)) == pytest.approx((0.25 + 1.7**2 + 0.25) / 6, rel=1e-6)


def test_distance_and_final_score():
    r1 = np.array([[1.0, 0.0], [0.6, 0.8]], "float32")
    r2 = np.array([[0.0, 1.0], [0.6, 0.8]], "float32")
    d = losses.embedding_distance(r1, r2).numpy()
    np.testing.assert_allclose(d, [math.sqrt(2), 1e-6], rtol=1e-5)
    p = np.array([0.9, 0.1], "float32")
    np.testing.assert_allclose(np.asarray(losses.final_score(p, np.array([0.2, 1.0], "float32"))),
                               [0.9 + 0.2 / (0.2 + 1e-4), 0.1 + 0.2 / (1.0 + 1e-4)], rtol=1e-6)


def test_theta_penalty_is_l1_on_rotation_only():
    theta = np.array([[[0.5, 0.2, 0.3], [-0.4, 0.5, 0.1]]], "float32")  # r_w = 0.2, r_h = −0.4
    assert float(losses.theta_penalty([theta], weight=1.0)) == pytest.approx(0.6, rel=1e-6)
    assert float(losses.theta_penalty([theta, theta], weight=0.5)) == pytest.approx(0.6, rel=1e-6)


def test_objective_is_eq6_plus_the_regularisers():
    """total_objective = L_cls + L_ctr (Eq. 6) + θ penalty + weight decay, each from its own function;
    Ours-cls drops L_ctr, a network without θ or regularisers contributes 0 for them."""
    labels = np.array([1, 0])
    theta = np.array([[[0.5, 0.2, 0.3], [-0.4, 0.5, 0.1]]], "float32")
    outputs = {"logits": np.array([[0.0, 0.0], [2.0, 0.0]], "float32"),
               "distance": np.array([0.5, 0.3], "float32"), "theta_2_a": theta, "theta_2_b": -theta}
    decay = [np.float32(0.25), np.float32(0.5)]
    terms = losses.objective_terms(labels, outputs, decay)
    assert tuple(terms) == losses.OBJECTIVE_TERMS
    want = {"l_cls": float(losses.softmax_loss(labels, outputs["logits"])),
            "l_ctr": float(losses.contrastive_loss(labels, outputs["distance"])),
            "l_theta": float(losses.theta_penalty([theta, -theta])), "l_decay": 0.75}
    for name, value in want.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-6), name
    assert float(losses.total_objective(terms)) == pytest.approx(sum(want.values()), rel=1e-6)
    bare = losses.objective_terms(labels, {k: outputs[k] for k in ("logits", "distance")}, [], contrastive=False)
    assert (bare["l_ctr"], bare["l_theta"], bare["l_decay"]) == (0.0, 0.0, 0.0)
    assert float(losses.total_objective(bare)) == pytest.approx(want["l_cls"], rel=1e-6)
