"""Benchmarks (`make bench`, `make bench-data`, `make profile-train`)."""
import reid_tf  # noqa: F401  (sets TensorFlow's CPU options before TensorFlow is imported)
