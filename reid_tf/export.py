"""Export a trained network as a TensorFlow SavedModel for serving.

    python -m reid_tf.export --model=runs/x/model.keras --out=DIR

The SavedModel (Keras 3 `keras.export.ExportArchive`) needs only TensorFlow to load and run:
`m = tf.saved_model.load(DIR)`; every endpoint is also a serving signature (TF Serving).

  encode(image)            image (N, 160, 60, 3) float32 RGB in [0, 1], resized as training does
                           → the image encoder's outputs (reid_tf.model.build_encoder): per level j
                             map_j (N, H_j, W_j, 96) and parts_j (N, P, f_j, f_j, 96), what pair
                             scoring needs; theta_j (N, P, 2, 3); embedding (N, 256).
                           The default signature ("serving_default").
  score_features(map_j_a, parts_j_a, embedding_a, map_j_b, parts_j_b, embedding_b)
                           → the pair head: p_match, distance (Eq. 5), score (Eq. 7), logits (N,).
                           Encode a gallery once, then score any pair from its features.
  score_images(image_a, image_b)
                           → the same for image pairs (the whole Siamese model).
a is the query, b the gallery image (p(match) is not symmetric). DIR/assets.extra/reid_tf.json
records the preset's levels, λ, ε and the endpoints' input names.

The export is written into a hidden folder beside DIR and renamed onto DIR only when complete
(verified, reid_tf.json written): an export that is killed leaves no DIR that loads without its
reid_tf.json. --out must be absent, an empty folder, or (with --overwrite) a folder to replace; a
folder holding a SavedModel without reid_tf.json (an export of an older version, killed mid-write)
is named as a partial export.

The exported pair head computes Eq. 2 with the "direct" correlation (one depth-wise convolution,
plain TF ops) whatever form the model was trained with: "shift" is XLA-compiled, so serving it would
need XLA in the serving runtime (docs/DESIGN.md, "Export"). The network is rebuilt with
correlation="direct" and the weights copied; `export` then checks the SavedModel against the Keras
model on random images (to 1e-4) before it returns.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import flags, logging

from reid_tf import cli, config, fileio

TOLERANCE = 1e-4  # SavedModel == Keras model: float32 rounding, far below a change of ranking
PAIR_OUTPUTS = ("p_match", "distance", "score", "logits")
META = os.path.join("assets.extra", "reid_tf.json")  # what makes an export complete: written last


def check_out(out: str, overwrite: bool = False) -> None:
    """--out must be absent or an empty folder, or (overwrite) a folder to replace; cli.UsageError
    otherwise (one `error:` line from the command), saying what it holds (a file, a partial export,
    something else) and what to do."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise cli.UsageError(f"--out={out} is a file, not a folder; give a folder for the SavedModel")
    if not os.path.isdir(out) or not os.listdir(out) or overwrite:
        return
    if os.path.isfile(os.path.join(out, "saved_model.pb")) and not os.path.isfile(os.path.join(out, META)):
        raise cli.UsageError(f"--out={out} holds a partial export (a SavedModel without {META}: its writing "
                             "was interrupted); pass --overwrite to replace it, or delete it")
    raise cli.UsageError(f"--out={out} exists and is not empty; choose another --out or pass --overwrite")


def with_correlation(model, correlation: str = "direct"):
    """The same network (same weights) with every CSN similarity computing Eq. 2 by `correlation`:
    built anew from the model's own config (reid_tf.model.model_config_of), weights copied by layer."""
    from reid_tf.model import build_model, copy_weights, model_config_of

    clone = build_model(model_config_of(model), correlation)
    _, missed = copy_weights(model, clone)
    if missed:
        raise ValueError(f"{model.name}: layers {missed} were not carried over to the {correlation!r} rebuild")
    return clone


def _specs(model) -> tuple[object, dict]:
    """TensorSpecs of the encoder's image and of the pair head's inputs (named as the head names them)."""
    import tensorflow as tf

    from reid_tf.model import pair_head_inputs

    image = tf.TensorSpec((None, config.INPUT_HEIGHT, config.INPUT_WIDTH, config.INPUT_CHANNELS), tf.float32, "image")
    features = {name: tf.TensorSpec((None, *shape), tf.float32, name) for name, shape in pair_head_inputs(model)}
    return image, features


def export(model, out: str, verify: bool = True, seed: int = 0) -> dict:
    """Write `model` (a reid_tf network) to `out` as a SavedModel; returns its metadata.

    verify: load the SavedModel back and compare its three endpoints with the Keras model on
    random images; raises ValueError beyond TOLERANCE. Adds the measured differences to the metadata.
    The SavedModel appears at `out` only when complete (written beside it, then renamed).
    """
    with fileio.atomic_folder(out) as tmp:
        return _write_export(model, tmp, verify, seed)


def _write_export(model, out: str, verify: bool, seed: int) -> dict:
    """The SavedModel and its reid_tf.json, in folder `out` (export's temporary one)."""
    import keras
    import tensorflow as tf

    from reid_tf.model import encoder_of, pair_head_of, structure

    direct = with_correlation(model, "direct")
    encoder, head = encoder_of(direct), pair_head_of(direct)
    image, features = _specs(direct)

    archive = keras.export.ExportArchive()
    archive.track(direct)

    def encode(image):
        return encoder(image, training=False)

    def score_features(features):
        out = head(features, training=False)
        return {k: out[k] for k in PAIR_OUTPUTS}

    def score_images(image_a, image_b):
        out = direct({"image_a": image_a, "image_b": image_b}, training=False)
        return {k: out[k] for k in PAIR_OUTPUTS}

    archive.add_endpoint("encode", encode, input_signature=[image])  # first = "serving_default"
    archive.add_endpoint("score_features", score_features, input_signature=[features])
    archive.add_endpoint("score_images", score_images,
                         input_signature=[tf.TensorSpec(image.shape, tf.float32, "image_a"),
                                          tf.TensorSpec(image.shape, tf.float32, "image_b")])
    archive.write_out(out, verbose=False)

    parts = structure(model)
    meta = {"format": "reid_tf-savedmodel-v1", "model": model.name, "levels": list(parts.levels),
            "input": {"shape": [config.INPUT_HEIGHT, config.INPUT_WIDTH, config.INPUT_CHANNELS],
                      "dtype": "float32", "range": [0.0, 1.0], "layout": "NHWC RGB"},
            "lambda": float(parts.score.lam), "eps": float(parts.score.eps),
            "score_uses_distance": bool(parts.score.use_distance), "correlation": "direct",
            "endpoints": {"encode": ["image"], "score_features": sorted(features),
                          "score_images": ["image_a", "image_b"]}}
    if verify:
        meta["max_abs_difference"] = verify_export(model, out, seed)
    os.makedirs(os.path.join(out, "assets.extra"), exist_ok=True)
    with open(os.path.join(out, META), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def _images(n: int, seed: int) -> np.ndarray:
    """Structured random images (coarse colour blocks plus noise), (n, 160, 60, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(n, config.INPUT_HEIGHT // 20, config.INPUT_WIDTH // 20, 3))
    blocks = np.repeat(np.repeat(coarse, 20, axis=1), 20, axis=2)
    return np.clip(blocks + rng.normal(0, 0.1, blocks.shape), 0, 1).astype(np.float32)


def verify_export(model, out: str, seed: int = 0, n: int = 4) -> dict[str, float]:
    """Max |SavedModel − Keras model| per output on n random pairs; ValueError above TOLERANCE."""
    import tensorflow as tf

    from reid_tf.model import encoder_of

    a, b = _images(n, seed), _images(n, seed + 1)
    want = model({"image_a": a, "image_b": b}, training=False)
    want_fa = encoder_of(model)(a, training=False)
    loaded = tf.saved_model.load(out)
    fa, fb = loaded.encode(tf.constant(a)), loaded.encode(tf.constant(b))
    names = [s.name for s in loaded.score_features.concrete_functions[0].structured_input_signature[0][0].values()]
    by_features = loaded.score_features({name: (fa if name.endswith("_a") else fb)[name[:-2]] for name in names})
    by_images = loaded.score_images(tf.constant(a), tf.constant(b))
    diff = {f"encode/{k}": float(np.max(np.abs(fa[k].numpy() - np.asarray(want_fa[k])))) for k in want_fa}
    for endpoint, got in (("score_features", by_features), ("score_images", by_images)):
        for k in PAIR_OUTPUTS:
            diff[f"{endpoint}/{k}"] = float(np.max(np.abs(got[k].numpy() - np.asarray(want[k]))))
    worst = max(diff, key=diff.get)
    if diff[worst] > TOLERANCE:
        raise ValueError(f"exported {out} differs from the Keras model by {diff[worst]:.2e} in {worst} "
                         f"(tolerance {TOLERANCE:g})")
    return diff


def main(argv):
    del argv
    from reid_tf.run_folder import load_network

    f = flags.FLAGS
    if not f.model or not f.out:
        raise cli.UsageError("missing --model or --out — pass --model=runs/x/model.keras (or the workdir) "
                             "and --out=DIR")
    check_out(f.out, f.overwrite)
    meta = export(load_network(f.model), f.out, verify=f.verify)
    logging.info("exported %s (levels %s) to %s: endpoints encode, score_features, score_images",
                 meta["model"], meta["levels"], f.out)
    if f.verify:
        worst = max(meta["max_abs_difference"], key=meta["max_abs_difference"].get)
        logging.info("checked against the Keras model on random images: max |difference| %.1e (%s)",
                     meta["max_abs_difference"][worst], worst)


if __name__ == "__main__":
    flags.DEFINE_string("model", None, "model.keras written by reid_tf.train, or its workdir")
    flags.DEFINE_string("out", None, "folder of the SavedModel")
    flags.DEFINE_boolean("verify", True, "load the export back and compare it with the Keras model")
    flags.DEFINE_boolean("overwrite", False, "write into a non-empty --out")
    cli.run(main)
