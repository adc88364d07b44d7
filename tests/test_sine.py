import numpy as np
import pytest

from keras_meta.datasets.sine import SinusoidTasks


def test_support_and_query_share_one_sinusoid():
    tasks = SinusoidTasks(shots=5, queries=10, seed=0)
    inputs, targets = next(iter(tasks.dataset(batch_size=16)))
    assert inputs["support_x"].shape == (16, 5, 1) and targets.shape == (16, 10, 1)
    for t in range(16):
        xs, ys = inputs["support_x"][t, :, 0].numpy(), inputs["support_y"][t, :, 0].numpy()
        xq, yq = inputs["query_x"][t, :, 0].numpy(), targets[t, :, 0].numpy()
        # A sin(x - p) = a sin x + b cos x: fit (a, b) on the support, predict the query.
        coef, *_ = np.linalg.lstsq(np.stack([np.sin(xs), np.cos(xs)], 1), ys, rcond=None)
        np.testing.assert_allclose(np.stack([np.sin(xq), np.cos(xq)], 1) @ coef, yq, atol=1e-4)
        assert 0.1 - 1e-4 <= np.hypot(*coef) <= 5.0 + 1e-4
        phase = np.arctan2(-coef[1], coef[0])
        assert -1e-3 <= phase <= np.pi + 1e-3
        assert np.all(np.abs(np.concatenate([xs, xq])) <= 5.0)


def test_bad_ranges_raise():
    with pytest.raises(ValueError, match="amplitude_range"):
        SinusoidTasks(amplitude_range=(5.0, 0.1))
    with pytest.raises(ValueError, match="shots"):
        SinusoidTasks(shots=0)
