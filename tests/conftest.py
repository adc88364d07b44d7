import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads
# benchmark scripts run by the tests record their JSON lines here, never in benchmarks/results/
os.environ["KERAS_META_RESULTS_DIR"] = tempfile.mkdtemp(prefix="keras-meta-results-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_meta  # noqa: E402,F401


@pytest.fixture
def labelled_ids():
    """12 classes x 10 examples; each example's pixels hold its own index, so
    episodes can be traced back to the examples they drew."""
    num_classes, per_class = 12, 10
    ids = np.arange(num_classes * per_class)
    x = np.broadcast_to(ids[:, None, None, None], (len(ids), 4, 4, 1)).astype("float32").copy()
    y = np.repeat(np.arange(num_classes), per_class)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ids))
    return x[order], y[order]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """`--dist loadgroup` keeps each `xdist_group` on one worker; refuse to run when it would not.

    pytest-xdist marks a group by appending `@group` to the test ids; pytest 9 ignores that, so each
    worker would run the module's shared subprocess runs again (minutes each).
    """
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            raise pytest.UsageError(
                f"pytest-xdist could not group {item.nodeid} with --dist loadgroup under pytest {pytest.__version__}; "
                "install the test extra's pytest (`pip install -e '.[test]'`).")
