"""FineTuneBaseline (Chen et al. 2019's Baseline / Baseline++): pre-training, per-task heads against NumPy,
padding, adapt, saving, the cosine head, backbone fine-tuning and argument errors."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta
from keras_meta.data import EpisodeSampler
from keras_meta.evaluation import evaluate_few_shot
from keras_meta.learners import FineTuneBaseline

HEADS = ("linear", "cosine")


def linear_backbone(seed=0, dims=(6, 4)):
    model = keras.Sequential([keras.Input((dims[0],)), keras.layers.Dense(dims[1], use_bias=False)])
    weights = np.random.default_rng(seed).normal(size=dims).astype("float32")
    model.set_weights([weights])
    return model, weights


def fixed_episode(seed=1):
    rng = np.random.default_rng(seed)
    return {"support_x": rng.normal(size=(2, 6, 6)).astype("float32"),
            "support_y": np.array([[0, 1, 2, 0, 1, 2], [1, 1, 0, 0, 2, 2]], "int32"),
            "query_x": rng.normal(size=(2, 5, 6)).astype("float32")}


def blobs(num_classes=30, per_class=20, dims=8, seed=0):
    """Well separated Gaussian clusters, one per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(num_classes, dims))
    x = (centres[:, None, :] + rng.normal(size=(num_classes, per_class, dims))).reshape(-1, dims)
    return x.astype("float32"), np.repeat(np.arange(num_classes), per_class)


def unit(a, axis=-1):
    return a / np.linalg.norm(a, axis=axis, keepdims=True)


def softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_head(support, labels, queries, head, steps, lr, momentum, weight_decay, scale):
    """One task's head fit written out in NumPy, with hand-derived gradients: full-batch SGD on the mean
    support cross-entropy, weight decay added to the gradient, momentum as an average of the gradients
    (v = g first, then m v + (1 - m) g), from a zero linear head or the class means of unit embeddings."""
    n = labels.max() + 1
    one_hot = np.eye(n)[labels]
    support, queries = support.astype(np.float64), queries.astype(np.float64)
    if head == "linear":
        params = [np.zeros((support.shape[1], n)), np.zeros(n)]
    else:
        params = [np.stack([unit(support)[labels == c].mean(0) for c in range(n)]).T]
    velocity = None
    for _ in range(steps):
        if head == "linear":
            kernel, bias = params
            residual = (softmax(support @ kernel + bias) - one_hot) / len(labels)
            grads = [support.T @ residual, residual.sum(0)]
        else:
            (kernel,) = params
            norms = np.linalg.norm(kernel, axis=0, keepdims=True)
            directions = kernel / norms
            residual = (softmax(scale * unit(support) @ directions) - one_hot) / len(labels)
            d_directions = scale * unit(support).T @ residual
            grads = [(d_directions - directions * (directions * d_directions).sum(0, keepdims=True)) / norms]
        grads = [g + weight_decay * p for g, p in zip(grads, params, strict=True)]
        velocity = grads if velocity is None else [momentum * v + (1 - momentum) * g
                                                   for v, g in zip(velocity, grads, strict=True)]
        params = [p - lr * v for p, v in zip(params, velocity, strict=True)]
    if head == "linear":
        return queries @ params[0] + params[1]
    return scale * unit(queries) @ unit(params[0], axis=0)


@pytest.fixture(scope="module")
def pretrained():
    """A linear (Baseline) and a cosine (Baseline++) learner pre-trained on 20 classes of blobs."""
    x, y = blobs()
    train = y < 20
    learners = {}
    for head in HEADS:
        keras.utils.set_random_seed(0)
        learner = FineTuneBaseline(keras_meta.models.mlp((8,), (32, 16)), num_classes=20, head=head,
                                   head_learning_rate=0.1)
        learner.compile(optimizer=keras.optimizers.Adam(1e-2),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        learner.fit(x[train], y[train], batch_size=50, epochs=8, verbose=0)
        learners[head] = learner
    return learners, (x[train], y[train]), (x[~train], y[~train] - 20)


@pytest.mark.parametrize("head", HEADS)
def test_pretrained_heads_classify_held_out_classes_well(pretrained, head):
    learners, (x_train, y_train), (x_test, y_test) = pretrained
    learner = learners[head]
    logits = learner.predict(x_train, verbose=0)
    assert logits.shape == (len(x_train), 20)
    assert np.mean(np.argmax(logits, -1) == y_train) > 0.9  # pre-training: an ordinary 20-way classifier
    result = evaluate_few_shot(learner, x_test, y_test, ways=5, shots=1, queries=5, num_episodes=40, verbose=0)
    assert result.accuracy > 0.7, f"{head}: 5-way 1-shot accuracy {result.accuracy:.3f} on new classes (chance 0.2)"
    sampler = EpisodeSampler(x_test, y_test, ways=5, shots=1, queries=5, seed=3)
    logs = learner.evaluate(sampler.dataset(batch_size=4, num_episodes=8), verbose=0, return_dict=True)
    assert logs["accuracy"] > 0.7  # Keras' evaluate on episodes works unchanged


@pytest.mark.parametrize("head", HEADS)
def test_fitted_heads_match_a_numpy_fit_of_the_same_head(head):
    backbone, weights = linear_backbone()
    learner = FineTuneBaseline(backbone, num_classes=5, head=head, cosine_scale=3.0, head_steps=12,
                               head_learning_rate=0.05, head_momentum=0.8, head_weight_decay=0.01)
    inputs = fixed_episode()
    logits = learner(inputs).numpy()
    assert logits.shape == (2, 5, 3)
    np.testing.assert_allclose(learner.predict_on_batch(inputs), logits, rtol=1e-5, atol=1e-5)  # traced, too
    for task in range(2):
        expected = numpy_head(inputs["support_x"][task] @ weights, inputs["support_y"][task],
                              inputs["query_x"][task] @ weights, head, steps=12, lr=0.05, momentum=0.8,
                              weight_decay=0.01, scale=3.0)
        np.testing.assert_allclose(logits[task], expected, rtol=1e-4, atol=1e-4)
    untrained = numpy_head(inputs["support_x"][0] @ weights, inputs["support_y"][0], inputs["query_x"][0] @ weights,
                           head, steps=1, lr=0.05, momentum=0.8, weight_decay=0.01, scale=3.0)
    assert np.abs(untrained - logits[0]).max() > 1e-2  # the comparison sees the steps


@pytest.mark.parametrize("head,fine_tune", [("linear", False), ("cosine", False), ("linear", True)])
def test_padding_changes_nothing_but_masks_absent_classes(head, fine_tune):
    learner = FineTuneBaseline(linear_backbone()[0], num_classes=5, head=head, head_steps=10, head_learning_rate=0.1,
                               fine_tune_backbone=fine_tune)
    inputs = fixed_episode()
    inputs["support_y"][1] = [0, 1, 0, 1, -1, -1]  # task 2: two classes, then two padding slots
    inputs["support_x"][1, 4:] = 100.0  # whatever a padded slot holds is ignored
    logits = learner(inputs).numpy()
    alone = learner({"support_x": inputs["support_x"][1:, :4], "support_y": inputs["support_y"][1:, :4],
                     "query_x": inputs["query_x"][1:]}).numpy()
    np.testing.assert_allclose(logits[1, :, :2], alone[0], rtol=1e-4, atol=1e-4)
    assert np.all(logits[1, :, 2] <= -1e8)
    assert np.all(logits[0] > -1e8)


@pytest.mark.parametrize("head,fine_tune", [("linear", False), ("cosine", False), ("linear", True),
                                            ("cosine", True)])
def test_adapted_classifier_gives_the_episode_logits(head, fine_tune):
    keras.utils.set_random_seed(1)
    learner = FineTuneBaseline(keras_meta.models.mlp((6,), (8,)), num_classes=4, head=head, head_steps=15,
                               head_learning_rate=0.1, fine_tune_backbone=fine_tune)
    inputs = fixed_episode()
    logits = learner.predict_on_batch(inputs)
    classifier = learner.adapt(inputs["support_x"][1], inputs["support_y"][1])
    np.testing.assert_allclose(classifier.predict(inputs["query_x"][1], verbose=0), logits[1], rtol=1e-4, atol=1e-4)


def test_adapted_classifiers_load_without_keras_meta(tmp_path):
    inputs = fixed_episode()
    paths, expected = [], []
    for head in HEADS:
        learner = FineTuneBaseline(linear_backbone()[0], num_classes=3, head=head, head_steps=5)
        classifier = learner.adapt(inputs["support_x"][0], inputs["support_y"][0])
        paths.append(str(tmp_path / f"{head}.keras"))
        classifier.save(paths[-1])
        expected.append(classifier.predict(inputs["query_x"][0], verbose=0))
    np.save(tmp_path / "x.npy", inputs["query_x"][0])
    code = (
        "import os, sys, numpy as np; os.environ['KERAS_BACKEND'] = 'tensorflow'; import keras; "
        f"x = np.load({str(tmp_path / 'x.npy')!r}); "
        f"print(repr([keras.saving.load_model(p).predict(x, verbose=0).tolist() for p in {paths!r}])); "
        "assert 'keras_meta' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.array(eval(result.stdout.strip().splitlines()[-1])), np.array(expected), rtol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_saved_learner_reloads_with_the_same_predictions(head, tmp_path):
    keras.utils.set_random_seed(2)
    learner = FineTuneBaseline(keras_meta.models.mlp((6,), (8,)), num_classes=4, head=head, cosine_scale=5.0,
                               head_steps=7, head_learning_rate=0.2, head_momentum=0.5, head_weight_decay=0.0)
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6)).astype("float32"), np.arange(16) % 4
    learner.fit(x, y, epochs=2, verbose=0)  # weights away from their initial values
    inputs = fixed_episode()
    path = str(tmp_path / "learner.keras")
    learner.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, FineTuneBaseline)
    assert (reloaded.head, reloaded.cosine_scale, reloaded.head_steps, reloaded.head_learning_rate,
            reloaded.head_momentum, reloaded.head_weight_decay) == (head, 5.0, 7, 0.2, 0.5, 0.0)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), learner.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reloaded(inputs).numpy(), learner(inputs).numpy(), rtol=1e-5, atol=1e-5)


def test_cosine_heads_give_scaled_cosine_similarities():
    backbone, weights = linear_backbone()
    learner = FineTuneBaseline(backbone, num_classes=4, head="cosine", cosine_scale=7.0, head_steps=5)
    x = np.random.default_rng(3).normal(size=(5, 6)).astype("float32")
    kernel = learner.classifier.get_weights()[0]  # the pre-training head: [D, num_classes]
    np.testing.assert_allclose(learner(x).numpy(), 7.0 * unit(x @ weights) @ unit(kernel, axis=0), rtol=1e-5,
                               atol=1e-5)
    inputs = fixed_episode()
    classifier = learner.adapt(inputs["support_x"][0], inputs["support_y"][0])
    class_vectors = classifier.get_layer("head").get_weights()[0]  # scale * unit class vectors
    np.testing.assert_allclose(np.linalg.norm(class_vectors, axis=0), 7.0, rtol=1e-5)
    logits = learner(inputs).numpy()[0]
    cosines = unit(inputs["query_x"][0] @ weights) @ unit(class_vectors, axis=0)
    np.testing.assert_allclose(logits, 7.0 * cosines, rtol=1e-5, atol=1e-5)
    assert np.abs(logits).max() <= 7.0 + 1e-5


def test_fine_tuning_the_backbone_leaves_the_learner_unchanged():
    keras.utils.set_random_seed(3)
    learner = FineTuneBaseline(keras_meta.models.mlp((6,), (8,)), num_classes=4, head_steps=20,
                               head_learning_rate=0.2, fine_tune_backbone=True)
    frozen = FineTuneBaseline(learner.backbone, num_classes=4, head_steps=20, head_learning_rate=0.2)
    before = [w.copy() for w in learner.get_weights()]
    inputs = fixed_episode()
    logits = learner(inputs).numpy()
    learner.predict_on_batch(inputs)
    classifier = learner.adapt(inputs["support_x"][0], inputs["support_y"][0])
    for after, start in zip(learner.get_weights(), before, strict=True):
        np.testing.assert_array_equal(after, start)
    tuned = classifier.layers[1].get_weights()  # the classifier's copy of the backbone moved
    assert max(np.abs(t - w).max() for t, w in zip(tuned, learner.backbone.get_weights(), strict=True)) > 1e-3
    assert np.abs(logits - frozen(inputs).numpy()).max() > 1e-3


def test_bad_arguments_raise_before_anything_is_built():
    backbone = linear_backbone()[0]
    cases = [(dict(num_classes=1), "num_classes"), (dict(num_classes=2.5), "num_classes"),
             (dict(num_classes=3, head="svm"), "head"), (dict(num_classes=3, head_steps=0), "head_steps"),
             (dict(num_classes=3, head_steps=True), "head_steps"),
             (dict(num_classes=3, head_learning_rate=0.0), "head_learning_rate"),
             (dict(num_classes=3, head_learning_rate=-1.0), "head_learning_rate"),
             (dict(num_classes=3, cosine_scale=0.0), "cosine_scale"),
             (dict(num_classes=3, head_momentum=1.0), "head_momentum"),
             (dict(num_classes=3, head_weight_decay=-0.1), "head_weight_decay"),
             (dict(num_classes=3, fine_tune_backbone="yes"), "fine_tune_backbone")]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=f"`{name}`"):
            FineTuneBaseline(backbone, **kwargs)
    with pytest.raises(ValueError, match="built keras.Model"):
        FineTuneBaseline(keras.layers.Dense(3), num_classes=3)
    assert len(backbone.get_weights()) == 1  # nothing was added to the backbone


def test_fit_on_episodes_says_to_pre_train_on_images_and_labels():
    learner = FineTuneBaseline(linear_backbone()[0], num_classes=3)
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    inputs, labels = fixed_episode(), np.zeros((2, 5), "int32")
    sampler = EpisodeSampler(*blobs(num_classes=6, per_class=6, dims=6), ways=3, shots=1, queries=2, seed=0)
    for data in ((inputs, labels), (sampler.dataset(batch_size=2),)):
        with pytest.raises(ValueError, match=r"pre-train it as an ordinary classifier with `fit\(images, labels\)`"):
            learner.fit(*data, epochs=1, steps_per_epoch=1, verbose=0)
    with pytest.raises(ValueError, match="not trained on episodes"):
        learner.train_on_batch(inputs, labels)

    def generator():  # episodes the checks before training cannot see: the training step refuses them
        while True:
            yield inputs, labels

    with pytest.raises(ValueError, match="not trained on episodes"):
        learner.fit(generator(), epochs=1, steps_per_epoch=1, verbose=0)
    before = [w.copy() for w in learner.get_weights()]
    learner.train_on_batch(np.ones((4, 6), "float32"), np.array([0, 1, 2, 0]))  # images and labels: it trains
    assert any(np.abs(a - b).max() > 0 for a, b in zip(learner.get_weights(), before, strict=True))


def test_episodes_of_different_ways_in_turn():
    learner = FineTuneBaseline(linear_backbone()[0], num_classes=3, head_steps=3)
    inputs = fixed_episode()
    assert learner.predict_on_batch(inputs).shape == (2, 5, 3)
    two_way = {"support_x": inputs["support_x"][:, :4], "support_y": np.array([[0, 1, 0, 1]] * 2, "int32"),
               "query_x": inputs["query_x"]}
    assert learner.predict_on_batch(two_way).shape == (2, 5, 2)
    with pytest.raises(ValueError, match="support labels"):
        learner({"support_x": inputs["support_x"], "support_y": np.array([[0, 2, 0, 2, 0, 2]] * 2, "int32"),
                 "query_x": inputs["query_x"]})


def test_non_finite_pre_training_step_changes_nothing():
    learner = FineTuneBaseline(linear_backbone()[0], num_classes=3)
    learner.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.ones((4, 6), "float32")
    x[1, 2] = np.nan
    before = [w.copy() for w in learner.get_weights()]
    with pytest.raises(keras_meta.learners.NonFiniteError, match="non-finite support inputs"):
        learner.train_on_batch(x, np.array([0, 1, 2, 0]))
    for after, start in zip(learner.get_weights(), before, strict=True):
        np.testing.assert_array_equal(after, start)
    assert tf.is_tensor(learner(x[:1]))
