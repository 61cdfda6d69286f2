"""Export for serving: the SavedModel, loaded in a fresh process with TensorFlow alone,
equals the Keras model to 1e-4 on all three endpoints, holds no XLA-compiled or FFT code, and the
command answers bad input with one line."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tensorflow.core.protobuf import saved_model_pb2

from reid_tf.config import ModelConfig, get_model_config
from reid_tf.export import TOLERANCE as ATOL
from reid_tf.export import with_correlation
from reid_tf.model import build_model, encoder_of, model_config_of, structure
from test_scoring import images, randomise


# Runs in a fresh interpreter: TensorFlow and NumPy only.
FRESH = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    export, inputs, outputs = sys.argv[1:4]
    m = tf.saved_model.load(export)
    x = np.load(inputs)
    fa, fb = m.encode(tf.constant(x["a"])), m.encode(tf.constant(x["b"]))
    head_inputs = {k + "_a": v for k, v in fa.items()} | {k + "_b": v for k, v in fb.items()}
    names = m.signatures["score_features"].structured_input_signature[1]
    by_features = m.signatures["score_features"](**{k: head_inputs[k] for k in names})
    by_images = m.signatures["score_images"](image_a=tf.constant(x["a"]), image_b=tf.constant(x["b"]))
    out = {"encode/" + k: v.numpy() for k, v in fa.items()}
    out |= {"score_features/" + k: v.numpy() for k, v in by_features.items()}
    out |= {"score_images/" + k: v.numpy() for k, v in by_images.items()}
    np.savez(outputs, **out)
    print("reid_tf imported:", any(name.startswith("reid_tf") for name in sys.modules))
""")


@pytest.mark.parametrize("cfg", [
    ModelConfig("plain_l2", levels=(2,), dividing=False, stn=False, contrastive=False),  # C1, C2, "cls" in one
    "l23",
])
def test_rebuilt_with_the_direct_correlation_is_the_same_network(cfg):
    """export's rebuild: the model's own config read back from its layers, every weight carried over,
    Eq. 2 by the direct form; the outputs equal the original's to the export tolerance."""
    model = randomise(build_model(cfg))
    assert model_config_of(model) == get_model_config(cfg)
    direct = with_correlation(model)
    assert {s.correlation for s in structure(direct).similarity.values()} == {"direct"}
    a, b = images(3), images(3)
    want = model({"image_a": a, "image_b": b}, training=False)
    got = direct({"image_a": a, "image_b": b}, training=False)
    for key in ("p_match", "distance", "score", "logits"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), rtol=0, atol=ATOL, err_msg=key)


def run_export(*args):
    return subprocess.run([sys.executable, "-m", "reid_tf.export", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = randomise(build_model("l23"))  # trained-like spread of d, non-trivial BN statistics
    model.save(root / "model.keras")
    proc = run_export(f"--model={root / 'model.keras'}", f"--out={root / 'saved'}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root, model, proc


def test_saved_model_in_a_fresh_process_equals_the_keras_model(exported):
    root, model, _ = exported
    a, b = images(5), images(5)
    np.savez(root / "inputs.npz", a=a, b=b)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", FRESH, str(root / "saved"), str(root / "inputs.npz"),
                           str(root / "outputs.npz")], capture_output=True, text=True, timeout=300,
                          cwd=root, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "reid_tf imported: False" in proc.stdout
    got = np.load(root / "outputs.npz")
    want = model({"image_a": a, "image_b": b}, training=False)
    features = encoder_of(model)(a, training=False)
    assert {k.split("/")[1] for k in got if k.startswith("encode/")} == set(features)
    for key in features:  # map_j, parts_j, theta_j, embedding
        np.testing.assert_allclose(got[f"encode/{key}"], np.asarray(features[key]), rtol=0, atol=ATOL, err_msg=key)
    for endpoint in ("score_features", "score_images"):
        for key in ("p_match", "distance", "score", "logits"):
            np.testing.assert_allclose(got[f"{endpoint}/{key}"], np.asarray(want[key]), rtol=0, atol=ATOL,
                                       err_msg=f"{endpoint}/{key}")


def test_export_uses_plain_tf_ops_and_records_its_contract(exported):
    root, _, proc = exported
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((root / "saved" / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    jit = [f.signature.name for f in graph.library.function
           if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]
    ops = {n.op for f in graph.library.function for n in f.node_def} | {n.op for n in graph.node}
    assert jit == [] and not {op for op in ops if "Xla" in op or "FFT" in op}
    assert "DepthwiseConv2dNative" in ops  # Eq. 2, the "direct" form
    assert set(saved.meta_graphs[0].signature_def) - {"__saved_model_init_op"} == {
        "encode", "score_features", "score_images", "serving_default"}
    meta = json.loads((root / "saved" / "assets.extra" / "reid_tf.json").read_text())
    assert meta["levels"] == [2, 3] and meta["correlation"] == "direct"
    assert set(meta["max_abs_difference"])  # export() itself raises beyond TOLERANCE; the differences are recorded
    assert "max |difference|" in proc.stderr  # the command's own check, logged


def test_export_bad_input_one_line(exported, tmp_path):
    root, _, _ = exported
    for args, needle in (([f"--model={tmp_path / 'none.keras'}", f"--out={tmp_path / 'x'}"], "no such file"),
                         ([f"--model={root / 'model.keras'}", f"--out={root / 'saved'}"], "not empty")):
        proc = run_export(*args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], proc.stderr[-3000:]
