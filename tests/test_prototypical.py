import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_meta
from keras_meta.data import EpisodeSampler
from keras_meta.evaluation import evaluate_episodes
from keras_meta.learners import PrototypicalNetwork


def linear_backbone(seed=0, dims=(6, 4)):
    model = keras.Sequential([keras.Input((dims[0],)), keras.layers.Dense(dims[1], use_bias=False)])
    weights = np.random.default_rng(seed).normal(size=dims).astype("float32")
    model.set_weights([weights])
    return model, weights


def numpy_protonet(support_x, support_y, query_x, weights, distance):
    s, q = support_x @ weights, query_x @ weights
    n = support_y.max() + 1
    protos = np.stack([s[support_y == c].mean(0) for c in range(n)])
    if distance == "euclidean":
        return -((q[:, None, :] - protos[None]) ** 2).sum(-1)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    pn = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    return 10.0 * qn @ pn.T


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_logits_against_numpy_reference(distance):
    backbone, weights = linear_backbone()
    learner = PrototypicalNetwork(backbone, distance=distance)
    rng = np.random.default_rng(1)
    support_x = rng.normal(size=(2, 6, 6)).astype("float32")
    support_y = np.array([[0, 1, 2, 0, 1, 2], [1, 1, 0, 0, 2, 2]], "int32")
    query_x = rng.normal(size=(2, 5, 6)).astype("float32")
    logits = learner({"support_x": support_x, "support_y": support_y, "query_x": query_x}).numpy()
    assert logits.shape == (2, 5, 3)
    for t in range(2):
        expected = numpy_protonet(support_x[t], support_y[t], query_x[t], weights, distance)
        np.testing.assert_allclose(logits[t], expected, rtol=1e-4, atol=1e-4)


def test_absent_classes_are_masked():
    backbone, _ = linear_backbone()
    learner = PrototypicalNetwork(backbone)
    support_y = np.array([[0, 1, -1, -1], [0, 1, 2, 2]], "int32")  # a 2-way task (padded) beside a 3-way one
    x = np.ones((2, 4, 6), "float32")
    logits = learner({"support_x": x, "support_y": support_y, "query_x": x}).numpy()
    assert (logits[0, :, 2] <= -1e8).all() and (logits[0, :, :2] > -1e8).all() and (logits[1] > -1e8).all()


@pytest.mark.parametrize("support_y, shown", [([[0, 2, -1, 2]], "[-1 0 2]"), ([[0, 1, 7, 1]], "[0 1 7]"),
                                              ([[0, 1, -3, 1]], "[-3 0 1]"), ([[-1, -1, -1, -1]], "[-1]")])
@pytest.mark.parametrize("eager", [True, False])
def test_invalid_support_labels_are_refused(support_y, shown, eager):
    learner = PrototypicalNetwork(linear_backbone()[0])
    x = np.ones((1, 4, 6), "float32")
    episode = {"support_x": x, "support_y": np.array(support_y, "int32"), "query_x": x}
    with pytest.raises(ValueError, match=r"`support_y` of task 0 holds the labels " + re.escape(shown)):
        learner(episode) if eager else learner.predict_on_batch(episode)


def blobs(num_classes=8, per_class=12, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(num_classes, dim))
    x = (centres[:, None] + rng.normal(size=(num_classes, per_class, dim))).reshape(-1, dim)
    return x.astype("float32"), np.repeat(np.arange(num_classes), per_class)


def compiled_learner(distance="euclidean", metrics_argument="metrics"):
    learner = PrototypicalNetwork(keras_meta.models.mlp((6,), hidden_units=(16,), num_outputs=8), distance)
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **{metrics_argument: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]},
    )
    return learner


def test_fit_learns_and_evaluate_runs():
    x, y = blobs()
    sampler = EpisodeSampler(x, y, ways=4, shots=2, queries=4, seed=0)
    learner = compiled_learner()
    test = sampler.dataset(batch_size=8, num_episodes=32, seed=99)
    before = learner.evaluate(test, verbose=0, return_dict=True)
    history = learner.fit(sampler.dataset(batch_size=4), steps_per_epoch=40, epochs=2, verbose=0)
    after = learner.evaluate(test, verbose=0, return_dict=True)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.9


def test_fit_on_variable_way_episodes_uses_sample_weights():
    x, y = blobs()
    sampler = EpisodeSampler(x, y, ways=(2, 5), shots=(1, 3), queries=3, seed=0)
    learner = compiled_learner(metrics_argument="weighted_metrics")
    test = sampler.dataset(batch_size=8, num_episodes=64, seed=99)
    before = learner.evaluate(test, verbose=0, return_dict=True)["loss"]
    history = learner.fit(sampler.dataset(batch_size=4), steps_per_epoch=30, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert learner.evaluate(test, verbose=0, return_dict=True)["loss"] < 0.5 * before
    # A Keras `weighted_metrics` entry skips the padded queries exactly as the per-episode evaluation does.
    keras_accuracy = learner.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    weights = np.concatenate([b[2].numpy().sum(1) for b in test])
    per_episode = evaluate_episodes(learner, test, verbose=0).per_episode
    assert keras_accuracy == pytest.approx(np.sum(per_episode * weights) / weights.sum(), abs=1e-4)


def test_save_load_round_trip_and_any_ways(tmp_path):
    x, y = blobs()
    learner = compiled_learner(distance="cosine")
    learner.fit(EpisodeSampler(x, y, ways=4, shots=2, queries=4, seed=0).dataset(4), steps_per_epoch=5, verbose=0)
    path = str(tmp_path / "protonet.keras")
    learner.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, PrototypicalNetwork) and restored.distance == "cosine"
    for ways, shots in [(4, 2), (7, 1), (3, 5)]:
        inputs, _ = next(iter(EpisodeSampler(x, y, ways=ways, shots=shots, queries=3, seed=1).dataset(2)))
        expected = learner.predict_on_batch(inputs)
        np.testing.assert_allclose(restored.predict_on_batch(inputs), expected, rtol=1e-5, atol=1e-5)
        assert expected.shape == (2, ways * 3, ways)
    # Training goes on from the restored optimizer state.
    restored.fit(EpisodeSampler(x, y, ways=4, shots=2, queries=4, seed=2).dataset(4), steps_per_epoch=2, verbose=0)


def test_adapt_returns_plain_classifier(tmp_path):
    x, y = blobs()
    learner = compiled_learner()
    inputs, labels = next(iter(EpisodeSampler(x, y, ways=5, shots=3, queries=4, seed=3).dataset(1)))
    classifier = learner.adapt(inputs["support_x"][0], inputs["support_y"][0])
    assert isinstance(classifier, keras.Model) and not isinstance(classifier, keras_meta.learners.MetaLearner)
    assert classifier.output_shape == (None, 5)
    # Same probabilities as the learner (Euclidean logits agree up to a per-query constant).
    np.testing.assert_allclose(
        softmax(classifier.predict(inputs["query_x"][0], verbose=0)), softmax(learner.predict_on_batch(inputs)[0]),
        rtol=1e-4, atol=1e-5,
    )
    # The classifier owns its weights: training the learner further leaves it unchanged.
    before = classifier.predict(inputs["query_x"][0], verbose=0)
    learner.fit(EpisodeSampler(x, y, ways=4, shots=2, queries=4).dataset(4), steps_per_epoch=3, verbose=0)
    np.testing.assert_array_equal(classifier.predict(inputs["query_x"][0], verbose=0), before)
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(inputs["query_x"][0], verbose=0), before, rtol=1e-6)


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_adapt_cosine_gives_the_learners_logits():
    x, y = blobs()
    learner = compiled_learner(distance="cosine")
    inputs, _ = next(iter(EpisodeSampler(x, y, ways=4, shots=2, queries=3, seed=4).dataset(1)))
    classifier = learner.adapt(inputs["support_x"][0].numpy(), inputs["support_y"][0].numpy())
    np.testing.assert_allclose(classifier.predict(inputs["query_x"][0], verbose=0),
                               learner.predict_on_batch(inputs)[0], rtol=1e-4, atol=1e-4)


def test_adapted_classifier_loads_without_keras_meta(tmp_path):
    x, y = blobs()
    classifier = compiled_learner().adapt(x[::12][:5], np.arange(5))
    path = str(tmp_path / "plain.keras")
    classifier.save(path)
    expected = classifier.predict(x[:4], verbose=0)
    np.save(tmp_path / "x.npy", x[:4])
    code = (
        "import os, sys, numpy as np; os.environ['KERAS_BACKEND'] = 'tensorflow'; import keras; "
        f"m = keras.saving.load_model({path!r}); "
        f"print(repr(m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0).tolist())); "
        "assert 'keras_meta' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.array(eval(result.stdout.strip().splitlines()[-1])), expected, rtol=1e-5)


def test_integer_labels_of_any_width_work():
    learner = compiled_learner()
    x = np.random.default_rng(0).normal(size=(1, 4, 6)).astype("float32")
    logits32 = learner({"support_x": x, "support_y": np.array([[0, 1, 0, 1]], "int32"), "query_x": x})
    logits64 = learner({"support_x": x, "support_y": np.array([[0, 1, 0, 1]], "int64"), "query_x": x})
    np.testing.assert_allclose(logits32, logits64)


def test_bad_input_raises():
    learner = compiled_learner()
    x = np.zeros((4, 6), "float32")
    with pytest.raises(ValueError, match="classes \\[1\\] have no example"):
        learner.adapt(x, np.array([0, 2, 0, 2]))
    with pytest.raises(ValueError, match="one task"):
        learner.adapt(x, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="integer class labels"):
        learner.adapt(x, np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="episode dict"):
        learner(x)
    with pytest.raises(ValueError, match="disagree"):
        learner({"support_x": x[None], "support_y": np.zeros((1, 3), "int32"), "query_x": x[None]})
    with pytest.raises(ValueError, match="distance"):
        PrototypicalNetwork(keras_meta.models.mlp((6,)), distance="manhattan")
    with pytest.raises(ValueError, match="built keras.Model"):
        PrototypicalNetwork(keras.layers.Dense(3))
    with pytest.raises(ValueError, match=r"embeddings \[batch, D\]"):
        PrototypicalNetwork(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3)]))
    with pytest.raises(ValueError, match="integer class labels"):
        learner({"support_x": x[None], "support_y": np.zeros((1, 4), "float32"), "query_x": x[None]})
    with pytest.raises(ValueError, match="labels 0..N-1, got -1"):
        learner.adapt(x, np.array([-1, 0, 1, 0]))
