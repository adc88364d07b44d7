"""Meta-gradients checked against independent computations: finite differences and closed forms."""

import contextlib
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta.learners import ANIL, MAML, MetaSGD, Reptile, iMAML, inner_loop
from keras_meta.ops import batch_norm as batch_norm_ops


def cross_entropy(labels, logits):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")(labels, logits)


@pytest.fixture
def float64():
    """Float64 layers: the dtype policy is fixed once created, so set it along with floatx, then restore both."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    keras.utils.set_random_seed(1)
    yield
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(policy)


def tiny_classifier(batch_norm=False, gru=False):
    if gru:
        layers = [keras.Input((3, 2)), keras.layers.GRU(3), keras.layers.Dense(2)]
    else:
        layers = [keras.Input((3,)), keras.layers.Dense(4)]
        if batch_norm:
            layers.append(keras.layers.BatchNormalization())
        layers += [keras.layers.Activation("tanh"), keras.layers.Dense(2)]
    return keras.Sequential(layers)


def episode(gru=False):
    rng = np.random.default_rng(0)
    shape = (3, 2) if gru else (3,)
    inputs = {
        "support_x": rng.normal(size=(2, 4, *shape)),
        "support_y": np.array([[0, 1, 0, 1], [1, 0, 1, 0]], np.int32),
        "query_x": rng.normal(size=(2, 3, *shape)),
    }
    return inputs, np.array([[0, 1, 1], [1, 0, 0]], np.int32)


def meta_gradient(learner, inputs, labels):
    with tf.GradientTape() as tape:
        loss = cross_entropy(labels, learner(inputs, training=True))
    return tape.gradient(loss, learner.trainable_variables)


def finite_difference(learner, inputs, labels, variable, eps=1e-6):
    """Central differences of the post-adaptation query loss with respect to one variable."""
    query_loss = tf.function(lambda: cross_entropy(labels, learner(inputs, training=False)))  # reads the variables anew
    base = np.array(variable.numpy())  # scalar rates too
    grad = np.zeros_like(base)
    for index in np.ndindex(base.shape):
        for sign in (1, -1):
            shifted = base.copy()
            shifted[index] += sign * eps
            variable.assign(shifted)
            grad[index] += sign * float(query_loss()) / (2 * eps)
    variable.assign(base)
    return grad


def per_step_finite_differences(learner, inputs, labels, variable, steps):
    """`finite_difference` of the query loss after each number of inner steps in `steps`."""
    per_step = []
    for count in steps:
        learner.eval_inner_steps = count
        per_step.append(finite_difference(learner, inputs, labels, variable))
    return per_step


def relative_error(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("kind", ["dense", "batch_norm", "gru"])
def test_second_order_maml_matches_finite_differences(float64, kind):
    model = tiny_classifier(batch_norm=kind == "batch_norm", gru=kind == "gru")
    learner = MAML(model, inner_learning_rate=0.5, inner_steps=2)
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, labels = episode(gru=kind == "gru")
    grads = meta_gradient(learner, inputs, labels)
    checked, expected_grads = 0, []
    for variable, grad in zip(learner.trainable_variables, grads, strict=True):
        expected = finite_difference(learner, inputs, labels, variable)
        expected_grads.append(expected)
        if np.abs(expected).max() > 1e-6:  # a bias right before batch normalisation has none
            assert relative_error(grad.numpy(), expected) < 1e-3, variable.path
            checked += 1
    assert checked >= len(grads) - 1
    # fit's train_step (one task at a time, gradients averaged) applies the same meta-gradient.
    learner.compile(optimizer=keras.optimizers.SGD(1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy() for v in learner.trainable_variables]
    learner.train_on_batch(inputs, labels)
    for old, variable, expected in zip(before, learner.trainable_variables, expected_grads, strict=True):
        if np.abs(expected).max() > 1e-6:
            assert relative_error(old - variable.numpy(), expected) < 1e-3, variable.path


def test_multi_step_loss_matches_finite_differences_of_the_mean_step_loss(float64):
    """The meta-gradient of `multi_step_loss=True` is that of the mean of the query losses after 1..K steps."""
    learner = MAML(tiny_classifier(batch_norm=True), inner_learning_rate=0.5, inner_steps=3, multi_step_loss=True)
    learner.compile(optimizer=keras.optimizers.SGD(1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, labels = episode()
    per_variable = [per_step_finite_differences(learner, inputs, labels, v, (1, 2, 3))
                    for v in learner.trainable_variables]
    expected_grads = [np.mean(per_step, axis=0) for per_step in per_variable]
    last_variable_after_3_steps = per_variable[-1][-1]
    before = [v.numpy() for v in learner.trainable_variables]
    learner.train_on_batch(inputs, labels)
    checked = 0
    for old, variable, expected in zip(before, learner.trainable_variables, expected_grads, strict=True):
        if np.abs(expected).max() > 1e-6:
            assert relative_error(old - variable.numpy(), expected) < 1e-3, variable.path
            checked += 1
    assert checked >= len(before) - 1
    assert relative_error(expected_grads[-1], last_variable_after_3_steps) > 1e-3  # the steps' losses differ


def test_keras_batch_norm_alone_would_get_the_second_order_terms_wrong(float64, monkeypatch):
    """Why the learners trace under fused_batch_norm (exact moments in float64): without it the meta-gradient is off."""
    learner = MAML(tiny_classifier(batch_norm=True), inner_learning_rate=0.5, inner_steps=2)
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, labels = episode()
    exact = meta_gradient(learner, inputs, labels)[0].numpy()
    with monkeypatch.context() as patch:
        patch.setattr(batch_norm_ops, "fused_batch_norm", contextlib.nullcontext)
        plain = meta_gradient(learner, inputs, labels)[0].numpy()
    assert relative_error(plain, exact) > 1e-4


def conv_batch_norm_classifier():
    """Conv -> BN -> ReLU -> Dense -> BN (2-D input) -> Dense: both shapes the fused op handles."""
    return keras.Sequential([
        keras.Input((5, 5, 2)), keras.layers.Conv2D(3, 3, padding="same"), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.Flatten(), keras.layers.Dense(4), keras.layers.BatchNormalization(),
        keras.layers.Activation("tanh"), keras.layers.Dense(2),
    ])


def op_types(concrete_function):
    graph = concrete_function.graph.as_graph_def()
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    return {node.op for node in nodes}


def test_fused_batch_norm_meta_gradient_matches_finite_differences():
    """Float32 runs BatchNormalization as TensorFlow's fused op; its second-order meta-gradient is still exact.

    The finite differences come from a float64 copy of the model (forward passes only).
    """
    keras.utils.set_random_seed(3)
    model = conv_batch_norm_classifier()
    learner = MAML(model, inner_learning_rate=0.5, inner_steps=2)
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    inputs = {"support_x": rng.normal(size=(2, 4, 5, 5, 2)).astype("float32"),
              "support_y": np.array([[0, 1, 0, 1], [1, 0, 1, 0]], np.int32),
              "query_x": rng.normal(size=(2, 6, 5, 5, 2)).astype("float32")}
    labels = np.array([[0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1]], np.int32)
    traced = tf.function(functools.partial(meta_gradient, learner, inputs, labels)).get_concrete_function()
    assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= op_types(traced)
    grads = [g.numpy() for g in traced()]

    keras.config.set_dtype_policy("float64")
    try:
        model64 = conv_batch_norm_classifier()
    finally:
        keras.config.set_dtype_policy("float32")
    model64.set_weights([w.astype("float64") for w in model.get_weights()])
    learner64 = MAML(model64, inner_learning_rate=0.5, inner_steps=2)
    learner64.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs64 = {k: v.astype("float64") if v.dtype == np.float32 else v for k, v in inputs.items()}
    checked = 0
    for variable, grad in zip(learner64.trainable_variables, grads, strict=True):
        expected = finite_difference(learner64, inputs64, labels, variable)
        if np.abs(expected).max() > 1e-6:  # a bias right before batch normalisation has none
            assert relative_error(grad, expected) < 1e-3, variable.path
            checked += 1
    assert checked == len(grads) - 2  # all but the two biases in front of batch normalisation


def test_meta_sgd_learning_rates_match_finite_differences(float64):
    learner = MetaSGD(tiny_classifier(), inner_learning_rate=0.3, inner_steps=2)
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, labels = episode()
    rates = learner.inner_optimizer.learning_rates
    grads = dict(zip([id(v) for v in learner.trainable_variables], meta_gradient(learner, inputs, labels), strict=True))
    for rate in rates[:2]:
        assert relative_error(grads[id(rate)].numpy(), finite_difference(learner, inputs, labels, rate)) < 1e-3


def linear_tasks(num_tasks=2, shots=5, queries=4, dims=3, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {
        "support_x": rng.normal(size=(num_tasks, shots, dims)),
        "support_y": rng.normal(size=(num_tasks, shots, 1)),
        "query_x": rng.normal(size=(num_tasks, queries, dims)),
    }
    return inputs, rng.normal(size=(num_tasks, queries, 1))


def linear_model(dims=3, seed=0):
    model = keras.Sequential([keras.Input((dims,)), keras.layers.Dense(1, use_bias=False)])
    model.set_weights([np.random.default_rng(seed + 10).normal(size=(dims, 1))])
    return model


def mse_grad(w, x, y):
    """Gradient of mean((x w - y)^2) with respect to w."""
    return 2.0 * x.T @ (x @ w - y) / len(x)


def test_first_order_maml_is_the_query_gradient_at_the_adapted_weights(float64):
    learner = MAML(linear_model(), inner_learning_rate=0.1, inner_steps=3, first_order=True)
    learner.compile(loss="mse")
    inputs, targets = linear_tasks()
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError(dtype="float64")(targets, learner(inputs, training=True))
    grad = tape.gradient(loss, learner.trainable_variables)[0].numpy()
    w0 = learner.model.get_weights()[0]
    expected = 0
    for task in range(2):
        w = w0.copy()
        for _ in range(3):
            w = w - 0.1 * mse_grad(w, inputs["support_x"][task], inputs["support_y"][task])
        expected = expected + mse_grad(w, inputs["query_x"][task], targets[task]) / 2
    np.testing.assert_allclose(grad, expected, rtol=1e-10)


def test_first_order_meta_sgd_learns_its_rates_from_the_first_order_gradient(float64):
    """First order: d loss / d rate = -sum over steps of (support gradient . query gradient at the adapted weights)."""
    learner = MetaSGD(linear_model(), inner_learning_rate=0.1, granularity="scalar", inner_steps=3, first_order=True)
    learner.compile(loss="mse")
    inputs, targets = linear_tasks()
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError(dtype="float64")(targets, learner(inputs, training=True))
    grads = tape.gradient(loss, learner.trainable_variables)
    rate_grad = [g for g, v in zip(grads, learner.trainable_variables, strict=True) if "learning_rate" in v.path]
    assert len(rate_grad) == 1
    w0, rate = learner.model.get_weights()[0], float(learner.inner_optimizer.learning_rates[0].numpy())
    expected = 0
    for task in range(2):
        w, support_grads = w0.copy(), []
        for _ in range(3):
            support_grads.append(mse_grad(w, inputs["support_x"][task], inputs["support_y"][task]))
            w = w - rate * support_grads[-1]
        query_grad = mse_grad(w, inputs["query_x"][task], targets[task])
        expected = expected - sum(np.sum(g * query_grad) for g in support_grads) / 2
    np.testing.assert_allclose(rate_grad[0].numpy(), expected, rtol=1e-10)
    assert abs(expected) > 1e-6


def test_truncation_interpolates_between_first_and_second_order(float64):
    inputs, labels = episode()
    keras.utils.set_random_seed(3)
    model = tiny_classifier()
    grads = {}
    for name, options in {"full": {}, "first": {"first_order": True}, "t0": {"truncation": 0},
                          "t3": {"truncation": 3}, "t1": {"truncation": 1}}.items():
        learner = MAML(model, inner_learning_rate=0.5, inner_steps=3, **options)
        learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        grads[name] = meta_gradient(learner, inputs, labels)[0].numpy()
    np.testing.assert_allclose(grads["t3"], grads["full"], rtol=1e-12)
    np.testing.assert_allclose(grads["t0"], grads["first"], rtol=1e-12)
    assert relative_error(grads["t1"], grads["full"]) > 1e-6 and relative_error(grads["t1"], grads["first"]) > 1e-6


def test_reptile_update_is_the_interpolation_formula(float64):
    learner = Reptile(linear_model(), inner_optimizer=keras.optimizers.SGD(0.05), inner_steps=4)
    learner.compile(optimizer=keras.optimizers.SGD(0.3), loss="mse")
    inputs, targets = linear_tasks()
    theta = learner.model.get_weights()[0]
    learner.train_on_batch(inputs, targets)
    adapted = []
    for task in range(2):
        w = theta.copy()
        for _ in range(4):
            w = w - 0.05 * mse_grad(w, inputs["support_x"][task], inputs["support_y"][task])
        adapted.append(w)
    expected = theta + 0.3 * (np.mean(adapted, axis=0) - theta)
    np.testing.assert_allclose(learner.model.get_weights()[0], expected, rtol=1e-6)


def test_imaml_matches_the_exact_implicit_gradient_of_a_quadratic_inner_problem(float64):
    lam, dims = 2.0, 3
    learner = iMAML(linear_model(dims), inner_learning_rate=0.15, inner_steps=60, regularization=lam, cg_steps=dims)
    learner.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    inputs, targets = linear_tasks(dims=dims)
    theta = learner.model.get_weights()[0]
    learner.train_on_batch(inputs, targets)
    expected = 0
    for task in range(2):
        x, y = inputs["support_x"][task], inputs["support_y"][task]
        hessian = 2.0 * x.T @ x / len(x)
        phi = np.linalg.solve(hessian + lam * np.eye(dims), 2.0 * x.T @ y / len(x) + lam * theta)
        query_grad = mse_grad(phi, inputs["query_x"][task], targets[task])
        expected = expected + np.linalg.solve(np.eye(dims) + hessian / lam, query_grad) / 2
    np.testing.assert_allclose(theta - learner.model.get_weights()[0], expected, rtol=1e-6)


def test_conjugate_gradient_and_hessian_vector_product(float64):
    a = np.array([[4.0, 1.0], [1.0, 3.0]])
    b = np.array([1.0, 2.0])
    x = inner_loop.conjugate_gradient(lambda v: [tf.linalg.matvec(a, v[0])], [tf.constant(b)], steps=2)
    np.testing.assert_allclose(x[0].numpy(), np.linalg.solve(a, b), rtol=1e-10)
    w = tf.constant([1.0, -2.0], tf.float64)
    hv = inner_loop.hessian_vector_product(lambda ws: tf.reduce_sum(ws[0] ** 3), [w], [tf.constant([1.0, 1.0],
                                                                                                    tf.float64)])
    np.testing.assert_allclose(hv[0].numpy(), 6.0 * w.numpy())


RECOMPUTED = {
    "maml_batch_norm": lambda: MAML(tiny_classifier(batch_norm=True), inner_learning_rate=0.5, inner_steps=3,
                                    recompute_inner_steps=True),
    "anil": lambda: ANIL(tiny_classifier(), inner_learning_rate=0.5, inner_steps=2, recompute_inner_steps=True),
    "meta_sgd": lambda: MetaSGD(tiny_classifier(), inner_learning_rate=0.3, inner_steps=2, granularity="tensor",
                                recompute_inner_steps=True),
    "truncation": lambda: MAML(tiny_classifier(batch_norm=True), inner_learning_rate=0.5, inner_steps=3,
                               truncation=2, recompute_inner_steps=True),
    "multi_step_loss": lambda: MAML(tiny_classifier(), inner_learning_rate=0.5, inner_steps=3, multi_step_loss=True,
                                    recompute_inner_steps=True),
}


@pytest.mark.parametrize("name", sorted(RECOMPUTED))
def test_recomputed_inner_steps_give_the_same_meta_gradient(float64, name):
    """Checkpointed inner steps (recomputed while back-propagating) change memory, not the meta-gradient.

    Against finite differences where the training loss is the evaluated one; against the learner without
    recomputation where it is not (truncation and the multi-step loss, both checked above).
    """
    learner = RECOMPUTED[name]()
    learner.compile(optimizer=keras.optimizers.SGD(1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, labels = episode()
    before = [v.numpy() for v in learner.trainable_variables]
    learner.train_on_batch(inputs, labels)
    applied = [old - v.numpy() for old, v in zip(before, learner.trainable_variables, strict=True)]
    for variable, old in zip(learner.trainable_variables, before, strict=True):
        variable.assign(old)
    if name in ("truncation", "multi_step_loss"):
        plain = learner.get_config()
        plain["recompute_inner_steps"] = False
        reference = type(learner).from_config(plain)
        reference.set_weights(learner.get_weights())
        reference.compile(optimizer=keras.optimizers.SGD(1.0),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        reference.train_on_batch(inputs, labels)
        expected_grads = [old - v.numpy() for old, v in zip(before, reference.trainable_variables, strict=True)]
    else:
        expected_grads = [finite_difference(learner, inputs, labels, v) for v in learner.trainable_variables]
    checked = 0
    for variable, grad, expected in zip(learner.trainable_variables, applied, expected_grads, strict=True):
        if np.abs(expected).max() > 1e-6:  # a bias right before batch normalisation has none
            assert relative_error(grad, expected) < 1e-3, variable.path
            checked += 1
    assert checked >= len(applied) - 1


def test_recomputed_inner_steps_keep_the_fused_batch_norm_and_its_meta_gradient():
    """Float32 conv + batch norm: the recomputed steps run the fused op too, and give the plain meta-gradient."""
    keras.utils.set_random_seed(3)
    model = conv_batch_norm_classifier()
    rng = np.random.default_rng(0)
    inputs = {"support_x": rng.normal(size=(2, 4, 5, 5, 2)).astype("float32"),
              "support_y": np.array([[0, 1, 0, 1], [1, 0, 1, 0]], np.int32),
              "query_x": rng.normal(size=(2, 6, 5, 5, 2)).astype("float32")}
    labels = np.array([[0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1]], np.int32)
    grads = {}
    for recompute in (False, True):
        learner = MAML(model, inner_learning_rate=0.5, inner_steps=3, recompute_inner_steps=recompute)
        learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        traced = tf.function(functools.partial(meta_gradient, learner, inputs, labels)).get_concrete_function()
        assert {"FusedBatchNormV3", "FusedBatchNormGradV3"} <= op_types(traced)
        grads[recompute] = [g.numpy() for g in traced()]
    for plain, recomputed in zip(grads[False], grads[True], strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-4, atol=1e-6)


def test_per_step_learning_rates_match_finite_differences(float64):
    """MAML++'s per-layer, per-step rates: every step's rate of every tensor gets its own exact gradient."""
    learner = MAML(tiny_classifier(), inner_learning_rate=0.3, inner_steps=2, learn_inner_learning_rate="tensor",
                   per_step_inner_learning_rates=True)
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, labels = episode()
    rates = learner.inner_optimizer.learning_rates
    assert [tuple(rate.shape) for rate in rates] == [(2,)] * 4
    rates[0].assign([0.3, 0.1])  # the steps' rates differ
    grads = dict(zip([id(v) for v in learner.trainable_variables], meta_gradient(learner, inputs, labels), strict=True))
    for rate in rates:
        expected = finite_difference(learner, inputs, labels, rate)
        assert np.abs(expected).min() > 1e-6  # both steps' rates matter
        assert relative_error(grads[id(rate)].numpy(), expected) < 1e-3


def test_annealed_multi_step_loss_matches_finite_differences_of_the_weighted_step_losses(float64):
    """Half-way through the annealing, the steps' query losses weigh 1/6, 1/6 and 2/3 (not 1/3 each)."""
    learner = MAML(tiny_classifier(), inner_learning_rate=0.5, inner_steps=3, multi_step_loss=True,
                   multi_step_loss_annealing_steps=4)
    learner.compile(optimizer=keras.optimizers.SGD(1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, labels = episode()
    learner.train_on_batch(inputs, labels)  # builds the optimizer
    learner.optimizer.iterations.assign(2)
    expected_grads = []
    for variable in learner.trainable_variables:
        after_1, after_2, after_3 = per_step_finite_differences(learner, inputs, labels, variable, (1, 2, 3))
        expected_grads.append(after_1 / 6 + after_2 / 6 + after_3 * 2 / 3)
    before = [v.numpy() for v in learner.trainable_variables]
    learner.train_on_batch(inputs, labels)
    for old, variable, expected in zip(before, learner.trainable_variables, expected_grads, strict=True):
        assert relative_error(old - variable.numpy(), expected) < 1e-3, variable.path


def test_derivative_order_annealing_is_first_order_then_second_order_in_one_trace(float64):
    """`first_order_steps=1`: step 1 makes first-order MAML's update, step 2 second-order MAML's; one trace."""
    inputs, labels = episode()
    model = tiny_classifier(batch_norm=True)
    start = model.get_weights()

    def updates(**options):
        model.set_weights(start)
        learner = MAML(model, inner_learning_rate=0.5, inner_steps=2, **options)
        learner.compile(optimizer=keras.optimizers.SGD(1.0),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        learner.traces = 0
        compute_update = learner.compute_update

        def counted(*args):  # Python runs only while TensorFlow traces the training step
            learner.traces += 1
            return compute_update(*args)

        learner.compute_update = counted
        steps = []
        for _ in range(2):
            before = [v.numpy() for v in learner.trainable_variables]
            learner.train_on_batch(inputs, labels)
            steps.append([old - v.numpy() for old, v in zip(before, learner.trainable_variables, strict=True)])
            model.set_weights(start)  # each step from the same weights: the two orders' updates are comparable
        return learner, steps

    annealed, (first, second) = updates(first_order_steps=1)
    _, (first_order, _) = updates(first_order=True)
    _, (_, second_order) = updates()
    for got, expected in zip(first, first_order, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    for got, expected in zip(second, second_order, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    errors = [relative_error(a, b) for a, b in zip(first_order, second_order, strict=True) if np.abs(b).max() > 1e-9]
    assert max(errors) > 1e-3
    assert annealed.traces == 1


def test_per_step_batch_norm_weights_match_finite_differences(float64):
    """MAML++'s per-step batch-norm scales and offsets: each step's set gets its own exact meta-gradient."""
    learner = MAML(tiny_classifier(batch_norm=True), inner_learning_rate=0.5, inner_steps=2, per_step_batch_norm=True)
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sets = [variable for _, variable in learner.batch_norm_steps]
    assert [tuple(v.shape) for v in sets] == [(3, 4), (3, 4)]
    for variable in sets:  # the steps' sets differ
        variable.assign(variable.numpy() + np.random.default_rng(1).normal(scale=0.3, size=(3, 4)))
    inputs, labels = episode()
    grads = dict(zip([id(v) for v in learner.trainable_variables], meta_gradient(learner, inputs, labels), strict=True))
    for variable in learner.trainable_variables:
        expected = finite_difference(learner, inputs, labels, variable)
        if any(variable is s for s in sets):
            assert np.abs(expected).max(axis=1).min() > 1e-6  # every step's set counts
        if np.abs(expected).max() > 1e-6:
            assert relative_error(grads[id(variable)].numpy(), expected) < 1e-3, variable.path
    layer = learner.model.layers[1]
    assert grads[id(layer.gamma)] is None  # replaced by the per-step sets in every pass
    adapted = learner.adapt(inputs["support_x"][0], inputs["support_y"][0])
    np.testing.assert_allclose(adapted.layers[1].gamma.numpy(), sets[0].numpy()[2])  # the adapted weights' set


def tiny_conv_classifier():
    return keras.Sequential([keras.Input((3, 3, 1)), keras.layers.Conv2D(2, 2, activation="tanh"),
                             keras.layers.Flatten(), keras.layers.Dense(2)])


@pytest.mark.parametrize("transform, learner_class", [("kronecker", MAML), ("meta_curvature", MAML),
                                                     ("kronecker", MetaSGD), ("meta_curvature", MetaSGD)])
def test_preconditioned_inner_steps_match_finite_differences(float64, transform, learner_class):
    """Kronecker-factored and meta-curvature matrices (away from their identity start), Meta-SGD's rates beside
    them and the initial weights all get the exact second-order meta-gradient."""
    learner = learner_class(tiny_conv_classifier(), inner_learning_rate=0.3, inner_steps=2, inner_transform=transform)
    rates = learner_class is MetaSGD
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    inputs = {"support_x": rng.normal(size=(2, 4, 3, 3, 1)), "support_y": np.array([[0, 1, 0, 1], [1, 0, 1, 0]]),
              "query_x": rng.normal(size=(2, 3, 3, 3, 1))}
    labels = np.array([[0, 1, 1], [1, 0, 0]])
    matrices = [m for per_weight in learner.inner_optimizer.transform.matrices for m in per_weight]
    expected_shapes = {"kronecker": [(4, 4), (2, 2), (2, 2), (8, 8), (2, 2), (2, 2)],
                       "meta_curvature": [(4, 4), (1, 1), (2, 2), (2, 2), (8, 8), (2, 2), (2, 2)]}[transform]
    assert [tuple(m.shape) for m in matrices] == expected_shapes
    for matrix in matrices:
        matrix.assign(matrix.numpy() + 0.2 * rng.normal(size=matrix.shape))
    grads = dict(zip([id(v) for v in learner.trainable_variables], meta_gradient(learner, inputs, labels), strict=True))
    checked = matrices + list(learner.model.trainable_variables) + (
        list(learner.inner_optimizer.learning_rates) if rates else [])
    for variable in checked:
        expected = finite_difference(learner, inputs, labels, variable)
        assert np.abs(expected).max() > 1e-6, variable.path
        assert relative_error(grads[id(variable)].numpy(), expected) < 1e-3, variable.path
