"""Property-based tests: any sampler arguments and any episode either work as documented or raise `ValueError`.

Never a TensorFlow internal error, never a hang: Hypothesis draws the
arguments (in range and out of it) and checks the documented invariants of
what is accepted.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_meta
from keras_meta import learners
from keras_meta.data import EpisodeSampler

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

sizes = st.one_of(st.integers(-2, 6), st.tuples(st.integers(-1, 5), st.integers(-1, 5)), st.just(2.5),
                  st.none(), st.just("3"))


def labelled_examples(num_classes, per_class):
    """Examples whose value is their own index, so the support and query sets' overlap can be read off."""
    y = np.repeat(np.arange(num_classes) * 7 + 3, per_class)  # labels neither 0-based nor contiguous
    x = np.arange(y.size, dtype="float32")[:, None]
    return x, y


@SETTINGS
@given(num_classes=st.integers(1, 6), per_class=st.integers(1, 6), ways=sizes, shots=sizes,
       queries=st.one_of(st.integers(-1, 4), st.just(1.0)), seed=st.integers(0, 2**31 - 1))
def test_sampler_arguments_work_or_are_refused(num_classes, per_class, ways, shots, queries, seed):
    x, y = labelled_examples(num_classes, per_class)
    try:
        sampler = EpisodeSampler(x, y, ways=ways, shots=shots, queries=queries, seed=seed)
    except ValueError as error:
        assert str(error)  # a message, naming what was wrong
        return
    # Accepted: the arguments are sizes a task can be drawn with.
    low_ways, high_ways = sampler.min_ways, sampler.max_ways
    low_shots, high_shots = sampler.min_shots, sampler.max_shots
    assert 1 <= low_ways <= high_ways <= num_classes
    assert 1 <= low_shots <= high_shots and high_shots + sampler.queries <= per_class
    batch = next(iter(sampler.dataset(batch_size=2)))
    inputs, query_y = batch[0], batch[1]
    support_y = inputs["support_y"].numpy()
    assert inputs["support_x"].shape == (2, high_ways * high_shots, 1)
    assert inputs["query_x"].shape == (2, high_ways * sampler.queries, 1)
    assert query_y.shape == (2, high_ways * sampler.queries)
    for task in range(2):
        labelled = support_y[task][support_y[task] >= 0]
        ways = labelled.max() + 1
        assert low_ways <= ways <= high_ways
        assert set(labelled.tolist()) == set(range(ways))  # labels 0..N-1, every class present
        per_class_shots = np.bincount(labelled, minlength=ways)
        assert per_class_shots.min() >= low_shots and per_class_shots.max() <= high_shots
        support_ids = set(inputs["support_x"][task, :, 0].numpy()[support_y[task] >= 0].astype(int).tolist())
        weights = batch[2][task].numpy() if len(batch) == 3 else np.ones(query_y.shape[1])
        query_ids = set(inputs["query_x"][task, :, 0].numpy()[weights > 0].astype(int).tolist())
        assert not support_ids & query_ids  # support and query never share an example
        assert np.all(query_y[task].numpy()[weights > 0] < ways)
        # One class of the data per label: every example of label j comes from the same class.
        for label in range(ways):
            classes = set(y[inputs["support_x"][task, :, 0].numpy()[support_y[task] == label].astype(int)].tolist())
            assert len(classes) == 1


def episode(support_y, query_rows, features=3):
    support_y = np.asarray(support_y, "int32")
    rng = np.random.default_rng(0)
    return {"support_x": rng.normal(size=(*support_y.shape, features)).astype("float32"), "support_y": support_y,
            "query_x": rng.normal(size=(support_y.shape[0], query_rows, features)).astype("float32")}


def is_valid(support_y, ways=None):
    """The documented episode contract: per task labels 0..N-1 with every class present, -1 for padding."""
    for task in support_y:
        labelled = task[task >= 0]
        if task.min() < -1 or labelled.size == 0 or set(labelled.tolist()) != set(range(labelled.max() + 1)):
            return False
    if ways is not None:
        most = max(task.max() + 1 for task in support_y)
        padded = support_y.min() < 0
        return most == ways or (padded and most <= ways)
    return True


LEARNERS = {
    "PrototypicalNetwork": lambda: learners.PrototypicalNetwork(keras_meta.models.mlp((3,), (4,))),
    "MatchingNetwork": lambda: learners.MatchingNetwork(keras_meta.models.mlp((3,), (4,))),
    "R2D2": lambda: learners.R2D2(keras_meta.models.mlp((3,), (4,))),
    "MAML": lambda: learners.MAML(keras_meta.models.mlp((3,), (4,), num_outputs=3), inner_steps=1),
}
label_rows = st.integers(1, 2).flatmap(
    lambda tasks: st.integers(1, 5).flatmap(
        lambda size: st.lists(st.lists(st.integers(-3, 5), min_size=size, max_size=size),
                              min_size=tasks, max_size=tasks)))


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_learners_take_valid_episodes_and_refuse_the_rest(name):
    learner = LEARNERS[name]()
    learner.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ways = 3 if name == "MAML" else None

    @SETTINGS
    @given(support_y=label_rows, query_rows=st.integers(1, 4))
    def check(support_y, query_rows):
        inputs = episode(support_y, query_rows)
        valid = is_valid(inputs["support_y"], ways)
        for run in (learner, learner.predict_on_batch):  # eagerly, then in the traced graph
            try:
                logits = np.asarray(run(inputs))
            except ValueError as error:
                assert not valid, f"a valid episode was refused: {error}"
                assert "support_y" in str(error) or "outputs" in str(error)
                continue
            assert valid, f"support labels {inputs['support_y'].tolist()} were accepted"
            classes = ways or max(int(task.max()) + 1 for task in inputs["support_y"])
            assert logits.shape == (len(support_y), query_rows, classes)

    check()


@SETTINGS
@given(query_y=st.lists(st.integers(-2, 5), min_size=3, max_size=3))
def test_query_labels_outside_the_episode_are_refused_in_training(query_y):
    learner = learners.PrototypicalNetwork(keras_meta.models.mlp((3,), (4,)))
    learner.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs = episode([[0, 1, 2]], 3)
    before = [w.copy() for w in learner.get_weights()]
    query_y = np.asarray([query_y], "int32")
    try:
        loss = learner.train_on_batch(inputs, query_y)
    except ValueError as error:
        assert query_y.min() < 0 or query_y.max() > 2
        assert "query labels" in str(error) and "3 ways" in str(error)
        for old, new in zip(before, learner.get_weights(), strict=True):
            np.testing.assert_array_equal(old, new)
        return
    assert 0 <= query_y.min() and query_y.max() <= 2 and np.isfinite(loss)


@SETTINGS
@given(features=st.integers(1, 5), query_features=st.integers(1, 5), tasks=st.integers(1, 2),
       query_tasks=st.integers(1, 2))
def test_episode_shapes_work_or_are_refused(features, query_features, tasks, query_tasks):
    learner = learners.PrototypicalNetwork(keras_meta.models.mlp((3,), (4,)))
    inputs = {"support_x": np.zeros((tasks, 2, features), "float32"), "support_y": np.array([[0, 1]] * tasks),
              "query_x": np.zeros((query_tasks, 2, query_features), "float32")}
    try:
        logits = learner(inputs)
    except (ValueError, tf.errors.InvalidArgumentError) as error:
        assert not isinstance(error, tf.errors.InvalidArgumentError), f"TF's own error: {error}"
        assert (features, query_features) != (3, 3) or tasks != query_tasks
        return
    assert (features, query_features, tasks) == (3, 3, query_tasks)
    assert logits.shape == (tasks, 2, 2)
