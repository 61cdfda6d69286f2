"""Dataset preparation commands (`python -m data_tools.prepare_*`) and `make_synthetic`, the command
of the library's built-in generator (reid_tf.datasets.synthetic).

Each command turns an original dataset (VIPeR, CUHK01, cuhk-03.mat; Market-1501, DukeMTMC-reID and
CUHK03-NP through one reader, bounding_boxes.py) into a prepared folder with a `manifest.json`
(format: reid_tf.datasets.base), after checking names, counts and that every image decodes; they
share one ending (common.finish). What each dataset is and which protocol it follows:
reid_tf.datasets, one module per dataset.
"""
import reid_tf  # noqa: E402,F401  (TensorFlow's CPU options and quiet start-up, before it is imported)
