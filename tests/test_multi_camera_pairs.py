"""Training pairs for multi-camera datasets (Market-1501 style): cross-camera positives, a fixed number
per identity and epoch, negatives of another identity and camera; two-camera plans unchanged."""
import numpy as np
import pytest

from reid_tf import config, pairs
from reid_tf.datasets import Record

PER = config.POSITIVES_PER_IDENTITY


def market_like(identities=6, seed=0):
    """Identities with 2–9 images over 2–4 of 6 cameras; identity 99 only in camera 3 (no positive)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(identities):
        cams = rng.choice(6, size=rng.integers(2, 5), replace=False)
        for k in range(rng.integers(len(cams), 10)):
            records.append(Record(f"/m/{i}_{k}.jpg", i + 1, int(cams[k % len(cams)])))
    records += [Record(f"/m/99_{k}.jpg", 99, 3) for k in range(3)]
    return records


def test_positives_per_identity_and_cross_camera():
    records = market_like()
    positives = pairs.multi_camera_positives(records, np.random.default_rng(1))
    assert positives.shape == (6 * PER, 2)  # identity 99 (one camera) gives none
    for a, b in positives:
        assert records[a].identity == records[b].identity and records[a].camera != records[b].camera
    per_identity = np.bincount([records[a].identity for a in positives[:, 0]])
    assert sorted(set(per_identity[per_identity > 0])) == [PER]
    assert pairs.epoch_size(records, 2) == 3 * 6 * PER * 2


def test_small_identity_pairs_drawn_uniformly():
    # Identity 1: cameras 0, 0, 1 -> cross-camera pairs (0,2), (1,2) only; identity 2 as a partner.
    records = [Record("a", 1, 0), Record("b", 1, 0), Record("c", 1, 2), Record("d", 2, 1), Record("e", 2, 4)]
    positives = pairs.multi_camera_positives(records, np.random.default_rng(0), per_identity=2000)
    first = positives[:2000]
    assert {tuple(p) for p in first} == {(0, 2), (1, 2)}
    assert abs(np.mean(first[:, 0] == 0) - 0.5) < 0.05


def test_epoch_plan_negatives_and_determinism():
    records = market_like()
    a, b, labels = pairs.plan_epoch(records, seed=0, epoch=0, crops_per_image=1, batch_size=16)
    assert len(labels) == (3 * 6 * PER) // 16 * 16 and labels[:3].tolist() == [1, 0, 0]
    ids = np.array([r.identity for r in records])
    cams = np.array([r.camera for r in records])
    assert np.all((ids[a] == ids[b]) == (labels == 1))
    assert np.all(cams[a] != cams[b])  # every pair, positive or negative, is cross-camera
    again = pairs.plan_epoch(records, seed=0, epoch=0, crops_per_image=1, batch_size=16)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, labels), again))
    other = pairs.plan_epoch(records, seed=0, epoch=1, crops_per_image=1, batch_size=16)
    assert not np.array_equal(a, other[0])  # fresh positives each epoch


def test_dataset_batches(tmp_path):
    from PIL import Image
    records = []
    for r in market_like(identities=3):
        path = str(tmp_path / r.path.split("/")[-1])
        Image.fromarray(np.full((16, 8, 3), (10 * r.identity) % 256, np.uint8)).save(path)
        records.append(Record(path, r.identity, r.camera))
    ds = pairs.make_pair_dataset(records, batch_size=6, seed=0, crops_per_image=1, num_epochs=1)
    batches = list(ds)
    assert len(batches) == pairs.steps_per_epoch(records, 6, 1) == (3 * 3 * PER) // 6
    x, y = batches[0]
    assert x["image_a"].shape == (6, 160, 60, 3) and sorted(set(y.numpy().tolist())) == [0, 1]


def test_two_camera_records_keep_their_plan():
    records = [Record(f"/v/{i}_{c}.bmp", i, c) for i in range(8) for c in (0, 1)]
    assert not pairs.is_multi_camera(records)
    assert pairs.epoch_size(records, 5) == 3 * 8 * 5
    with pytest.raises(ValueError, match="at least 2 identities"):
        pairs.make_pair_dataset([Record("x", 1, 0), Record("y", 1, 3)], 3, 0, 1)
