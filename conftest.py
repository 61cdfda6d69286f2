"""pytest set-up: reid_tf before TensorFlow (its CPU options and quiet start-up: reid_tf.cli), and
the `slow` marker for tests kept out of the default run. Warnings are errors: pytest.ini."""
import reid_tf  # noqa: F401  (before any test imports TensorFlow)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests, run by `make test-slow`, not `make test`")
