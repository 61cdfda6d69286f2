"""One config per row of the paper's Tables 2–4; `python -m experiments.reproduce --table=N` runs them."""
import reid_tf  # noqa: F401  (sets TensorFlow's CPU options before TensorFlow is imported)
