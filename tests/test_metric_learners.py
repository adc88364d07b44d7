"""Matching Networks, R2D2 and both Meta Networks: logits against NumPy, adapt, save/load, training."""

import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta
from keras_meta.data import EpisodeSampler
from keras_meta.learners import R2D2, EmbeddingMetaNetwork, MatchingNetwork, MetaNetwork
from keras_meta.models import SupportClassLogits


def linear_backbone(seed=0, dims=(6, 4)):
    model = keras.Sequential([keras.Input((dims[0],)), keras.layers.Dense(dims[1], use_bias=False)])
    weights = np.random.default_rng(seed).normal(size=dims).astype("float32")
    model.set_weights([weights])
    return model, weights


def fixed_episode(seed=1):
    rng = np.random.default_rng(seed)
    inputs = {"support_x": rng.normal(size=(2, 6, 6)).astype("float32"),
              "support_y": np.array([[0, 1, 2, 0, 1, 2], [1, 1, 0, 0, 2, 2]], "int32"),
              "query_x": rng.normal(size=(2, 5, 6)).astype("float32")}
    return inputs


def unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_matching_network_logits_against_numpy():
    backbone, weights = linear_backbone()
    learner = MatchingNetwork(backbone, cosine_scale=3.0)
    inputs = fixed_episode()
    logits = learner(inputs).numpy()
    for task in range(2):
        s, q = inputs["support_x"][task] @ weights, inputs["query_x"][task] @ weights
        attention = softmax(3.0 * unit(q) @ unit(s).T)
        expected = np.log(attention @ np.eye(3)[inputs["support_y"][task]])
        np.testing.assert_allclose(logits[task], expected, rtol=1e-4, atol=1e-5)


def test_embedding_meta_network_logits_against_numpy():
    backbone, weights = linear_backbone()
    learner = EmbeddingMetaNetwork(backbone, hidden_units=3)
    rng = np.random.default_rng(2)
    u, e, v = rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=(4, 3))
    learner.weight_generator.set_weights([u.astype("float32"), e.astype("float32")])
    learner.query_projection.set_weights([v.astype("float32")])
    inputs = fixed_episode()
    logits = learner(inputs).numpy()
    for task in range(2):
        h_s, h_q = inputs["support_x"][task] @ weights, inputs["query_x"][task] @ weights
        w = h_s @ u + e  # w_i = U h_i + e
        class_w = np.stack([w[inputs["support_y"][task] == c].mean(0) for c in range(3)])
        np.testing.assert_allclose(logits[task], (h_q @ v) @ class_w.T, rtol=1e-4, atol=1e-4)


def test_r2d2_logits_against_numpy_normal_equations():
    backbone, weights = linear_backbone()
    learner = R2D2(backbone, initial_lambda=0.5, initial_scale=2.0, initial_bias=0.25)
    inputs = fixed_episode()
    logits = learner(inputs).numpy()
    for task in range(2):
        x, q = inputs["support_x"][task] @ weights, inputs["query_x"][task] @ weights  # 6 examples > 4 features
        y = np.eye(3)[inputs["support_y"][task]]
        w = np.linalg.solve(x.T @ x + 0.5 * np.eye(4), x.T @ y)
        np.testing.assert_allclose(logits[task], 2.0 * q @ w + 0.25, rtol=1e-3, atol=1e-4)


def numpy_meta_network(learner, support_emb, support_y, query_emb):
    """The original Meta Network's forward pass written out in NumPy for one task."""
    (w1, b1), (w2, b2) = learner.slow_hidden.get_weights(), learner.slow_output.get_weights()
    key = learner.key_layer.get_weights()[0]

    def generator(model, g):
        (a, c), (d, f) = model.layers[0].get_weights(), model.layers[1].get_weights()
        return (np.maximum(g[..., None] @ a + c, 0.0) @ d + f)[..., 0]

    fast1, fast2 = [], []
    for h, label in zip(support_emb, support_y, strict=True):  # per-example gradients of the softmax loss, by hand
        pre = h @ w1 + b1
        z = np.maximum(pre, 0)
        logits = np.where(np.isin(np.arange(learner.ways), support_y), z @ w2 + b2, -np.inf)  # the task's classes
        d_logits = softmax(logits) - np.eye(learner.ways)[label]
        d_pre = (d_logits @ w2.T) * (pre > 0)
        fast1.append(generator(learner.hidden_generator, np.outer(h, d_pre)))
        fast2.append(generator(learner.output_generator, np.outer(z, d_logits)))
    attention = softmax(learner.cosine_scale * unit(query_emb @ key) @ unit(support_emb @ key).T)
    out = []
    for a, h in zip(attention, query_emb, strict=True):
        w1_fast = np.tensordot(a, np.stack(fast1), 1)
        z = np.maximum(h @ w1 + b1, 0) + np.maximum(h @ w1_fast, 0)
        out.append(z @ w2 + b2 + z @ np.tensordot(a, np.stack(fast2), 1))
    return np.stack(out)[:, : support_y.max() + 1]


def test_meta_network_logits_against_numpy():
    backbone, weights = linear_backbone()
    learner = MetaNetwork(backbone, ways=4, hidden_units=5, key_units=3, generator_units=4, cosine_scale=2.0)
    inputs = fixed_episode()
    logits = learner(inputs).numpy()
    assert logits.shape == (2, 5, 3)
    for task in range(2):
        expected = numpy_meta_network(learner, inputs["support_x"][task] @ weights, inputs["support_y"][task],
                                      inputs["query_x"][task] @ weights)
        np.testing.assert_allclose(logits[task], expected, rtol=1e-4, atol=1e-5)


def test_meta_network_cosine_scale_keeps_files_saved_as_attention_scale(tmp_path):
    learner = MetaNetwork(linear_backbone()[0], ways=4, hidden_units=5, key_units=3, cosine_scale=2.0)
    learner.compile(loss="sparse_categorical_crossentropy")
    learner.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as new, zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for item in new.infolist():  # the same file as written before the rename
            data = new.read(item.filename)
            if item.filename == "config.json":
                assert b'"cosine_scale": 2.0' in data and b"attention_scale" not in data
                data = data.replace(b'"cosine_scale"', b'"attention_scale"')
            old.writestr(item, data)
    reloaded = keras.saving.load_model(tmp_path / "old.keras")
    assert reloaded.cosine_scale == 2.0
    episode = fixed_episode()
    np.testing.assert_allclose(reloaded(episode), learner(episode), rtol=1e-6)
    with pytest.raises(TypeError, match="`attention_scale` is now `cosine_scale`"):
        MetaNetwork(linear_backbone()[0], ways=4, attention_scale=2.0)


def test_meta_network_rejects_more_classes_than_ways():
    learner = MetaNetwork(linear_backbone()[0], ways=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more classes than"):
        learner(fixed_episode())
    with pytest.raises(ValueError, match="ways"):
        MetaNetwork(linear_backbone()[0], ways=1)


LEARNERS = {
    "matching": lambda b: MatchingNetwork(b),
    "matching_fce": lambda b: MatchingNetwork(b, full_context_embeddings=True, processing_steps=2),
    "r2d2": lambda b: R2D2(b),
    "embedding_metanet": lambda b: EmbeddingMetaNetwork(b, hidden_units=8),
    "metanet": lambda b: MetaNetwork(b, ways=4, hidden_units=8, key_units=8),
}


def small_conv():
    return keras_meta.models.conv4(input_shape=(12, 12, 1), filters=4, blocks=2)


def image_episode(seed=0, ways=3, shots=2, queries=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ways * 8, 12, 12, 1)).astype("float32")
    y = np.repeat(np.arange(ways), 8)
    sampler = EpisodeSampler(x, y, ways=ways, shots=shots, queries=queries, seed=seed)
    return next(iter(sampler.dataset(batch_size=2)))


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_adapted_classifier_and_reloaded_learner_give_the_learners_outputs(name, tmp_path):
    learner = LEARNERS[name](small_conv())
    inputs, labels = image_episode()
    learner.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    learner.fit(inputs, labels, epochs=2, verbose=0)  # moves BatchNorm statistics off their initial values
    outputs = learner(inputs).numpy()
    classifier = learner.adapt(inputs["support_x"][0].numpy(), inputs["support_y"][0].numpy())
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    predictions = keras.saving.load_model(path).predict(inputs["query_x"][0].numpy(), verbose=0)
    np.testing.assert_allclose(predictions, outputs[0], rtol=1e-4, atol=1e-4)  # logits, as the learner's
    learner.save(str(tmp_path / "learner.keras"))
    reloaded = keras.saving.load_model(str(tmp_path / "learner.keras"))
    np.testing.assert_allclose(reloaded(inputs).numpy(), outputs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_padding_changes_nothing_but_masks_absent_classes(name):
    """A task padded with label -1 (variable-way episodes) gives the logits of the same task without the padding."""
    learner = LEARNERS[name](linear_backbone()[0])
    inputs = fixed_episode()
    inputs["support_y"][1] = [0, 1, 0, 1, -1, -1]  # task 2: two classes, then two padding slots
    logits = learner(inputs).numpy()
    alone = learner({"support_x": inputs["support_x"][1:, :4], "support_y": inputs["support_y"][1:, :4],
                     "query_x": inputs["query_x"][1:]}).numpy()
    np.testing.assert_allclose(logits[1, :, :2], alone[0], rtol=1e-4, atol=1e-4)
    assert np.all(logits[1, :, 2] <= -1e8)


def test_r2d2_uses_the_woodbury_form_with_fewer_examples_than_features():
    backbone, weights = linear_backbone(dims=(6, 9))  # 6 support examples < 9 features
    learner = R2D2(backbone, initial_lambda=0.5, initial_scale=2.0, initial_bias=0.25)
    inputs = fixed_episode()
    logits = learner(inputs).numpy()
    x, q = inputs["support_x"][0] @ weights, inputs["query_x"][0] @ weights
    w = np.linalg.solve(x.T @ x + 0.5 * np.eye(9), x.T @ np.eye(3)[inputs["support_y"][0]])
    np.testing.assert_allclose(logits[0], 2.0 * q @ w + 0.25, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("examples", [3, 8])
def test_ridge_regression_with_unknown_shapes_picks_the_branch_at_run_time(examples):
    solve = tf.function(lambda x, y: keras_meta.ops.ridge_regression(x, y, 0.5),
                        input_signature=[tf.TensorSpec([None, None], tf.float64)] * 2)
    rng = np.random.default_rng(examples)
    x, y = rng.normal(size=(examples, 5)), rng.normal(size=(examples, 2))
    expected = np.linalg.solve(x.T @ x + 0.5 * np.eye(5), x.T @ y)
    np.testing.assert_allclose(solve(x, y).numpy(), expected, rtol=1e-8, atol=1e-10)


def test_hardness_of_a_learner_without_backbone_asks_for_an_embedding_function():
    maml = keras_meta.learners.MAML(keras_meta.models.mlp((6,), num_outputs=3))
    episode = (fixed_episode(), np.zeros((2, 5), "int32"))
    with pytest.raises(ValueError, match="no embedding backbone"):
        keras_meta.ops.hardness_metric(episode, maml)
    with pytest.raises(ValueError, match="must be positive"):
        keras_meta.ops.ridge_regression(np.ones((3, 2)), np.ones((3, 1)), reg=0.0)


def gaussian_tasks(seed=0):
    """Classes are well separated clusters: any learner that learns should beat chance easily."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(30, 6))
    x = (centres[:, None, :] + rng.normal(size=(30, 12, 6))).reshape(-1, 6).astype("float32")
    y = np.repeat(np.arange(30), 12)
    return x, y


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_learners_learn_few_shot_classification(name):
    keras.utils.set_random_seed(0)
    x, y = gaussian_tasks()
    backbone = keras_meta.models.mlp((6,), hidden_units=(32, 16))
    learner = LEARNERS[name](backbone)
    sampler = EpisodeSampler(x[: 20 * 12], y[: 20 * 12], ways=4, shots=1, queries=4, seed=0)
    test = EpisodeSampler(x[20 * 12:], y[20 * 12:], ways=4, shots=1, queries=4, seed=1)
    learner.compile(optimizer=keras.optimizers.Adam(3e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    learner.fit(sampler.dataset(batch_size=4), steps_per_epoch=60, epochs=1, verbose=0)
    accuracy = learner.evaluate(test.dataset(batch_size=4), steps=10, verbose=0, return_dict=True)["accuracy"]
    assert accuracy > 0.6, f"{name}: accuracy {accuracy:.3f} on separated clusters (chance 0.25)"


def test_gradient_clipnorm_bounds_each_update():
    keras.utils.set_random_seed(0)
    learner = EmbeddingMetaNetwork(linear_backbone()[0], hidden_units=3, gradient_clipnorm=0.01)
    learner.compile(optimizer=keras.optimizers.SGD(1.0),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs = fixed_episode()
    labels = np.zeros((2, 5), "int32")
    before = [v.numpy().copy() for v in learner.trainable_variables]
    learner.fit(inputs, labels, epochs=1, verbose=0)
    step = np.sqrt(sum(np.sum((v.numpy() - b) ** 2) for v, b in zip(learner.trainable_variables, before, strict=True)))
    assert 0 < step <= 0.01 + 1e-6
    assert EmbeddingMetaNetwork(linear_backbone()[0]).gradient_clipnorm == 1.0  # the default
    with pytest.raises(ValueError, match="gradient_clipnorm"):
        EmbeddingMetaNetwork(linear_backbone()[0], gradient_clipnorm=0.0)


def test_constructor_errors_name_the_fix():
    with pytest.raises(ValueError, match="initial_lambda"):
        R2D2(linear_backbone()[0], initial_lambda=0.0)
    with pytest.raises(ValueError, match="built keras.Model"):
        MatchingNetwork(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="processing_steps"):
        MatchingNetwork(linear_backbone()[0], full_context_embeddings=True, processing_steps=0)


@pytest.mark.parametrize("name", sorted(LEARNERS) + ["protonet"])
def test_adapt_refuses_non_finite_support_inputs(name):
    build = LEARNERS.get(name, lambda b: keras_meta.learners.PrototypicalNetwork(b))
    learner = build(linear_backbone()[0])
    inputs = fixed_episode()
    support_x = inputs["support_x"][0].copy()
    support_x[1, 0] = np.nan
    with pytest.raises(keras_meta.learners.NonFiniteError, match="`support_x` holds NaN or infinite values"):
        learner.adapt(support_x, inputs["support_y"][0])


def test_support_class_logits_are_the_log_of_the_attention_mass_per_class(tmp_path):
    """Against NumPy: log(softmax(s) @ one_hot(labels)); a class without support examples is masked."""
    rng = np.random.default_rng(0)
    similarities = rng.normal(scale=3.0, size=(5, 6)).astype("float32")
    labels = np.array([2, 0, 1, 0, 2, 2])
    layer = SupportClassLogits(labels, num_classes=4)
    logits = np.asarray(layer(similarities))
    attention = np.exp(similarities - similarities.max(1, keepdims=True))
    attention /= attention.sum(1, keepdims=True)
    np.testing.assert_allclose(logits[:, :3], np.log(attention @ np.eye(3)[labels]), rtol=1e-5, atol=1e-6)
    assert np.all(logits[:, 3] == -1e9)
    far = np.array([[100.0, -100.0, -100.0]], "float32")  # probability exp(-200) underflows; its log does not
    np.testing.assert_allclose(np.asarray(SupportClassLogits([0, 1, 1])(far))[0, 1], -200.0 + np.log(2.0), rtol=1e-5)
    model = keras.Sequential([keras.Input((6,)), layer])
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "m.keras").predict(similarities, verbose=0),
                               logits, rtol=1e-6)


@pytest.mark.parametrize("labels, num_classes, message", [
    ([], None, "non-empty list of integer labels"),
    ([0, -1], None, "labels >= 0"),
    ([0.5, 1.0], None, "integer labels"),
    ([0, 3], 2, r"`num_classes` \(2\) must exceed the largest support label \(3\)"),
])
def test_support_class_logits_refuse_bad_labels(labels, num_classes, message):
    with pytest.raises(ValueError, match=message):
        SupportClassLogits(labels, num_classes)


def test_adapted_matching_classifier_trains_with_logits_losses():
    """Compiled with `from_logits=True`, its loss is the learner's own query loss."""
    learner = MatchingNetwork(small_conv())
    inputs, labels = image_episode()
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    outputs = learner(inputs).numpy()[0]
    classifier = learner.adapt(inputs["support_x"][0].numpy(), inputs["support_y"][0].numpy())
    classifier.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = classifier.evaluate(inputs["query_x"][0].numpy(), labels[0].numpy(), verbose=0)
    expected = -np.mean(outputs[np.arange(len(outputs)), labels[0].numpy()])
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
