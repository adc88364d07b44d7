"""XLA (`compile(jit_compile=True)`): every learner trains, evaluates and predicts as it does without XLA.

Same initial weights, same episodes (variable-way, so with padded support
slots and query weights), two `fit` steps: the losses, accuracies, weights
and predictions agree to rtol 1e-4 (and `evaluate` for two learners). XLA
reorders and fuses float32 arithmetic, which moves results by a few float32
ulps (1e-7 relative) per op; tiny models over two steps stay far below
1e-4, while a lost mask, a wrong class or a missing inner step changes them
by 1e-2 or more. The optimizer is SGD: Adam would turn the rounding noise of
gradients that are exactly zero (a bias added to every logit) into full steps.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta import learners
from keras_meta.data import EpisodeSampler
from keras_meta.ops import xla

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RTOL, ATOL = 1e-4, 1e-5
WAYS, SHOTS, QUERIES = 3, 2, 2  # at most: the episodes have 2-3 classes of 1-2 shots
SUPPORT = WAYS * SHOTS


def backbone():
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(6, use_bias=False),
                             keras.layers.BatchNormalization(), keras.layers.ReLU()])


def classifier(batch_norm=False):
    normalization = [keras.layers.BatchNormalization()] if batch_norm else []
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(6, use_bias=False),
                             *normalization, keras.layers.ReLU(), keras.layers.Dense(WAYS)])


METRIC_LEARNERS = {
    "protonet": lambda: learners.PrototypicalNetwork(backbone()),
    "matching": lambda: learners.MatchingNetwork(backbone(), cosine_scale=10.0),
    "matching_fce": lambda: learners.MatchingNetwork(backbone(), full_context_embeddings=True, processing_steps=2,
                                                     cosine_scale=10.0),
    "r2d2": lambda: learners.R2D2(backbone()),
    "meta_network": lambda: learners.MetaNetwork(backbone(), ways=WAYS, hidden_units=4, key_units=4,
                                                 generator_units=4),
    "embedding_meta_network": lambda: learners.EmbeddingMetaNetwork(backbone(), hidden_units=4),
}
GRADIENT_LEARNERS = {
    "maml": lambda: learners.MAML(classifier(batch_norm=True), inner_learning_rate=0.1),  # second order through BN
    "fomaml": lambda: learners.MAML(classifier(), inner_learning_rate=0.1, first_order=True),
    "maml_truncated": lambda: learners.MAML(classifier(), inner_learning_rate=0.1, inner_steps=2, truncation=1,
                                            parallel_tasks=2),
    "metasgd": lambda: learners.MetaSGD(classifier(), inner_learning_rate=0.1),
    "anil": lambda: learners.ANIL(classifier(), inner_learning_rate=0.1),
    "reptile": lambda: learners.Reptile(classifier(), inner_optimizer=keras.optimizers.SGD(0.1), inner_steps=2),
    "imaml": lambda: learners.iMAML(classifier(), inner_learning_rate=0.1, inner_steps=2, cg_steps=2),
}


@pytest.fixture(scope="module")
def episodes():
    """4 variable-way episodes (2 fit steps of 2) as NumPy: `(inputs, labels, query weights)`."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4, 4, 1)).astype("float32")
    sampler = EpisodeSampler(x, np.repeat(np.arange(6), 10), ways=(2, WAYS), shots=(1, SHOTS), queries=QUERIES,
                             seed=0)
    batches = list(sampler.dataset(batch_size=4).take(1).as_numpy_iterator())
    inputs, labels, weights = batches[0]
    assert (inputs["support_y"] == -1).any(), "the episodes should include padding"
    return inputs, labels, weights


def run(make, episodes, jit_compile, weights=None, evaluate=False):
    """Fits 2 steps and predicts (and evaluates); returns the results and the initial weights."""
    inputs, labels, query_weights = episodes
    learner = make()
    if weights is not None:
        learner.set_weights(weights)
    initial = learner.get_weights()
    learner.compile(optimizer=keras.optimizers.SGD(0.5), loss=CE, metrics=["sparse_categorical_accuracy"],
                    jit_compile=jit_compile)
    assert learner.jit_compile is jit_compile
    history = learner.fit(inputs, labels, sample_weight=query_weights, batch_size=2, shuffle=False, verbose=0)
    results = {
        "fit": [history.history["loss"], history.history["sparse_categorical_accuracy"]],
        "weights": learner.get_weights(),
        "predictions": learner.predict(inputs, batch_size=2, verbose=0),
    }
    if evaluate:
        results["evaluate"] = learner.evaluate(inputs, labels, sample_weight=query_weights, batch_size=2, verbose=0)
    return results, initial


def check_same(make, episodes, evaluate=False):
    graph, initial = run(make, episodes, jit_compile=False, evaluate=evaluate)
    compiled, _ = run(make, episodes, jit_compile=True, weights=initial, evaluate=evaluate)
    np.testing.assert_allclose(compiled["fit"], graph["fit"], rtol=RTOL, atol=ATOL)
    if evaluate:  # [loss, accuracy]
        np.testing.assert_allclose(compiled["evaluate"], graph["evaluate"], rtol=RTOL, atol=ATOL)
    assert len(compiled["weights"]) == len(graph["weights"])
    for after_xla, after_graph in zip(compiled["weights"], graph["weights"], strict=True):
        np.testing.assert_allclose(after_xla, after_graph, rtol=RTOL, atol=ATOL)
    return graph["predictions"], compiled["predictions"]


@pytest.mark.parametrize("name", sorted(METRIC_LEARNERS))
def test_metric_learners_under_xla_match_graph_mode(name, episodes):
    graph, compiled = check_same(METRIC_LEARNERS[name], episodes, evaluate=name == "protonet")
    num_classes = graph.shape[-1]  # the largest class count of a predict batch
    # Under XLA the logits have a static class axis (the support size; `ways` for MetaNetwork), padded at -1e9.
    assert compiled.shape == (*graph.shape[:-1], WAYS if name == "meta_network" else SUPPORT)
    # Matching Networks multiply cosine similarities by 100 before the softmax: their log-probabilities
    # carry 100 times the rounding of the cosines (2e-4 seen), so they are compared 10-100 times looser.
    rtol, atol = (1e-3, 1e-3) if name.startswith("matching") else (RTOL, ATOL)
    np.testing.assert_allclose(compiled[..., :num_classes], graph, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(compiled[..., num_classes:], -1e9)
    # The predicted class agrees wherever graph mode's top two logits are further apart than the tolerance
    # (a near tie may fall either way within it).
    top_two = np.sort(graph, axis=-1)[..., -2:]
    clear = top_two[..., 1] - top_two[..., 0] > 2 * (atol + rtol * np.abs(top_two[..., 1]))
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(compiled.argmax(-1)[clear], graph.argmax(-1)[clear])


@pytest.mark.parametrize("name", sorted(GRADIENT_LEARNERS))
def test_gradient_learners_under_xla_match_graph_mode(name, episodes):
    graph, compiled = check_same(GRADIENT_LEARNERS[name], episodes, evaluate=name == "maml")
    assert compiled.shape == graph.shape == (4, WAYS * QUERIES, WAYS)
    np.testing.assert_allclose(compiled, graph, rtol=RTOL, atol=ATOL)


def test_support_labels_are_a_run_time_input_of_the_compiled_program(episodes):
    """Class counts from label values would make XLA compile one program per label tensor (per episode)."""
    inputs = {key: value[:2] for key, value in episodes[0].items()}
    learner = METRIC_LEARNERS["protonet"]()
    compiled = tf.function(lambda episode: learner(episode), jit_compile=True)
    hlo = compiled.experimental_get_compiler_ir(inputs)(stage="hlo")
    entry = next(line for line in hlo.splitlines() if "entry_computation_layout" in line)
    assert f"s32[2,{SUPPORT}]" in entry  # the labels are a parameter, not constants baked into the program


def test_episode_num_classes_is_the_label_count_outside_xla_and_the_support_size_under_it():
    labels = tf.constant([[0, 2, 1, -1, -1]])
    assert int(xla.episode_num_classes(labels)) == 3
    assert int(tf.function(xla.episode_num_classes, jit_compile=True)(labels)) == 5
    assert int(tf.function(lambda y: xla.episode_num_classes(y, bound=4), jit_compile=True)(labels)) == 4
    relaxed = tf.function(xla.episode_num_classes, jit_compile=True,
                          input_signature=[tf.TensorSpec([None, None], tf.int32)])
    assert int(relaxed(labels)) == 5


def test_meta_network_with_more_classes_than_ways_gives_nan_under_xla():
    learner = learners.MetaNetwork(backbone(), ways=2, hidden_units=4, key_units=4, generator_units=4)
    learner.compile(loss=CE, jit_compile=True)
    rng = np.random.default_rng(1)
    inputs = {"support_x": rng.normal(size=(2, 3, 4, 4, 1)).astype("float32"),
              "support_y": np.array([[0, 1, 2], [0, 1, 1]], "int32"),
              "query_x": rng.normal(size=(2, 2, 4, 4, 1)).astype("float32")}
    logits = learner.predict_on_batch(inputs)
    assert np.isnan(logits[0]).all() and np.isfinite(logits[1]).all()
    learner.compile(loss=CE, jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more classes than"):
        learner.predict_on_batch(inputs)


def fake_devices(monkeypatch, logical, physical):
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda device_type=None: [
        tf.config.LogicalDevice(f"/device:{kind}:0", kind) for kind in logical])
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda device_type=None: [
        tf.config.PhysicalDevice(f"/physical_device:{kind}:0", kind) for kind in physical])


@pytest.mark.parametrize("make", [METRIC_LEARNERS["protonet"], GRADIENT_LEARNERS["maml"]])
def test_auto_jit_compile_is_off_on_this_cpu(make):
    if any(device.device_type != "CPU" for device in tf.config.list_logical_devices()):
        pytest.skip("an accelerator is visible")
    learner = make()
    learner.compile(optimizer="sgd", loss=CE)  # jit_compile="auto"
    assert learner.jit_compile is False


@pytest.mark.parametrize("make", [METRIC_LEARNERS["protonet"], GRADIENT_LEARNERS["maml"]])
def test_auto_jit_compile_is_off_on_gpus_and_keras_choice_on_tpus(make, monkeypatch):
    learner = make()
    fake_devices(monkeypatch, logical=["CPU", "GPU"], physical=["CPU", "GPU"])
    learner.compile(optimizer="sgd", loss=CE)
    assert learner.jit_compile is False  # unmeasured on GPUs: the CPU measurement's choice
    fake_devices(monkeypatch, logical=["CPU", "TPU"], physical=["CPU", "TPU"])
    learner.compile(optimizer="sgd", loss=CE)
    assert learner.jit_compile is True  # Keras: XLA when every layer supports it
    learner.compile(optimizer="sgd", loss=CE, jit_compile=False)
    assert learner.jit_compile is False
