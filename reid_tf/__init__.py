"""reid_tf: Guo & Cheung, CVPR 2018 — multi-level similarity person ReID in TensorFlow 2 / Keras 3."""
import os

from reid_tf import cli

# TensorFlow's oneDNN CPU kernels (convolutions, fused batch norm, pooling) are on by default only on
# CPUs with AVX-512 VNNI/BF16 or AMX; on an AVX2 CPU they are off, and turning them on halves a
# training step (measured: benchmarks/profile_train.py, docs/RESULTS.md). The variable is read when
# TensorFlow is first imported, so it is set here, before any reid_tf module imports TensorFlow; a
# value the user set (TF_ENABLE_ONEDNN_OPTS=0) wins. No effect on GPU kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# TensorFlow's own start-up and runtime lines out of the console (REID_TF_VERBOSE=1: shown), also
# set before TensorFlow is imported: reid_tf.cli.
cli.quiet_tensorflow()

__version__ = "0.1.0"
