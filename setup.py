"""reid_tf: Guo & Cheung, CVPR 2018 (multi-level similarity person ReID) in TensorFlow 2 / Keras 3."""
from setuptools import find_packages, setup

setup(
    name="reid_tf",
    version="0.1.0",
    description="Efficient and Deep Person Re-Identification using Multi-Level Similarity "
    "(Guo & Cheung, CVPR 2018) in TensorFlow 2 / Keras 3",
    python_requires=">=3.10",
    packages=find_packages(include=["reid_tf", "reid_tf.*", "data_tools", "data_tools.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",
        "pillow>=10,<13",
        "absl-py>=2.0,<3",
        "h5py>=3.10,<4",
        "tensorboard>=2.20,<3",  # `make tensorboard`; TF 2.21 no longer pulls it in
        "threadpoolctl>=3.5,<4",  # single-threaded BLAS per scoring worker; 3.5 knows NumPy's scipy-openblas
    ],
    extras_require={"test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4"]},  # make test runs 2 workers
)
