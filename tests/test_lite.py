"""keras_meta.lite: every exported file runs in the LiteRT interpreter and agrees with Keras / TensorFlow."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_meta
from keras_meta import lite
from keras_meta.data import EpisodeSampler
from keras_meta.datasets import omniglot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def assert_close(outputs, reference, tolerance=1e-5):
    """max |a - b| <= tolerance * max(1, max |b|): float logits of any scale."""
    outputs, reference = np.asarray(outputs), np.asarray(reference)
    assert outputs.shape == reference.shape
    scale = max(1.0, float(np.max(np.abs(reference))))
    assert float(np.max(np.abs(outputs - reference))) <= tolerance * scale, (
        float(np.max(np.abs(outputs - reference))), scale)


@pytest.fixture(scope="module")
def characters():
    """Held-out Omniglot characters (bundled data)."""
    _, test = omniglot.unseen_alphabet_split(("small1",))
    return test


@pytest.fixture(scope="module")
def episode(characters):
    """One fixed 5-way 1-shot task: support (5), queries (15)."""
    sampler = EpisodeSampler(characters.images, characters.labels, ways=5, shots=1, queries=3, seed=3)
    inputs, labels = next(iter(sampler.dataset(batch_size=1, num_episodes=1)))
    return {k: v.numpy() for k, v in inputs.items()}, labels.numpy()


def protonet(distance="euclidean", filters=8):
    keras.utils.set_random_seed(1)
    return keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4(filters=filters), distance=distance)


def with_random_batch_norm(model, seed=0):
    """Non-trivial moving statistics and BN weights, as after meta-training."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([1 + 0.2 * rng.standard_normal(gamma.shape), 0.1 * rng.standard_normal(beta.shape),
                               0.1 * rng.standard_normal(mean.shape), 0.5 + rng.random(variance.shape)])
    return model


# -- export of adapted models ----------------------------------------------------


def test_adapted_protonet_and_maml_models_match_keras_in_the_interpreter(episode, tmp_path):
    inputs, _ = episode
    support_x, support_y, query_x = inputs["support_x"][0], inputs["support_y"][0], inputs["query_x"][0]
    classifier = protonet().adapt(support_x, support_y)
    path = tmp_path / "protonet.tflite"
    lite.export_model(classifier, str(path))
    device = lite.LiteModel(str(path))
    assert device.signatures == {"serving_default": {"inputs": ["x"], "outputs": ["output"]}}
    assert_close(device.predict(query_x), classifier.predict(query_x, verbose=0))

    keras.utils.set_random_seed(2)
    learner = keras_meta.learners.MAML(with_random_batch_norm(keras_meta.models.conv4(filters=8, num_classes=5)),
                                       eval_inner_steps=2)
    learner.compile(loss=LOSS)
    adapted = learner.adapt(support_x, support_y)  # BN moving statistics: the support set's
    assert_close(lite.LiteModel(lite.export_model(adapted)).predict(query_x), adapted.predict(query_x, verbose=0))


def test_adapted_matching_classifier_gives_the_same_logits_in_the_interpreter(episode):
    inputs, _ = episode
    support_x, support_y, query_x = inputs["support_x"][0], inputs["support_y"][0], inputs["query_x"][0]
    keras.utils.set_random_seed(3)
    learner = keras_meta.learners.MatchingNetwork(keras_meta.models.conv4(filters=8))
    classifier = learner.adapt(support_x, support_y)
    expected = classifier.predict(query_x, verbose=0)
    assert_close(lite.LiteModel(lite.export_model(classifier)).predict(query_x), expected)
    # int8: the similarities and the read-out stay float by default ("head": the last weighted layer and after)
    int8 = lite.LiteModel(lite.export_model(classifier, quantize="int8", representative_data=support_x))
    assert lite.agreement(expected, int8.predict(query_x))["argmax_agreement"] >= 0.9


def test_quantized_variants_are_smaller_and_agree_with_keras(episode):
    inputs, _ = episode
    keras.utils.set_random_seed(0)
    model = keras_meta.models.conv4(filters=32, num_classes=5)
    x = np.concatenate([inputs["support_x"][0], inputs["query_x"][0]])
    report = lite.quantization_report(model, x, quantizations=(None, "dynamic", "float16"))
    float_size = report["float32"]["size_bytes"]
    assert report["float32"]["max_abs_diff"] < 1e-4
    assert report["float16"]["size_bytes"] < 0.6 * float_size and report["dynamic"]["size_bytes"] < 0.4 * float_size
    for name in ("dynamic", "float16"):
        assert report[name]["max_abs_diff"] < 0.05


def synthetic_characters(num_classes=12, per_class=8, seed=0, flips=0.01):
    """Well separated classes: a template of random thick strokes each, a few pixels flipped at random."""
    rng = np.random.default_rng(seed)
    templates = np.zeros((num_classes, 28, 28), np.float32)
    for template in templates:
        for _ in range(5):  # strokes
            row, col = rng.integers(4, 22, size=2)
            if rng.random() < 0.5:
                template[row:row + 3, max(0, col - 7):col + 7] = 1.0
            else:
                template[max(0, row - 7):row + 7, col:col + 3] = 1.0
    labels = np.repeat(np.arange(num_classes), per_class)
    noise = rng.random((len(labels), 28, 28)) < flips
    images = np.abs(templates[labels] - noise)[..., None].astype(np.float32)
    return images, labels


def test_int8_prototype_classifier_agrees_with_the_float_learner_on_fixed_episodes():
    """int8 backbone, float distances: argmax agreement >= 99% over 30 fixed 5-way 1-shot episodes."""
    images, labels = synthetic_characters()
    learner = protonet(filters=16)
    calibration = lite.representative_images(images, labels, ways=5, shots=1, queries=5, num_episodes=10, seed=1)
    device = lite.LiteModel(lite.export_prototype_classifier(learner, max_ways=5, quantize="int8",
                                                             representative_data=calibration))
    float_size = len(lite.export_prototype_classifier(learner, max_ways=5))
    assert device.size < float_size
    sampler = EpisodeSampler(images, labels, ways=5, shots=1, queries=3, seed=2)
    agree = []
    for inputs, _ in sampler.dataset(batch_size=1, num_episodes=30):
        reference = learner.predict_on_batch(inputs)[0]
        classes = device.run("prototypes", support_x=inputs["support_x"][0], support_y=inputs["support_y"][0])
        logits = device.run("classify", x=inputs["query_x"][0], **classes)["logits"]
        agree.extend(logits.argmax(-1) == reference.argmax(-1))
    assert np.mean(agree) >= 0.99


def test_full_integer_export_of_a_plain_model(episode):
    inputs, _ = episode
    images, labels = synthetic_characters()
    model = protonet(filters=16).adapt(images[::8][:5], np.arange(5))
    calibration = lite.representative_images(images, labels, ways=5, num_episodes=5, shots=1, queries=3)
    device = lite.LiteModel(lite.export_model(model, quantize="int8", representative_data=calibration))
    scores = lite.agreement(model.predict(images, verbose=0), device.predict(images))
    assert scores["argmax_agreement"] >= 0.95
    with pytest.raises(ValueError, match="representative_data"):
        lite.export_model(model, quantize="int8")


def test_int8_calibration_refuses_too_few_examples_before_converting():
    learner = keras_meta.learners.ANIL(keras_meta.models.conv4(filters=4, num_classes=3))
    with pytest.raises(ValueError, match="draws 5 examples at a time, but `representative_data` has 3"):
        lite.export_on_device_learner(learner, support_size=5, quantize="int8",
                                      representative_data=np.zeros((3, 28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="draws 1 example at a time, but `representative_data` has 0"):
        lite.export_model(learner.model, quantize="int8", representative_data=np.zeros((0, 28, 28, 1), "float32"))
    protonet = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4(filters=4))
    with pytest.raises(ValueError, match="draws 1 example at a time, but `representative_data` has 0"):
        lite.export_prototype_classifier(protonet, max_ways=5, quantize="int8",
                                         representative_data=np.zeros((0, 28, 28, 1), "float32"))


# -- the prototype classifier --------------------------------------------------------


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_prototype_classifier_logits_match_the_learner(episode, distance, tmp_path):
    inputs, _ = episode
    learner = protonet(distance)
    path = tmp_path / "classifier.tflite"
    lite.export_prototype_classifier(learner, str(path), max_ways=7)
    device = lite.LiteModel(str(path))
    assert set(device.signatures) == {"embed", "prototypes", "classify"}
    support_x, support_y, query_x = inputs["support_x"][0], inputs["support_y"][0], inputs["query_x"][0]

    assert_close(device.run("embed", x=query_x)["embeddings"], learner.backbone.predict(query_x, verbose=0))
    classes = device.run("prototypes", support_x=support_x, support_y=support_y)
    assert classes["prototypes"].shape == (7, learner.backbone.output_shape[-1])
    np.testing.assert_array_equal(classes["counts"], [1, 1, 1, 1, 1, 0, 0])
    logits = device.run("classify", x=query_x, **classes)["logits"]
    reference = learner.predict_on_batch(inputs)[0]  # [Q, 5]
    assert_close(logits[:, :5], reference)
    assert np.all(logits[:, 5:] <= -1e8)

    # Three classes, padding (-1) ignored, a different support size: still the learner's logits.
    keep = support_y < 3
    padded_x = np.concatenate([support_x[keep], support_x[:2]])
    padded_y = np.concatenate([support_y[keep], [-1, -1]]).astype(np.int32)
    classes = device.run("prototypes", support_x=padded_x, support_y=padded_y)
    np.testing.assert_array_equal(classes["counts"][:4], [1, 1, 1, 0])
    logits = device.run("classify", x=query_x[:4], **classes)["logits"]
    reference = learner.predict_on_batch({"support_x": support_x[keep][None], "support_y": support_y[keep][None],
                                          "query_x": query_x[None, :4]})[0]
    assert_close(logits[:, :3], reference)


# -- on-device adaptation ------------------------------------------------------------


def anil(steps=3, seed=4, learner=keras_meta.learners.ANIL, **kwargs):
    keras.utils.set_random_seed(seed)
    model = with_random_batch_norm(keras_meta.models.conv4(filters=8, num_classes=5), seed)
    learner = learner(model, inner_learning_rate=0.5, eval_inner_steps=steps, **kwargs)
    learner.compile(loss=LOSS)
    return learner


def test_on_device_adaptation_matches_tensorflow_and_saves_and_restores(episode, tmp_path):
    inputs, _ = episode
    support_x, support_y, query_x = inputs["support_x"][0], inputs["support_y"][0], inputs["query_x"][0]
    learner = anil()
    path = tmp_path / "on_device.tflite"
    lite.export_on_device_learner(learner, str(path))
    device = lite.LiteModel(str(path))
    assert set(device.signatures) == {"adapt", "infer", "save", "restore", "reset"}

    before = device.run("infer", x=query_x)["logits"]
    assert_close(before, learner.model.predict(query_x, verbose=0))  # not adapted yet: the meta-learned model
    outputs = device.run("adapt", support_x=support_x, support_y=support_y)
    loss, adapted = outputs.pop("loss"), device.run("infer", x=query_x)["logits"]
    saved = device.run("save")
    assert sorted(outputs) == sorted(saved) and {"weight_0", "weight_1", "state_0"} <= set(saved)
    for name, value in saved.items():  # adapt returns the state it leaves
        np.testing.assert_array_equal(outputs[name], value)
    reference = learner.adapt(support_x, support_y)  # the same adaptation in TensorFlow
    assert_close(adapted, reference.predict(query_x, verbose=0), 1e-4)
    support_loss = float(LOSS(support_y, reference.predict(support_x, verbose=0)))
    assert abs(float(loss) - support_loss) < 1e-4

    state_path = lite.save_state(device, str(tmp_path / "state.npz"))
    device.run("reset")
    assert_close(device.run("infer", x=query_x)["logits"], before)
    restored = lite.LiteModel(str(path))  # a fresh interpreter, as after an app restart
    lite.restore_state(restored, state_path)
    assert_close(restored.run("infer", x=query_x)["logits"], adapted)

    # Another support-set size (3 classes of a 5-way head) in the same file.
    device.run("adapt", support_x=support_x[:3], support_y=np.arange(3))
    assert_close(device.run("infer", x=query_x)["logits"],
                 learner.adapt(support_x[:3], np.arange(3)).predict(query_x, verbose=0), 1e-4)


def test_on_device_meta_sgd_rates_and_moving_batch_norm(episode):
    """Per-parameter learned rates; batch_norm='moving': checked against a NumPy reference."""
    inputs, _ = episode
    support_x, support_y, query_x = inputs["support_x"][0], inputs["support_y"][0], inputs["query_x"][0]
    learner = anil(steps=2, learner=keras_meta.learners.MetaSGD, adapt_layers=["logits"], inner_clipnorm=0.5)
    rng = np.random.default_rng(0)
    for rate in learner.inner_optimizer.learning_rates:
        rate.assign(rng.uniform(0.1, 1.0, rate.shape).astype("float32"))
    device = lite.LiteModel(lite.export_on_device_learner(learner, batch_norm="moving", support_size=5))
    device.run("adapt", support_x=support_x, support_y=support_y)

    body = keras.Model(learner.model.inputs, learner.model.get_layer("logits").input)
    h_support, h_query = body.predict(support_x, verbose=0), body.predict(query_x, verbose=0)
    kernel, bias = learner.model.get_layer("logits").get_weights()
    rate_kernel, rate_bias = (r.numpy() for r in learner.inner_optimizer.learning_rates)
    onehot = np.eye(5)[support_y]
    for _ in range(2):
        logits = h_support @ kernel + bias
        p = np.exp(logits - logits.max(1, keepdims=True))
        dlogits = (p / p.sum(1, keepdims=True) - onehot) / len(support_y)
        grads = [h_support.T @ dlogits, dlogits.sum(0)]
        norm = np.sqrt(sum(np.sum(g ** 2) for g in grads))
        grads = [g * 0.5 / max(norm, 0.5) for g in grads]
        kernel, bias = kernel - rate_kernel * grads[0], bias - rate_bias * grads[1]
    assert_close(device.run("infer", x=query_x)["logits"], h_query @ kernel + bias, 1e-4)


def test_int8_on_device_file_adapts_and_keeps_its_state(episode, characters, tmp_path):
    inputs, _ = episode
    support_x, support_y, query_x = inputs["support_x"][0], inputs["support_y"][0], inputs["query_x"][0]
    learner = anil(steps=2)
    calibration = lite.representative_images(characters.images, characters.labels, ways=5, shots=1, queries=1,
                                             num_episodes=4)
    content = lite.export_on_device_learner(learner, quantize="int8", representative_data=calibration)
    device = lite.LiteModel(content)
    assert set(device.signatures) == {"adapt", "infer", "restore"}  # the calibrator cannot load input-less ones
    outputs = device.run("adapt", support_x=support_x, support_y=support_y)
    adapted = device.run("infer", x=query_x)["logits"]
    reference = learner.adapt(support_x, support_y).predict(query_x, verbose=0)
    assert np.mean(adapted.argmax(-1) == reference.argmax(-1)) >= 0.8
    with pytest.raises(ValueError, match="state="):
        lite.save_state(device, str(tmp_path / "state.npz"))
    lite.save_state(device, str(tmp_path / "state.npz"), state=outputs)
    restarted = lite.restore_state(lite.LiteModel(content), str(tmp_path / "state.npz"))
    assert_close(restarted.run("infer", x=query_x)["logits"], adapted)


def test_adapting_all_layers_needs_flex_ops_and_is_exact_in_tensorflow(episode, tmp_path):
    import tensorflow as tf

    from keras_meta.lite import on_device

    inputs, _ = episode
    support_x, support_y, query_x = inputs["support_x"][0], inputs["support_y"][0], inputs["query_x"][0]
    learner = anil(steps=2, learner=keras_meta.learners.MAML)
    with pytest.raises(lite.LiteConversionError, match=r"Conv2DBackpropFilter \(used by layers 'block4_conv'"):
        lite.export_on_device_learner(learner, adapt_layers="all")
    # The SavedModel behind the file, run by TensorFlow: the same adaptation as learner.adapt on every layer.
    on_device.on_device_archive(learner, adapt_layers="all").write_out(str(tmp_path / "saved"), verbose=False)
    saved = tf.saved_model.load(str(tmp_path / "saved"))
    saved.adapt(tf.constant(support_x), tf.constant(support_y))
    logits = saved.infer(tf.constant(query_x))["logits"].numpy()
    assert_close(logits, learner.adapt(support_x, support_y).predict(query_x, verbose=0), 1e-4)

    # batch_norm="moving": two SGD steps on every weight with the moving statistics, written out with Keras.
    on_device.on_device_archive(learner, adapt_layers="all", batch_norm="moving").write_out(
        str(tmp_path / "moving"), verbose=False)
    saved = tf.saved_model.load(str(tmp_path / "moving"))
    saved.adapt(tf.constant(support_x), tf.constant(support_y))
    model = keras_meta.ops.clone_model(learner.model)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
                support_y, model(support_x, training=False))
        for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables), strict=True):
            v.assign_sub(0.5 * g)
    assert_close(saved.infer(tf.constant(query_x))["logits"].numpy(), model.predict(query_x, verbose=0), 1e-4)


# -- errors ------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="test_lite")
class CumulativeProduct(keras.layers.Layer):
    def call(self, x):
        import tensorflow as tf

        return tf.math.cumprod(x, axis=-1)


def test_clear_errors_name_the_layer_or_the_remedy():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), CumulativeProduct(name="running_product")])
    with pytest.raises(lite.LiteConversionError, match=r"Cumprod \(used by layer 'running_product'\)"):
        lite.export_model(model)
    with pytest.raises(lite.LiteConversionError, match="export_prototype_classifier"):
        lite.export_model(protonet())
    with pytest.raises(lite.LiteConversionError, match="MAML, MetaSGD or ANIL"):
        lite.export_on_device_learner(protonet())
    keras.utils.set_random_seed(0)
    softmax_head = keras_meta.models.mlp((4,), num_outputs=None)
    softmax_head = keras.Sequential([softmax_head, keras.layers.Dense(3, activation="softmax", name="probs")])
    learner = keras_meta.learners.MAML(softmax_head)
    with pytest.raises(lite.LiteConversionError, match="layer 'probs'"):
        lite.export_on_device_learner(learner)
    per_step = keras_meta.learners.MAMLPlusPlus(keras_meta.models.mlp((4,), num_outputs=3), inner_steps=2)
    per_step.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(lite.LiteConversionError, match="per-step ones"):
        lite.export_on_device_learner(per_step)
    preconditioned = keras_meta.learners.MAML(keras_meta.models.mlp((4,), num_outputs=3), inner_transform="kronecker")
    preconditioned.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(lite.LiteConversionError, match="preconditions its gradients"):
        lite.export_on_device_learner(preconditioned)


def test_deploying_page_code_blocks_run(tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    with open(os.path.join(ROOT, "docs", "deploying.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    namespace = {}
    for block in blocks:
        exec(compile(block, "deploying.md", "exec"), namespace)
    assert_close(namespace["logits"], namespace["restarted"].run("infer", x=namespace["query_x"])["logits"])
    assert namespace["report"]["int8"]["argmax_agreement"] >= 0.9
    assert namespace["predicted"].max() < 5


# -- command line and example -----------------------------------------------------------


def test_command_line_exports_models_and_learners(tmp_path, capsys):
    from keras_meta.lite import cli

    keras.utils.set_random_seed(0)
    model = keras_meta.models.mlp((28, 28, 1), hidden_units=(16,), num_outputs=5)
    model.save(tmp_path / "model.keras")
    assert cli.main(["export", str(tmp_path / "model.keras"), str(tmp_path / "model.tflite"), "--quantize",
                     "float16"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["kind"] == "model" and line["signatures"] == {"serving_default": ["x"]}
    x = np.random.default_rng(0).random((3, 28, 28, 1), np.float32)
    assert_close(lite.LiteModel(str(tmp_path / "model.tflite")).predict(x), model.predict(x, verbose=0), 1e-2)

    protonet().save(tmp_path / "protonet.keras")
    assert cli.main(["export", str(tmp_path / "protonet.keras"), str(tmp_path / "protonet.tflite"),
                     "--max-ways", "5"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kind"] == "prototype_classifier"

    anil().save(tmp_path / "anil.keras")
    assert cli.main(["export", str(tmp_path / "anil.keras"), str(tmp_path / "anil.tflite"), "--steps", "1"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["kind"] == "on_device_learner" and set(line["signatures"]) >= {"adapt", "infer"}
    assert cli.main(["export", str(tmp_path / "anil.keras"), str(tmp_path / "all.tflite"), "--adapt-layers",
                     "all"]) == 1
    assert "Flex" in capsys.readouterr().err

    support_x = np.random.default_rng(1).random((5, 28, 28, 1), np.float32)
    np.savez(tmp_path / "support.npz", support_x=support_x, support_y=np.arange(5))
    r2d2 = keras_meta.learners.R2D2(keras_meta.models.conv4(input_shape=(28, 28, 1), filters=4))
    r2d2.save(tmp_path / "r2d2.keras")
    assert cli.main(["export", str(tmp_path / "r2d2.keras"), str(tmp_path / "r2d2.tflite")]) == 1
    assert "--adapt support.npz" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "anil.keras"), str(tmp_path / "task.tflite"), "--adapt",
                     str(tmp_path / "support.npz")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["kind"] == "model"
    adapted = keras.saving.load_model(tmp_path / "anil.keras").adapt(support_x, np.arange(5))
    assert_close(lite.LiteModel(str(tmp_path / "task.tflite")).predict(x), adapted.predict(x, verbose=0))


@pytest.fixture
def small_model_file(tmp_path):
    """A saved plain Keras model with inputs of shape (4,)."""
    keras.utils.set_random_seed(0)
    path = tmp_path / "small.keras"
    keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3).save(path)
    return path


def assert_one_line_usage_error(capsys, argv, message):
    """`keras-meta` exits with status 2 and one line on stderr, no traceback, matching `message`."""
    from keras_meta.lite import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and not captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("keras-meta export: error: ")
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize("option, value", [("--max-ways", "0"), ("--steps", "-1"), ("--support-size", "many"),
                                           ("--calibration-episodes", "0"), ("--max-ways", "2.5")])
def test_command_line_rejects_counts_that_are_not_positive(option, value, capsys):
    assert_one_line_usage_error(capsys, ["export", "model.keras", "out.tflite", option, value],
                                f"argument {option}: must be a positive integer, got '{re.escape(value)}'")


def test_command_line_rejects_missing_or_corrupt_model_files(small_model_file, tmp_path, capsys):
    out = str(tmp_path / "out.tflite")
    assert_one_line_usage_error(capsys, ["export", str(tmp_path / "missing.keras"), out],
                                "No such model file: '.*missing.keras'")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(small_model_file.read_bytes()[:100])
    assert_one_line_usage_error(capsys, ["export", str(truncated), out], "'.*truncated.keras' is a corrupt .keras file")
    assert_one_line_usage_error(capsys, ["export", str(small_model_file), str(tmp_path)], "is a folder")
    assert not os.path.exists(out)


def test_command_line_rejects_bad_adapt_and_calibration_files(small_model_file, tmp_path, capsys):
    model, out = str(small_model_file), str(tmp_path / "out.tflite")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not numpy data" * 10)
    np.savez(tmp_path / "wrong_keys.npz", x=np.zeros((5, 4)), y=np.arange(5))
    np.savez(tmp_path / "mismatched.npz", support_x=np.zeros((5, 4)), support_y=np.arange(4))
    np.save(tmp_path / "wrong_shape.npy", np.zeros((10, 28, 28, 1), np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    cases = [
        (["--adapt", str(tmp_path / "missing.npz")], r"--adapt .*missing.npz: no such file"),
        (["--adapt", str(garbage)], r"--adapt .*garbage.npz: not a readable .npy or .npz file"),
        (["--adapt", str(tmp_path / "wrong_keys.npz")], r"must be an .npz file with arrays support_x and support_y; "
                                                        r"it has \['x', 'y'\]"),
        (["--adapt", str(tmp_path / "mismatched.npz")], r"one label \(or target\) per support_x example"),
        (["--quantize", "int8", "--calibration-data", str(tmp_path / "missing.npy")], r"missing.npy: no such file"),
        (["--quantize", "int8", "--calibration-data", str(garbage)], r"not a readable .npy or .npz file"),
        (["--quantize", "int8", "--calibration-data", model],
         r"not a readable .npy or .npz file \(a zip whose entries"),
        (["--quantize", "int8", "--calibration-data", str(tmp_path / "empty.npy")], r"expected a numeric array"),
        (["--quantize", "int8", "--calibration-data", str(tmp_path / "wrong_shape.npy")],
         r"examples of shape \(28, 28, 1\), but the model takes inputs of shape \(4,\)"),
        (["--quantize", "int8"], r"inputs of shape \(4,\) needs --calibration-data"),
    ]
    for options, message in cases:
        assert_one_line_usage_error(capsys, ["export", model, out, *options], message)
    assert not os.path.exists(out)


def test_command_line_rejects_support_sets_the_learner_cannot_take(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    learner = keras_meta.learners.MAML(keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3))
    learner.compile(loss=LOSS)
    learner.save(tmp_path / "maml.keras")
    np.savez(tmp_path / "wide.npz", support_x=np.zeros((3, 5), np.float32), support_y=np.arange(3))
    np.savez(tmp_path / "labels.npz", support_x=np.zeros((3, 4), np.float32), support_y=np.array([0, 1, 7]))
    model, out = str(tmp_path / "maml.keras"), str(tmp_path / "out.tflite")
    assert_one_line_usage_error(capsys, ["export", model, out, "--adapt", str(tmp_path / "wide.npz")],
                                r"support_x examples have shape \(5,\), but the learner takes inputs of shape \(4,\)")
    assert_one_line_usage_error(capsys, ["export", model, out, "--adapt", str(tmp_path / "labels.npz")],
                                r"labels.npz: .*label value of 7 .*outside the valid range of \[0, 3\)")
    assert not os.path.exists(out)


def test_load_model_reports_corrupt_and_missing_files(small_model_file, tmp_path):
    from keras_meta.lite import cli

    assert isinstance(cli.load_model(small_model_file), keras.Model)
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        cli.load_model(tmp_path / "missing.keras")
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(small_model_file.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{re.escape(repr(str(truncated)))} is a corrupt .keras file"):
        cli.load_model(truncated)
    damaged = bytearray(small_model_file.read_bytes())  # stored entries: the weights file's bytes appear as they are
    start = damaged.index(b"HDF")
    damaged[start + 200:start + 210] = b"x" * 10
    (tmp_path / "damaged.keras").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"damaged.keras' is a corrupt .keras file \(Bad CRC-32"):
        cli.load_model(tmp_path / "damaged.keras")


def test_example_classifies_new_characters_in_the_interpreter(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "tflite_few_shot.py"), "--output-dir", str(tmp_path),
         "--steps", "5", "--filters", "8", "--episodes", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["max_logit_diff_vs_keras"] <= 1e-5 * max(1.0, results["max_abs_logit"])
    assert 0.0 <= results["device_accuracy_5w1s"] <= 1.0
    for name in ("prototype_classifier.tflite", "prototype_classifier_int8.tflite"):
        assert (tmp_path / name).stat().st_size > 1000


def test_missing_extras_are_named(monkeypatch, small_model_file, tmp_path, capsys):
    """Without ai-edge-litert (extra `lite`) or tensorflow-datasets (extra `tfds`), the error says what to install."""
    from keras_meta.datasets import tfds_images
    from keras_meta.lite import cli

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ImportError, match=r'needs ai-edge-litert: install it with `pip install "keras-meta\[lite\]"`'):
        lite.LiteModel(b"")
    output = tmp_path / "model.tflite"
    assert cli.main(["export", str(small_model_file), str(output)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["signatures"] is None and output.stat().st_size == printed["size_bytes"] > 0
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r'needs tensorflow-datasets: install it with `pip install "keras-meta\[tfds'):
        tfds_images.load("mnist", "train")
