"""Labels are checked where tasks are drawn: a custom `TaskDistribution` with bad labels gets a clear error."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta
from keras_meta.data import TaskDistribution, checks


class FixedTasks(TaskDistribution):
    """Every task: 4 support examples with `support_y`, 2 queries labelled `query_y`."""

    def __init__(self, support_y, query_y):
        super().__init__(seed=0)
        self.support_y, self.query_y = support_y, query_y

    def sample_task(self, seed):
        x = tf.random.stateless_normal([6, 3], seed)
        inputs = {"support_x": x[:4], "support_y": tf.constant(self.support_y), "query_x": x[4:]}
        return inputs, tf.constant(self.query_y)


@pytest.mark.parametrize("support_y, query_y, shown", [
    ([0, 1, 1, 3], [0, 1], "support labels are [0 1 1 3] and its query labels [0 1]"),   # class 2 missing
    ([0, 1, -2, 1], [0, 1], "support labels are [-2 0 1 1]"),                             # below the padding -1
    ([-1, -1, -1, -1], [0, 0], "support labels are [-1 -1 -1 -1]"),                       # nothing labelled
    ([0, 1, 2, 0], [0, 3], "query labels [0 3]"),                                         # a query class not in support
    ([0, 1, 2, 0], [-1, 0], "query labels [-1 0]"),
])
def test_tasks_with_invalid_labels_are_refused_when_drawn(support_y, query_y, shown):
    dataset = FixedTasks(support_y, query_y).dataset(batch_size=2, num_episodes=2)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        next(iter(dataset))
    message = checks.error_message(raised.value)
    assert message is not None and shown in message and "0..N-1" in message


def test_valid_and_padded_tasks_pass_unchanged():
    dataset = FixedTasks([0, 2, -1, 1], [2, 0]).dataset(batch_size=2, num_episodes=2)
    inputs, query_y = next(iter(dataset))
    np.testing.assert_array_equal(query_y, [[2, 0], [2, 0]])
    np.testing.assert_array_equal(inputs["support_y"], [[0, 2, -1, 1]] * 2)


def test_fit_on_a_stream_of_invalid_tasks_raises_the_message():
    learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.mlp((3,), (4,)))
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    weights = [w.copy() for w in learner.get_weights()]
    stream = FixedTasks([0, 1, 1, 0], [0, 2]).dataset(batch_size=2)
    with pytest.raises(ValueError, match=r"The task's support labels are \[0 0 1 1\] and its query labels \[0 2\]"):
        learner.fit(stream, steps_per_epoch=2, epochs=1, verbose=0)
    for before, after in zip(weights, learner.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_regression_tasks_are_not_label_checked():
    tasks = keras_meta.datasets.sine.SinusoidTasks(shots=3, queries=2, seed=0)
    inputs, y = next(iter(tasks.dataset(batch_size=2, num_episodes=2)))
    assert inputs["support_y"].dtype == tf.float32 and y.shape == (2, 2, 1)


def test_labels_of_a_shared_label_space():
    """Item-id labels (not every class present, not 0..N-1) train with `episode_labels=False`, and only then."""
    rng = np.random.default_rng(0)
    inputs = {"support_x": rng.normal(size=(2, 4, 3)).astype("float32"), "support_y": np.array([[1, 3, 3, 1]] * 2),
              "query_x": rng.normal(size=(2, 2, 3)).astype("float32")}
    query_y = np.array([[3, 1]] * 2)

    def learner(**kwargs):
        maml = keras_meta.learners.MAML(keras_meta.models.mlp((3,), (4,), num_outputs=4), **kwargs)
        maml.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return maml

    with pytest.raises(ValueError, match=r"`support_y` of task 0 holds the labels \[1 3\]"):
        learner().fit(inputs, query_y, batch_size=2, verbose=0)
    shared = learner(episode_labels=False)
    before = [w.copy() for w in shared.get_weights()]
    shared.fit(inputs, query_y, batch_size=2, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, shared.get_weights(), strict=True))
    reloaded = keras_meta.learners.MAML.from_config(shared.get_config())
    assert reloaded.episode_labels is False
    outside = dict(inputs, support_y=np.array([[1, 4, 3, 1]] * 2))
    with pytest.raises(ValueError, match=r"hold 1 \(lowest\) and 4 \(highest\), but the model has 4 outputs"):
        shared.fit(outside, query_y, batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="`episode_labels` must be True or False"):
        learner(episode_labels="no")
