"""Sinusoid regression tasks of the MAML paper (Finn et al. 2017).

Each task is `y = amplitude * sin(x - phase)` with amplitude in [0.1, 5.0],
phase in [0, pi] and inputs in [-5, 5], drawn uniformly. Tasks come in the
same episode format as classification, with float targets `[.., 1]`.

Example:

>>> from keras_meta.datasets.sine import SinusoidTasks
>>> tasks = SinusoidTasks(shots=5, queries=10, seed=0)
>>> inputs, targets = next(iter(tasks.dataset(batch_size=25)))
>>> inputs["support_x"].shape, targets.shape
(TensorShape([25, 5, 1]), TensorShape([25, 10, 1]))
"""

import math

import tensorflow as tf

from keras_meta.data.checks import integer_argument
from keras_meta.data.episode_format import QUERY_X, SUPPORT_X, SUPPORT_Y
from keras_meta.data.tasks import TaskDistribution


def _check_range(name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"`{name}` must be a (low, high) pair, got {value!r}.")
    low, high = (float(v) for v in value)
    if not low <= high:
        raise ValueError(f"`{name}` must be a (low, high) pair with low <= high, got {value!r}.")
    return low, high


class SinusoidTasks(TaskDistribution):
    """Sinusoid regression tasks: `shots` support and `queries` query points each."""

    def __init__(self, shots=5, queries=10, amplitude_range=(0.1, 5.0), phase_range=(0.0, math.pi),
                 input_range=(-5.0, 5.0), seed=None):
        super().__init__(seed)
        self.shots = integer_argument("shots", shots)
        self.queries = integer_argument("queries", queries)
        self.amplitude_range = _check_range("amplitude_range", amplitude_range)
        self.phase_range = _check_range("phase_range", phase_range)
        self.input_range = _check_range("input_range", input_range)

    def sample_task(self, seed):
        seeds = tf.random.experimental.stateless_split(seed, num=3)
        amplitude = tf.random.stateless_uniform([], seeds[0], *self.amplitude_range)
        phase = tf.random.stateless_uniform([], seeds[1], *self.phase_range)
        x = tf.random.stateless_uniform([self.shots + self.queries, 1], seeds[2], *self.input_range)
        y = amplitude * tf.sin(x - phase)
        inputs = {SUPPORT_X: x[: self.shots], SUPPORT_Y: y[: self.shots], QUERY_X: x[self.shots:]}
        return inputs, y[self.shots:]
