"""Ridge regression, matching attention and episode hardness against NumPy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta import ops


def numpy_ridge(x, targets, reg):
    """The normal equations `(x^T x + reg I) W = x^T y`, solved directly."""
    return np.linalg.solve(x.T @ x + reg * np.eye(x.shape[1]), x.T @ targets)


@pytest.mark.parametrize("examples, features", [(12, 5), (4, 9)], ids=["more_examples", "fewer_examples"])
def test_ridge_regression_matches_the_normal_equations(examples, features):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, features))
    targets = rng.normal(size=(examples, 3))
    got = ops.ridge_regression(x, targets, reg=0.7).numpy()
    np.testing.assert_allclose(got, numpy_ridge(x, targets, 0.7), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("examples, features", [(12, 5), (4, 9)], ids=["more_examples", "fewer_examples"])
def test_ridge_regression_on_class_labels_uses_one_hot_targets_and_skips_padding(examples, features):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, examples, features))
    labels = rng.integers(0, 3, size=(2, examples))
    labels[1, -1] = -1  # padding: as if the example were absent
    got = ops.ridge_regression(x, labels, reg=0.3, num_classes=3).numpy()
    for task in range(2):
        keep = labels[task] >= 0
        expected = numpy_ridge(x[task][keep], np.eye(3)[labels[task][keep]], 0.3)
        np.testing.assert_allclose(got[task], expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("examples, features", [(7, 3), (3, 7)], ids=["more_examples", "fewer_examples"])
def test_ridge_regression_gradient_matches_finite_differences(examples, features):
    rng = np.random.default_rng(2)
    x0, targets = rng.normal(size=(examples, features)), rng.normal(size=(examples, 2))
    probe = rng.normal(size=(features, 2))

    def objective(x, reg):
        return tf.reduce_sum(ops.ridge_regression(x, targets, reg) * probe)

    x, reg = tf.Variable(x0), tf.Variable(0.5, dtype=tf.float64)
    with tf.GradientTape() as tape:
        value = objective(x, reg)
    grad_x, grad_reg = tape.gradient(value, [x, reg])
    eps = 1e-6
    numeric = np.zeros_like(x0)
    for index in np.ndindex(x0.shape):
        step = np.zeros_like(x0)
        step[index] = eps
        numeric[index] = (objective(x0 + step, 0.5) - objective(x0 - step, 0.5)).numpy() / (2 * eps)
    numeric_reg = (objective(x0, 0.5 + eps) - objective(x0, 0.5 - eps)).numpy() / (2 * eps)
    np.testing.assert_allclose(grad_x.numpy(), numeric, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_reg.numpy(), numeric_reg, rtol=1e-5)


def test_ridge_regression_errors_name_the_fix():
    with pytest.raises(ValueError, match="num_classes"):
        ops.ridge_regression(np.ones((3, 2)), np.array([0, 1, 1]), reg=1.0)
    with pytest.raises(ValueError, match="examples, features"):
        ops.ridge_regression(np.ones(3), np.ones(3), reg=1.0)


def numpy_matching(query, support, labels, num_classes, scale):
    """Attention `softmax(scale * cos)` over the support set, summed per class."""
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    scores = scale * unit(query) @ unit(support).T
    keep = labels >= 0
    attention = np.exp(scores[:, keep]) / np.exp(scores[:, keep]).sum(1, keepdims=True)
    return np.log(attention @ np.eye(num_classes)[labels[keep]])


def test_matching_log_probas_and_loss_match_numpy():
    rng = np.random.default_rng(3)
    query, support = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    labels = np.array([0, 1, 2, 0, 1, 2, -1])
    got = ops.matching_log_probas(query, support, labels, num_classes=3, scale=2.0).numpy()
    expected = numpy_matching(query, support, labels, 3, 2.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(np.exp(got).sum(1), 1.0, rtol=1e-6)
    query_labels = np.array([2, 0, 1, 1, -1])
    loss = ops.matching_loss(query, support, labels, query_labels, num_classes=3, scale=2.0).numpy()
    np.testing.assert_allclose(loss, -np.mean(expected[np.arange(4), query_labels[:4]]), rtol=1e-6)


def test_matching_log_probas_mark_classes_without_support():
    log_p = ops.matching_log_probas(np.ones((1, 2)), np.ones((2, 2)), np.array([0, 0]), num_classes=2).numpy()
    assert log_p[0, 0] == pytest.approx(0.0, abs=1e-6) and log_p[0, 1] <= -1e8


def test_hardness_metric_matches_the_formula():
    rng = np.random.default_rng(4)
    support_x, query_x = rng.normal(size=(1, 6, 3)).astype("float32"), rng.normal(size=(1, 4, 3)).astype("float32")
    support_y, query_y = np.array([[0, 1, 2, 0, 1, 2]]), np.array([[0, 1, 2, 1]])
    episode = ({"support_x": support_x, "support_y": support_y, "query_x": query_x}, query_y)
    got = ops.hardness_metric(episode, embedding_fn=lambda x: 2.0 * x).numpy()
    means = np.stack([support_x[0][support_y[0] == c].mean(0) for c in range(3)])
    cos = (query_x[0] / np.linalg.norm(query_x[0], axis=1, keepdims=True)) @ (
        means / np.linalg.norm(means, axis=1, keepdims=True)).T
    p = np.exp(cos) / np.exp(cos).sum(1, keepdims=True)
    p_true = p[np.arange(4), query_y[0]]
    np.testing.assert_allclose(got, [np.mean(np.log((1 - p_true) / p_true))], rtol=1e-5)


def test_hardness_metric_uses_a_learners_backbone_and_ranks_episodes():
    import keras_meta

    backbone = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    backbone.set_weights([np.eye(2, dtype="float32")])
    learner = keras_meta.learners.PrototypicalNetwork(backbone)
    support = np.array([[[1.0, 0.0], [0.0, 1.0]]] * 2, "float32")
    query = np.array([[[1.0, 0.05]], [[1.0, 0.9]]], "float32")  # the second query is nearly ambiguous
    episode = ({"support_x": support, "support_y": np.array([[0, 1]] * 2), "query_x": query}, np.array([[0], [0]]))
    easy, hard = ops.hardness_metric(episode, learner).numpy()
    assert hard > easy
    with pytest.raises(ValueError, match="query_labels"):
        ops.hardness_metric(episode[0], learner)
    with pytest.raises(ValueError, match="embedding_fn"):
        ops.hardness_metric(episode, embedding_fn=3)
