"""Learned gradient transforms of the inner loop: their maps in closed form, their start, saving and bad input.

Their meta-gradients are checked against finite differences in test_meta_gradients.py.
"""

import keras
import numpy as np
import pytest

import keras_meta
from keras_meta.learners import KroneckerTransform, LearnableOptimizer, MetaCurvatureTransform


def random_matrices(transform, rng):
    for per_weight in transform.matrices:
        for matrix in per_weight:
            matrix.assign(rng.normal(size=matrix.shape).astype("float32"))
    return [[m.numpy() for m in per_weight] for per_weight in transform.matrices]


def test_kronecker_transform_is_left_and_right_matrix_products_of_the_flattened_kernel():
    rng = np.random.default_rng(0)
    transform = KroneckerTransform()
    transform.build_for([(2, 2, 3, 4), (4,)])
    (left, right), (bias_matrix,) = random_matrices(transform, rng)
    kernel_grad, bias_grad = rng.normal(size=(2, 2, 3, 4)).astype("float32"), rng.normal(size=4).astype("float32")
    kernel_out, bias_out = transform([kernel_grad, bias_grad])
    np.testing.assert_allclose(kernel_out, (left @ kernel_grad.reshape(12, 4) @ right.T).reshape(2, 2, 3, 4),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bias_out, bias_matrix @ bias_grad, rtol=1e-5, atol=1e-5)
    # As one preconditioner on the flattened gradient: the Kronecker product of the two factors.
    np.testing.assert_allclose(np.ravel(kernel_out), np.kron(left, right) @ kernel_grad.ravel(), rtol=1e-4, atol=1e-4)


def test_meta_curvature_multiplies_spatial_input_and_output_modes():
    rng = np.random.default_rng(1)
    transform = MetaCurvatureTransform()
    transform.build_for([(2, 2, 3, 4), (3, 4)])
    (spatial, inputs, outputs), (dense_in, dense_out) = random_matrices(transform, rng)
    assert (spatial.shape, inputs.shape, outputs.shape) == ((4, 4), (3, 3), (4, 4))
    kernel_grad, dense_grad = rng.normal(size=(2, 2, 3, 4)), rng.normal(size=(3, 4))
    kernel_out, dense_out_grad = transform([kernel_grad.astype("float32"), dense_grad.astype("float32")])
    flat = kernel_grad.reshape(4, 3, 4)
    expected = np.zeros_like(flat)
    for s, i, o in np.ndindex(flat.shape):  # sum over every (s', i', o') of the three factors times the gradient
        expected[s, i, o] = sum(spatial[s, a] * inputs[i, b] * outputs[o, c] * flat[a, b, c]
                                for a, b, c in np.ndindex(flat.shape))
    np.testing.assert_allclose(kernel_out, expected.reshape(2, 2, 3, 4), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dense_out_grad, dense_in @ dense_grad @ dense_out.T, rtol=1e-4, atol=1e-4)


def small_conv_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])


def task(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 6, 6, 1)).astype("float32"), np.array([0, 1, 0, 1]), rng.normal(
        size=(3, 6, 6, 1)).astype("float32")


@pytest.mark.parametrize("transform", ["kronecker", "meta_curvature"])
def test_a_new_transform_adapts_exactly_as_plain_maml(transform):
    support_x, support_y, query_x = task()
    plain = keras_meta.learners.MAML(small_conv_model(), inner_learning_rate=0.5, eval_inner_steps=2)
    preconditioned = keras_meta.learners.MAML(small_conv_model(), inner_learning_rate=0.5, eval_inner_steps=2,
                                              inner_transform=transform)
    for learner in (plain, preconditioned):
        learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    expected = plain.adapt(support_x, support_y).predict(query_x, verbose=0)
    np.testing.assert_allclose(preconditioned.adapt(support_x, support_y).predict(query_x, verbose=0), expected,
                               rtol=1e-5, atol=1e-5)
    # Trained away from the identity, the transform changes the adaptation.
    random_matrices(preconditioned.inner_optimizer.transform, np.random.default_rng(0))
    assert not np.allclose(preconditioned.adapt(support_x, support_y).predict(query_x, verbose=0), expected,
                           atol=1e-3)


def test_meta_training_moves_the_transform_and_a_reload_keeps_it(tmp_path):
    learner = keras_meta.learners.MetaSGD(small_conv_model(), inner_learning_rate=0.3, granularity="tensor",
                                          inner_transform=MetaCurvatureTransform())
    learner.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    support_x, support_y, query_x = task()
    inputs = {"support_x": support_x[None], "support_y": support_y[None], "query_x": query_x[None]}
    learner.train_on_batch(inputs, np.array([[0, 1, 1]]))
    matrices = [m.numpy() for per_weight in learner.inner_optimizer.transform.matrices for m in per_weight]
    assert any(not np.allclose(m, np.eye(len(m))) for m in matrices)
    assert len(learner.trainable_variables) == len(learner.model.trainable_variables) + 4 + len(matrices)

    learner.save(tmp_path / "learner.keras")
    reloaded = keras.saving.load_model(tmp_path / "learner.keras")
    assert isinstance(reloaded.inner_optimizer.transform, MetaCurvatureTransform)
    for saved, loaded in zip(matrices, [m.numpy() for per_weight in reloaded.inner_optimizer.transform.matrices
                                        for m in per_weight], strict=True):
        np.testing.assert_array_equal(saved, loaded)
    np.testing.assert_allclose(reloaded.adapt(support_x, support_y).predict(query_x, verbose=0),
                               learner.adapt(support_x, support_y).predict(query_x, verbose=0), rtol=1e-5, atol=1e-6)


def test_bad_transforms_are_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"Unknown gradient transform 'diagonal': give one of \['kronecker', "
                                         r"'meta_curvature'\]"):
        keras_meta.learners.MAML(small_conv_model(), inner_transform="diagonal")
    with pytest.raises(ValueError, match="`granularity=None` learns no rates: it needs a `transform`"):
        LearnableOptimizer(0.1, granularity=None)
    transform = KroneckerTransform()
    transform.build_for([(3, 2)])
    with pytest.raises(ValueError, match="Got 2 gradients but the transform was built for 1 weights"):
        transform([np.ones((3, 2), "float32"), np.ones(2, "float32")])

    class Broken(KroneckerTransform):
        def modes(self, shape):
            return (2,)

    with pytest.raises(ValueError, match=r"Broken.modes\(\(3, 2\)\) returned \(2,\)"):
        Broken().build_for([(3, 2)])
