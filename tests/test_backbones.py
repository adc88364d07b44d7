"""ResNet-12, WRN and Conv-4 backbones and DropBlock: shapes, arguments, learners, meta-gradients, saving, TFLite."""

import contextlib
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta import learners, lite, models
from keras_meta.data import EpisodeSampler
from keras_meta.models import DropBlock
from keras_meta.ops import batch_norm as batch_norm_ops

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
SHAPE = (16, 16, 3)
WAYS = 3
BACKBONES = ["resnet12", "wrn", "conv4"]


def tiny(name, num_classes=None, input_shape=SHAPE, dropping=True, **options):
    """A tiny configuration of each backbone; uint8 pixels rescaled, DropBlock / dropout on, unless told.

    `dropping=False` for the gradient-based learners: they run the model in training mode (batch statistics)
    when they adapt and predict too, where dropout and DropBlock would make predictions random.
    """
    options.setdefault("rescale", 1 / 255)
    if name == "resnet12":
        options = {"drop_rate": 0.2 if dropping else 0.0, "dropblock_size": 2, **options}
        return models.resnet12(input_shape, filters=(4, 4, 4, 8), num_classes=num_classes, **options)
    if name == "wrn":
        options = {"dropout_rate": 0.2 if dropping else 0.0, **options}
        return models.wrn28_10(input_shape, depth=10, width=1, num_classes=num_classes, **options)
    return models.conv4(input_shape, filters=4, num_classes=num_classes, global_pool=True, **options)


def uint8_episodes(num_episodes=4, seed=0):
    """Episodes of uint8 images (6 classes of 4), as a dataset that keeps its stored pixels gives them."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(24, *SHAPE)).astype("uint8")
    y = np.repeat(np.arange(6), 4)
    return EpisodeSampler(x, y, ways=WAYS, shots=1, queries=2, seed=seed).dataset(batch_size=2,
                                                                                    num_episodes=num_episodes)


def assert_close(outputs, reference, tolerance=1e-5):
    """max |a - b| <= tolerance * max(1, max |b|)."""
    outputs, reference = np.asarray(outputs), np.asarray(reference)
    assert outputs.shape == reference.shape
    scale = max(1.0, float(np.max(np.abs(reference))))
    assert float(np.max(np.abs(outputs - reference))) <= tolerance * scale


def layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


# -- shapes and structure -------------------------------------------------------------


@pytest.mark.parametrize("name, size", [("resnet12", 640), ("wrn28_10", 640), ("conv4", 64)])
def test_84_and_105_pixel_inputs_give_the_same_embedding_size(name, size):
    make = {"resnet12": models.resnet12, "wrn28_10": models.wrn28_10,
            "conv4": lambda shape: models.conv4(shape, global_pool=True)}[name]
    small, large = make((84, 84, 3)), make((105, 105, 3))
    assert small.output_shape == large.output_shape == (None, size)
    assert small.count_params() == large.count_params()
    if name == "conv4":  # flattened, the embedding grows with the image: 5x5 or 6x6 maps of 64
        assert models.conv4((84, 84, 3)).output_shape == (None, 1600)
        assert models.conv4((105, 105, 3)).output_shape == (None, 2304)
    else:  # the published sizes: ResNet-12 12.4M parameters, WRN-28-10 36.5M
        assert round(small.count_params() / 1e6, 1) == {"resnet12": 12.4, "wrn28_10": 36.5}[name]


def test_resnet12_layout():
    model = models.resnet12((84, 84, 3), num_classes=5, drop_rate=0.1)
    convs = layers_of(model, keras.layers.Conv2D)
    assert [c.kernel_size for c in convs].count((3, 3)) == 12 and [c.kernel_size for c in convs].count((1, 1)) == 4
    assert len(layers_of(model, keras.layers.BatchNormalization)) == 16
    assert {layer.negative_slope for layer in layers_of(model, keras.layers.LeakyReLU)} == {0.1}
    assert len(layers_of(model, keras.layers.LeakyReLU)) == 12  # 2 in the branch + 1 after the add, per block
    assert [tuple(model.get_layer(f"block{i}_pool").output.shape[1:]) for i in range(1, 5)] == [
        (42, 42, 64), (21, 21, 160), (10, 10, 320), (5, 5, 640)]
    for block in range(1, 5):  # the third BN goes straight into the add, next to the shortcut's BN
        add = model.get_layer(f"block{block}_add")
        sources = {node.operation.name for node in add._inbound_nodes[0].parent_nodes}
        assert sources == {f"block{block}_bn3", f"block{block}_shortcut_bn"}
    assert [layer.block_size for layer in layers_of(model, DropBlock)] == [5] * 4
    assert model.get_layer("logits").units == 5 and model.get_layer("embedding").output.shape == (None, 640)
    assert not layers_of(models.resnet12((84, 84, 3)), DropBlock)  # drop_rate 0: no layer at all


def test_wide_resnet_layout():
    model = models.wrn28_10((32, 32, 3), depth=28, width=10, dropout_rate=0.3)
    assert len(layers_of(model, keras.layers.Add)) == 12  # (28 - 4) / 6 = 4 blocks in each of 3 groups
    assert len(layers_of(model, keras.layers.Dropout)) == 12
    assert model.get_layer("group3_block4_add").output.shape == (None, 8, 8, 640)
    assert model.get_layer("group1_block1_add").output.shape == (None, 32, 32, 160)
    # Pre-activation: the shortcut of a changing shape convolves the activated input; BN-ReLU ends the network.
    shortcut = model.get_layer("group2_block1_shortcut_conv")
    assert shortcut._inbound_nodes[0].parent_nodes[0].operation.name == "group2_block1_relu1"
    assert shortcut.strides == (2, 2)
    assert model.layers[-2].name == "final_relu"
    small = models.wrn28_10((16, 16, 3), depth=10, width=2, num_classes=4)
    assert small.output_shape == (None, 4) and small.get_layer("embedding").output.shape == (None, 128)
    assert small.get_layer("group1_block1_add").input[1] is small.get_layer("group1_block1_shortcut_conv").output


def test_conv4_keeps_its_layer_names_and_adds_rescaling_and_pooling_in_front_and_behind():
    plain = models.conv4((28, 28, 1), filters=8, num_classes=5)
    pooled = models.conv4((28, 28, 1), filters=8, num_classes=5, global_pool=True, rescale=1 / 255)
    names = [layer.name for layer in plain.layers]
    assert names[:4] == ["block1_conv", "block1_bn", "block1_relu", "block1_pool"] and names[-2:] == [
        "embedding", "logits"]
    assert [layer.name for layer in pooled.layers] == ["rescale"] + names
    assert isinstance(plain.get_layer("embedding"), keras.layers.Flatten)
    assert isinstance(pooled.get_layer("embedding"), keras.layers.GlobalAveragePooling2D)
    assert models.conv4((28, 28, 1), global_pool=True, pool_last_block=False).output_shape == (None, 64)


def test_conv4_convolutions_have_no_bias_because_batch_norm_would_cancel_it():
    model = models.conv4((8, 8, 1), filters=4, blocks=2, num_classes=3)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 2 and not any(conv.use_bias for conv in convs)
    # The reason, checked: in training mode a per-channel bias before the normalisation changes nothing.
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 1)).astype("float32")
    with_bias = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, bias_initializer="ones"),
                                  keras.layers.BatchNormalization()])
    without = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, use_bias=False),
                                keras.layers.BatchNormalization()])
    without.layers[0].kernel.assign(with_bias.layers[0].kernel)
    with_bias.layers[0].bias.assign(np.array([3.0, -2.0, 0.5, 7.0], "float32"))
    np.testing.assert_allclose(with_bias(x, training=True), without(x, training=True), atol=1e-4)


@pytest.mark.parametrize("name", BACKBONES + ["mlp"])
def test_uint8_batches_feed_a_rescaling_backbone_directly(name):
    keras.utils.set_random_seed(0)
    if name == "mlp":
        scaled, plain = models.mlp(SHAPE, (8,), rescale=1 / 255), models.mlp(SHAPE, (8,))
    else:
        scaled, plain = tiny(name, num_classes=WAYS), tiny(name, num_classes=WAYS, rescale=None)
    first = [layer for layer in scaled.layers if not isinstance(layer, keras.layers.InputLayer)][0]
    assert first.name == "rescale" and isinstance(first, keras.layers.Rescaling)
    plain.set_weights(scaled.get_weights())
    images = np.random.default_rng(0).integers(0, 256, size=(4, *SHAPE)).astype("uint8")
    expected = plain.predict(images.astype("float32") / 255, verbose=0)
    np.testing.assert_allclose(scaled.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scaled(images, training=False), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain.predict(images.astype("float32"), verbose=0), expected)


BAD_ARGUMENTS = [
    (lambda: models.resnet12(filters=(64, 160, 320)), r"`filters` must be 4 positive integers"),
    (lambda: models.resnet12(filters=(64, 0, 320, 640)), r"`filters\[1\]` must be a positive integer, got 0"),
    (lambda: models.resnet12(filters=(64, 160, 320, 640.0)), r"`filters\[3\]` must be a positive integer"),
    (lambda: models.resnet12(num_classes=0), r"`num_classes` must be a positive integer, got 0"),
    (lambda: models.resnet12(num_classes=True), r"`num_classes` must be a positive integer"),
    (lambda: models.resnet12(drop_rate=1.0), r"`drop_rate` must be a number in \[0, 1\), got 1.0"),
    (lambda: models.resnet12(drop_rate=-0.1), r"`drop_rate` must be a number in \[0, 1\)"),
    (lambda: models.resnet12(drop_rate="0.1"), r"`drop_rate` must be a number in \[0, 1\)"),
    (lambda: models.resnet12(dropblock_size=0), r"`dropblock_size` must be a positive integer, got 0"),
    (lambda: models.resnet12(input_shape=(12, 12, 3)), r"`input_shape` must be at least 16x16"),
    (lambda: models.resnet12(input_shape=(84, 84)), r"`input_shape` must be \(height, width, channels\)"),
    (lambda: models.resnet12(input_shape=(84, None, 3)), r"`input_shape\[1\]` must be a positive integer"),
    (lambda: models.resnet12(rescale=0), r"`rescale` must be None or a finite non-zero number"),
    (lambda: models.resnet12(rescale="1/255"), r"`rescale` must be None or a finite non-zero number"),
    (lambda: models.wrn28_10(depth=27), r"`depth` must be 6 \* n \+ 4 \(10, 16, 22, 28, ...\)"),
    (lambda: models.wrn28_10(depth=4), r"`depth` must be an integer >= 10, got 4"),
    (lambda: models.wrn28_10(width=0), r"`width` must be a positive integer, got 0"),
    (lambda: models.wrn28_10(width=2.5), r"`width` must be a positive integer, got 2.5"),
    (lambda: models.wrn28_10(dropout_rate=1.5), r"`dropout_rate` must be a number in \[0, 1\)"),
    (lambda: models.wrn28_10(num_classes=-1), r"`num_classes` must be a positive integer"),
    (lambda: models.wrn28_10(rescale=float("nan")), r"`rescale` must be None or a finite non-zero number"),
    (lambda: models.conv4(filters=0), r"`filters` must be a positive integer, got 0"),
    (lambda: models.conv4(blocks=0), r"`blocks` must be a positive integer, got 0"),
    (lambda: models.conv4(input_shape=(8, 8, 1)), r"`input_shape` must be at least 16x16"),
    (lambda: models.conv4(global_pool="yes"), r"`global_pool` must be True or False, got 'yes'"),
    (lambda: models.conv4(rescale=False), r"`rescale` must be None or a finite non-zero number"),
    (lambda: models.mlp((4,), hidden_units=(8, 0)), r"`hidden_units\[1\]` must be a positive integer, got 0"),
    (lambda: models.mlp((4,), num_outputs=0), r"`num_outputs` must be a positive integer, got 0"),
    (lambda: models.mlp((4,), rescale=0.0), r"`rescale` must be None or a finite non-zero number"),
    (lambda: DropBlock(1.0), r"`rate` must be a number in \[0, 1\), got 1.0"),
    (lambda: DropBlock(0.1, block_size=0), r"`block_size` must be a positive integer, got 0"),
    (lambda: DropBlock(0.1, seed=-1), r"`seed` must be a non-negative integer, got -1"),
    (lambda: DropBlock(0.1)(np.ones((2, 8, 8), "float32"), training=True), r"DropBlock takes feature maps"),
]


@pytest.mark.parametrize("make, message", BAD_ARGUMENTS, ids=range(len(BAD_ARGUMENTS)))
def test_bad_arguments_get_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- DropBlock ------------------------------------------------------------------------


def expected_drop_fraction(rate, block, size):
    """The exact expected dropped fraction on a `size x size` map: a unit survives the seeds of every block over it."""
    gamma = rate / block**2 * size**2 / (size - block + 1) ** 2  # the paper's formula
    covering = np.array([min(i, size - block) - max(0, i - block + 1) + 1 for i in range(size)])
    return float(np.mean(1 - (1 - gamma) ** (covering[:, None] * covering[None, :])))


def test_dropblock_is_the_identity_at_inference_and_at_rate_zero():
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype("float32")
    layer = DropBlock(0.3, block_size=3)
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer(x, training=False), x)
    np.testing.assert_array_equal(DropBlock(0.0)(x, training=True), x)
    assert not np.array_equal(layer(x, training=True), x)


def test_dropblock_drops_the_rate_in_blocks_and_keeps_the_mean():
    layer = DropBlock(0.1, block_size=5, seed=1)
    x = np.ones((32, 24, 24, 32), "float32")  # small maps: the valid-region factor of gamma is 576 / 400
    out = tf.function(lambda v: layer(v, training=True))(x).numpy()  # in a graph, as in fit
    dropped = out == 0
    expected = expected_drop_fraction(0.1, 5, 24)  # blocks overlap: a little under the rate
    assert 0.09 < expected < 0.1
    assert abs(dropped.mean() - expected) < 0.008  # 4.5 standard deviations (0.0018) of ~2,400 blocks
    assert abs(dropped.mean() - 0.1) < 0.015
    np.testing.assert_allclose(out.mean(), 1.0, rtol=1e-5)  # kept units scaled up by count / kept
    np.testing.assert_allclose(out[~dropped], 1 / (1 - dropped.mean()), rtol=1e-5)

    # The dropped units are a union of whole 5x5 squares inside the map: each lies in a fully dropped square.
    maps = dropped.transpose(0, 3, 1, 2).reshape(-1, 24, 24)
    windows = np.lib.stride_tricks.sliding_window_view(maps, (5, 5), axis=(1, 2)).all(axis=(-2, -1))
    covered = np.zeros_like(maps)
    for i, j in np.ndindex(5, 5):
        covered[:, i:i + 20, j:j + 20] |= windows
    np.testing.assert_array_equal(covered, maps)
    assert windows.any(axis=(1, 2)).mean() > 0.8  # most maps have blocks; channels differ
    assert not all(np.array_equal(maps[0], m) for m in maps[1:32])

    y = 1 + np.random.default_rng(0).random(x.shape).astype("float32")  # any positive input
    np.testing.assert_allclose(layer(y, training=True).numpy().mean(), y.mean(), rtol=0.01)


def test_dropblock_draws_new_blocks_each_call_and_clips_the_block_to_the_map():
    layer = DropBlock(0.5, block_size=5, seed=3)
    call = tf.function(lambda v: layer(v, training=True))
    x = np.ones((4, 4, 4, 32), "float32")  # 4x4 maps: the block covers the map, every channel drops whole
    first, second = call(x).numpy(), call(x).numpy()
    assert not np.array_equal(first, second)  # the seed generator's state moves on
    per_channel = (first == 0).all(axis=(1, 2)) | (first != 0).all(axis=(1, 2))
    assert per_channel.all() and 0.3 < (first == 0).all(axis=(1, 2)).mean() < 0.7
    assert layer.block_and_gamma(4, 4) == (4, 0.5)
    block, gamma = layer.block_and_gamma(21, 10)  # non-square: each side's valid positions
    assert block == 5 and gamma == pytest.approx(0.5 / 25 * 210 / (17 * 6))


def test_dropblock_under_mixed_precision_keeps_the_mean_of_a_large_batch():
    """The mask is counted in float32: float16 would overflow past 65,504 kept units."""
    layer = DropBlock(0.1, block_size=3, seed=0, dtype="mixed_float16")
    out = layer(np.ones((16, 21, 21, 160), "float16"), training=True)
    assert out.dtype == "float16"
    out = out.numpy().astype("float32")
    assert np.isfinite(out).all() and 0.05 < (out == 0).mean() < 0.1
    np.testing.assert_allclose(out.mean(), 1.0, rtol=1e-3)


def test_dropblock_config_round_trip():
    layer = DropBlock(0.25, block_size=3, seed=7, name="drop")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is DropBlock and restored.name == "drop"
    assert (restored.rate, restored.block_size, restored.seed) == (0.25, 3, 7)
    assert keras.saving.get_registered_name(DropBlock) == "keras_meta>DropBlock"


# -- with the learners ---------------------------------------------------------------

LEARNERS = {
    "protonet": lambda name: learners.PrototypicalNetwork(tiny(name)),
    "maml": lambda name: learners.MAML(tiny(name, num_classes=WAYS, dropping=False), inner_learning_rate=0.1,
                                       inner_steps=1),
    "r2d2": lambda name: learners.R2D2(tiny(name)),
    "matching": lambda name: learners.MatchingNetwork(tiny(name)),
}


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_meta_trains_and_adapts_with_the_learners_on_uint8_episodes(name):
    data = uint8_episodes()
    inputs, _ = next(iter(data))
    support_x, support_y, query_x = (inputs[k][0].numpy() for k in ("support_x", "support_y", "query_x"))
    assert support_x.dtype == np.uint8
    for kind, make in LEARNERS.items():
        keras.utils.set_random_seed(0)
        learner = make(name)
        learner.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
        before = [v.numpy() for v in learner.trainable_variables]
        history = learner.fit(data, epochs=1, verbose=0)  # two steps of two episodes
        assert np.isfinite(history.history["loss"]).all(), kind
        assert learner.optimizer.iterations.numpy() == 2, kind
        after = learner.trainable_variables
        assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, after, strict=True)), kind
        adapted = learner.adapt(support_x, support_y)
        predictions = adapted.predict(query_x, verbose=0)
        assert predictions.shape == (len(query_x), WAYS) and np.isfinite(predictions).all(), kind
        if kind == "maml":  # its adapted weights, with the support set's batch statistics as moving ones
            assert not np.allclose(adapted.get_layer("logits").kernel.numpy(),
                                   learner.model.get_layer("logits").kernel.numpy()), kind
            expected = learner.model.stateless_call(
                [tf.convert_to_tensor(v) for v in adapted.trainable_variables],
                [tf.convert_to_tensor(v) for v in learner.model.non_trainable_variables], support_x, training=True)[0]
            np.testing.assert_allclose(adapted.predict(support_x, verbose=0), expected, rtol=1e-4, atol=1e-5)
        else:  # the classifier agrees with the learner on the episode (inference mode both)
            episode = {"support_x": support_x[None], "support_y": support_y[None], "query_x": query_x[None]}
            np.testing.assert_array_equal(predictions.argmax(-1), learner.predict_on_batch(episode)[0].argmax(-1),
                                          err_msg=kind)


# -- second-order meta-gradients against finite differences ------------------------


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


def cross_entropy(labels, logits):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")(labels, logits)


def image_episode(shape, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {"support_x": rng.normal(size=(2, 4, *shape)),
              "support_y": np.array([[0, 1, 0, 1], [1, 0, 1, 0]], np.int32),
              "query_x": rng.normal(size=(2, 3, *shape))}
    return inputs, np.array([[0, 1, 1], [1, 0, 0]], np.int32)


def meta_gradient(learner, inputs, labels):
    with tf.GradientTape() as tape:
        loss = cross_entropy(labels, learner(inputs, training=True))
    return [g.numpy() for g in tape.gradient(loss, learner.trainable_variables)]


def directional_differences(learner, inputs, labels, eps=1e-6, seed=0):
    """Per variable, a random unit direction `d` and the central difference of the query loss along it.

    The post-adaptation query loss (inner loop included) read anew from the variables; checking `g . d`
    against it covers every entry of a variable with two evaluations.
    """
    query_loss = tf.function(lambda: cross_entropy(labels, learner(inputs, training=False)))
    rng = np.random.default_rng(seed)
    checks = []
    for variable in learner.trainable_variables:
        base = variable.numpy()
        direction = rng.normal(size=base.shape)
        direction /= np.linalg.norm(direction)
        losses = []
        for sign in (1, -1):
            variable.assign(base + sign * eps * direction)
            losses.append(float(query_loss()))
        variable.assign(base)
        checks.append((direction, (losses[0] - losses[1]) / (2 * eps)))
    return checks


def check_against_differences(grads, checks, paths):
    """Every variable's directional derivative matches; returns how many are far from zero."""
    scale = max(abs(expected) for _, expected in checks)
    for grad, (direction, expected), path in zip(grads, checks, paths, strict=True):
        assert abs(np.sum(grad * direction) - expected) < 1e-4 * max(abs(expected), 1e-3 * scale), path
    return sum(abs(expected) > 1e-4 * scale for _, expected in checks)


def second_order_maml(model):
    learner = learners.MAML(model, inner_learning_rate=0.5, inner_steps=2)
    learner.compile(loss=LOSS)
    return learner


META_GRADIENT_MODELS = {
    "resnet12": lambda: models.resnet12((16, 16, 1), filters=(2, 2, 2, 2), num_classes=2),
    "wrn": lambda: models.wrn28_10((8, 8, 1), depth=10, width=1, num_classes=2),
}


@pytest.mark.parametrize("name", sorted(META_GRADIENT_MODELS))
def test_second_order_maml_meta_gradient_matches_finite_differences(float64, name, monkeypatch):
    """Through the learner's own code: its meta-gradient, and the update `train_on_batch` applies with SGD(1).

    Keras' own BatchNormalization (its variance stops the gradient through the batch mean, see
    keras_meta/ops/batch_norm.py) fails the same check: the check sees the second-order terms.
    """
    model = META_GRADIENT_MODELS[name]()
    assert len(layers_of(model, keras.layers.BatchNormalization)) >= 7
    learner = second_order_maml(model)
    inputs, labels = image_episode(model.input_shape[1:])
    grads = meta_gradient(learner, inputs, labels)
    checks = directional_differences(learner, inputs, labels)
    paths = [v.path for v in learner.trainable_variables]
    assert check_against_differences(grads, checks, paths) >= 0.9 * len(paths)  # checked well above noise
    largest = max(np.abs(g).max() for g in grads)
    assert all(np.abs(g).max() > 1e-4 * largest for g in grads)  # every variable matters

    with monkeypatch.context() as patch:
        patch.setattr(batch_norm_ops, "fused_batch_norm", contextlib.nullcontext)
        plain = meta_gradient(learner, inputs, labels)
    with pytest.raises(AssertionError):
        check_against_differences(plain, checks, paths)

    learner.compile(optimizer=keras.optimizers.SGD(1.0), loss=LOSS)
    before = [v.numpy() for v in learner.trainable_variables]
    learner.train_on_batch(inputs, labels)
    applied = [old - v.numpy() for old, v in zip(before, learner.trainable_variables, strict=True)]
    check_against_differences(applied, checks, paths)


# -- saving and TFLite ----------------------------------------------------------------

SAVED = {
    "resnet12": lambda: learners.PrototypicalNetwork(tiny("resnet12")),  # with DropBlock
    "wrn": lambda: learners.MAML(tiny("wrn", num_classes=WAYS, dropping=False), inner_learning_rate=0.1,
                                 inner_steps=1),
    "conv4": lambda: learners.R2D2(tiny("conv4")),
}


@pytest.mark.parametrize("name", BACKBONES)
def test_saved_and_reloaded_learners_predict_the_same(name, tmp_path):
    keras.utils.set_random_seed(0)
    data = uint8_episodes(num_episodes=2)
    learner = SAVED[name]()
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
    learner.fit(data, epochs=1, verbose=0)  # moving statistics and weights off their initial values
    path = str(tmp_path / f"{name}.keras")
    learner.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is type(learner)
    inputs, _ = next(iter(data))
    np.testing.assert_allclose(reloaded.predict_on_batch(inputs), learner.predict_on_batch(inputs), rtol=1e-5,
                               atol=1e-6)
    backbone = reloaded.model if name == "wrn" else reloaded.backbone
    original = learner.model if name == "wrn" else learner.backbone
    assert [layer.name for layer in backbone.layers] == [layer.name for layer in original.layers]
    if name == "resnet12":
        blocks = layers_of(backbone, DropBlock)
        assert len(blocks) == 4 and all((b.rate, b.block_size) == (0.2, 2) for b in blocks)
    assert backbone.get_layer("rescale").scale == pytest.approx(1 / 255)


@pytest.mark.parametrize("kind", ["maml", "protonet"])
def test_adapted_resnet12_runs_in_tflite_as_in_keras(kind, tmp_path):
    """MAML's adapted model (support-set BN statistics) and a prototype classifier (DropBlock inside: off)."""
    keras.utils.set_random_seed(2)
    if kind == "maml":
        learner = learners.MAML(tiny("resnet12", num_classes=WAYS, dropping=False), inner_learning_rate=0.5,
                                eval_inner_steps=2)
    else:
        learner = learners.PrototypicalNetwork(tiny("resnet12"))
    learner.compile(loss=LOSS)
    inputs, _ = next(iter(uint8_episodes(num_episodes=1)))
    support_x, support_y, query_x = (inputs[k][0].numpy() for k in ("support_x", "support_y", "query_x"))
    adapted = learner.adapt(support_x, support_y)
    path = tmp_path / f"{kind}.tflite"
    lite.export_model(adapted, str(path))
    device = lite.LiteModel(str(path))
    pixels = query_x.astype("float32")  # the file takes float32 pixels, rescaled inside
    reference = adapted.predict(pixels, verbose=0)
    assert reference.shape == (len(query_x), WAYS)
    assert_close(device.predict(pixels), reference)
    assert np.abs(reference - reference.mean(0)).max() > 1e-4  # the queries get different logits


# -- the docs page --------------------------------------------------------------------


def test_the_docs_page_example_runs():
    page = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "backbones.md")
    with open(page) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, "backbones.md", "exec"), namespace)
