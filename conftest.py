"""pytest set-up: quiet TensorFlow, and the `slow` marker for tests kept out of the default run."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import reid_tf  # noqa: E402,F401  (TensorFlow's CPU options, before any test imports TensorFlow)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests, run by `make test-slow`, not `make test`")
