"""Functional use of Keras models (clone/update/detach), MagicBox, learnable optimizer, ranking metrics."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta import metrics, ops
from keras_meta.learners import LearnableOptimizer

BATCH_NORM_CALL = keras.layers.BatchNormalization.call


def dense_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def test_functional_call_uses_the_given_weights_and_leaves_the_variables_alone():
    model = dense_model()
    kernel, bias = model.get_weights()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    new = [tf.constant(2 * kernel), tf.constant(bias + 1)]
    np.testing.assert_allclose(ops.functional_call(model, new, x).numpy(), x @ (2 * kernel) + bias + 1, rtol=1e-5)
    np.testing.assert_array_equal(model.get_weights()[0], kernel)
    with pytest.raises(ValueError, match="one tensor per variable"):
        ops.functional_call(model, new[:1], x)


def test_clone_update_detach_keep_or_cut_the_gradient():
    model = dense_model()
    x = tf.ones([1, 3])
    with tf.GradientTape(persistent=True) as tape:
        weights = ops.clone_weights(model)
        updated = ops.update_weights(weights, [tf.ones_like(weights[0]), None])
        through = tf.reduce_sum(ops.functional_call(model, updated, x))
        cut = tf.reduce_sum(ops.functional_call(model, ops.detach_weights(updated), x))
    grads = tape.gradient(through, model.trainable_variables)
    np.testing.assert_allclose(grads[0].numpy(), np.ones((3, 2)))  # d/dW sum(x W + b) = x^T 1
    np.testing.assert_allclose(grads[1].numpy(), np.ones(2))
    assert all(g is None for g in tape.gradient(cut, model.trainable_variables))
    np.testing.assert_allclose(updated[0].numpy(), model.get_weights()[0] + 1)
    with pytest.raises(ValueError, match="one update per weight"):
        ops.update_weights(weights, [None])


def test_clone_model_is_independent_and_takes_new_weights():
    model = dense_model()
    kernel, bias = model.get_weights()
    copy = ops.clone_model(model, [np.zeros_like(kernel), np.ones_like(bias)])
    np.testing.assert_array_equal(copy.get_weights()[1], np.ones(2))
    np.testing.assert_array_equal(model.get_weights()[0], kernel)
    copy.layers[0].kernel.assign(np.full_like(kernel, 3.0))
    np.testing.assert_array_equal(model.get_weights()[0], kernel)


def test_magic_box_is_one_with_the_gradient_of_its_argument():
    x = tf.constant([0.5, -1.0])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        box = ops.magic_box(tf.reduce_sum(x**2))
        first = tape.gradient(box, x)
    np.testing.assert_allclose(box.numpy(), 1.0)
    np.testing.assert_allclose(first.numpy(), 2 * x.numpy())
    # Second order (DiCE): d/dx (box * 2x) = 2 + (2x)^2 on the diagonal.
    second = tape.jacobian(first, x)
    np.testing.assert_allclose(np.diag(second.numpy()), 2 + (2 * x.numpy()) ** 2, rtol=1e-6)


@pytest.mark.parametrize("shape", [(6, 5, 5, 3), (6, 3), (6, 4, 3)])
def test_fused_batch_norm_gives_keras_outputs_and_moving_statistics(shape):
    """Images, vectors and sequences: the fused op's outputs and new moving statistics are Keras' own."""
    keras.utils.set_random_seed(0)
    layer = keras.layers.BatchNormalization(momentum=0.5)
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=shape), tf.float32)
    layer.build(x.shape)
    layer.gamma.assign(np.linspace(0.5, 1.5, 3))
    layer.beta.assign(np.linspace(-1.0, 1.0, 3))
    trainable = [tf.convert_to_tensor(v) for v in layer.trainable_variables]
    state = [tf.convert_to_tensor(v) for v in layer.non_trainable_variables]
    expected, expected_state = layer.stateless_call(trainable, state, x, training=True)

    @tf.function
    def fused():
        with ops.fused_batch_norm():
            return layer.stateless_call(trainable, state, x, training=True)

    assert "FusedBatchNormV3" in {op.type for op in fused.get_concrete_function().graph.get_operations()}
    outputs, new_state = fused()
    np.testing.assert_allclose(outputs.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
    for got, want in zip(new_state, expected_state, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4)
    assert keras.layers.BatchNormalization.call is BATCH_NORM_CALL  # restored on exit


def test_fused_batch_norm_leaves_what_the_op_cannot_do_to_keras():
    """Inference, float64 and masks run Keras' layer (with exact moments); nested contexts restore the layer."""
    layer = keras.layers.BatchNormalization()
    x = tf.constant(np.random.default_rng(1).normal(size=(4, 3)))
    layer.build(x.shape)

    def op_types(fn):
        return {op.type for op in tf.function(fn).get_concrete_function().graph.get_operations()}

    with ops.fused_batch_norm():
        with ops.fused_batch_norm():
            assert "FusedBatchNormV3" in op_types(lambda: layer(tf.cast(x, tf.float32), training=True))
            assert "FusedBatchNormV3" not in op_types(lambda: layer(tf.cast(x, tf.float32), training=False))
        assert keras.layers.BatchNormalization.call is not BATCH_NORM_CALL  # the outer context still holds
        keras.config.set_dtype_policy("float64")
        try:
            layer64 = keras.layers.BatchNormalization()
        finally:
            keras.config.set_dtype_policy("float32")
        assert "FusedBatchNormV3" not in op_types(lambda: layer64(x, training=True))
        mask = tf.constant([[True, True, False, True]])
        sequence = tf.cast(x, tf.float32)[None]
        masked = keras.layers.BatchNormalization()
        masked.build(sequence.shape)
        assert "FusedBatchNormV3" not in op_types(lambda: masked(sequence, training=True, mask=mask))
    assert keras.layers.BatchNormalization.call is BATCH_NORM_CALL


def test_batch_norm_contexts_change_only_the_threads_inside_them():
    """While one thread is inside `fused_batch_norm()`, another thread's BatchNormalization stays Keras' own."""
    layer = keras.layers.BatchNormalization()
    x = tf.constant(np.random.default_rng(2).normal(size=(4, 3)), tf.float32)
    layer.build(x.shape)

    def op_types():
        return {op.type for op in tf.function(lambda: layer(x, training=True)).get_concrete_function().graph
                .get_operations()}

    inside, outside = threading.Event(), threading.Event()
    seen = {}

    def hold_the_context():
        with ops.fused_batch_norm():
            seen["inside"] = op_types()
            inside.set()
            outside.wait(timeout=60)

    holder = threading.Thread(target=hold_the_context)
    holder.start()
    try:
        assert inside.wait(timeout=60)
        assert keras.layers.BatchNormalization.call is not BATCH_NORM_CALL  # patched for the process ...
        seen["outside"] = op_types()  # ... but this thread is not inside
    finally:
        outside.set()
        holder.join()
    assert "FusedBatchNormV3" in seen["inside"]
    assert "FusedBatchNormV3" not in seen["outside"]
    assert seen["outside"] == op_types()  # exactly Keras' graph, as with no context anywhere
    assert keras.layers.BatchNormalization.call is BATCH_NORM_CALL


@pytest.mark.parametrize("granularity, rate_shapes", [("parameter", [(3, 2), (2,)]), ("tensor", [(), ()]),
                                                      ("scalar", [(), ()])])
def test_learnable_optimizer_granularities(granularity, rate_shapes):
    optimizer = LearnableOptimizer(0.5, granularity=granularity)
    optimizer.build_for([(3, 2), (2,)])
    assert [tuple(r.shape) for r in optimizer.learning_rates] == rate_shapes
    assert len(optimizer.trainable_variables) == (1 if granularity == "scalar" else 2)
    grads = [tf.ones([3, 2]), tf.fill([2], 2.0)]
    with tf.GradientTape() as tape:
        updates = optimizer(grads)
        total = tf.add_n([tf.reduce_sum(u) for u in updates])
    np.testing.assert_allclose(updates[1].numpy(), [-1.0, -1.0])
    assert all(g is not None for g in tape.gradient(total, optimizer.trainable_variables))


def test_learnable_optimizer_per_step_rates():
    """`steps=2`: step 0 and step 1 use their own rates; later steps use the last ones."""
    optimizer = LearnableOptimizer(0.5, granularity="tensor", steps=2)
    optimizer.build_for([(3,)])
    assert [tuple(r.shape) for r in optimizer.learning_rates] == [(2,)]
    optimizer.learning_rates[0].assign([0.5, 0.25])
    grads = [tf.ones([3])]
    assert [float(optimizer(grads, step=step)[0][0]) for step in (0, 1, 5)] == [-0.5, -0.25, -0.25]
    restored = LearnableOptimizer.from_config(optimizer.get_config())
    assert restored.steps == 2


def test_ranking_metrics_against_numpy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 7, 10)).astype("float32")
    targets = rng.integers(0, 10, size=(2, 7))
    ranks = 1 + (scores > np.take_along_axis(scores, targets[..., None], -1)).sum(-1)
    for metric, expected in [(metrics.MeanReciprocalRank(), (1 / ranks).mean()),
                             (metrics.recall_at_k(5), (ranks <= 5).mean()),
                             (metrics.accuracy_at_1(), (ranks == 1).mean())]:
        metric.update_state(targets, scores)
        np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-6)
    assert metrics.recall_at_k(5).name == "recall@5"


def test_recompute_gradient_reruns_the_function_and_keeps_its_exact_second_order_gradient():
    """One gradient step on w**3 with a variable rate: d/dw and d/drate in closed form; the step runs twice."""
    rate, calls = tf.Variable(0.1, dtype=tf.float64), []

    def step(w):
        calls.append(1)
        with tf.GradientTape() as tape:
            tape.watch(w)
            loss = tf.reduce_sum(w ** 3)
        return w - rate * tape.gradient(loss, w)  # w - 3 rate w**2

    w = tf.constant([2.0, -1.0], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(w)
        adapted = ops.recompute_gradient(step)(w)
        total = tf.reduce_sum(adapted)
    assert len(calls) == 1
    grad_w, grad_rate = tape.gradient(total, [w, rate])
    assert len(calls) == 2  # recomputed while back-propagating
    np.testing.assert_allclose(adapted, [2.0 - 1.2, -1.0 - 0.3])
    np.testing.assert_allclose(grad_w, 1 - 6 * 0.1 * w.numpy())
    np.testing.assert_allclose(grad_rate, -3 * np.sum(w.numpy() ** 2))
