"""--init_from: start training from another run's network (fine-tuning)."""
from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from layer_testing import find_layer
from reid_tf import train
from reid_tf.model import build_model, copy_weights
from reid_tf.run_folder import load_network
from reid_tf.run_options import TrainOptions


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A saved l2 network whose weights differ from a fresh build's (seed 1)."""
    keras.utils.set_random_seed(1)
    network = build_model("l2")
    for v in network.trainable_variables:
        v.assign(v + 0.01)  # the θ kernels start at zero: make every weight recognisable
    workdir = tmp_path_factory.mktemp("src")
    network.save(str(workdir / "model.keras"))
    return network, str(workdir)


def test_init_from_copies_every_layer_of_the_same_name_and_shape(source):
    src, workdir = source
    keras.utils.set_random_seed(2)
    target = build_model("l23")  # shares the trunk, CSN-2 and rank_2 with l2; its head reads 1,152 channels
    train.init_from(target, workdir, partial=True)  # a workdir stands for its model.keras
    for name in ("conv1", "conv2", "csn_2", "rank_2", "conv5", "conv6", "logits"):
        for a, b in zip(find_layer(src, name).get_weights(), find_layer(target, name).get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=name)
    # conv4 and the embedding read 1,152 / 192 channels in l23 (576 / 96 in l2); conv3 and level 3 are new
    assert set(copy_weights(src, build_model("l23"))[1]) == {"conv3", "conv4", "embedding", "csn_3", "rank_3"}


def test_init_from_errors_name_the_problem(tmp_path, source):
    target = build_model("l2")
    with pytest.raises(FileNotFoundError, match="init_from.*not found"):
        train.init_from(target, str(tmp_path / "nothing"))


@pytest.mark.slow  # tens of seconds (DESIGN "Test tiers": what the slow tier guards)
def test_training_run_starts_from_the_given_network(tmp_path, source):
    """With learning rate 0, a 1-step run ends with the source's trainable weights."""
    src, workdir = source
    opts = TrainOptions(dataset="synthetic", data_dir=str(tmp_path / "data"), model="l2",
                        workdir=str(tmp_path / "run"), max_steps=1, batch_size=6, learning_rate=0.0,
                        synthetic_identities=12, evaluate=False, figures=False, init_from=workdir)
    train.run(opts)
    trained = load_network(os.path.join(opts.workdir, "model.keras"))
    for a, b in zip(src.trainable_variables, trained.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-7, err_msg=a.path)
