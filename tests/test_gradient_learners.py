"""Behaviour of the gradient-based learners: adaptation, batch normalisation, saving, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_meta import learners
from keras_meta.learners import gradient_based, inner_loop

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def batch_norm_first_model():
    """BatchNormalization straight on the inputs: its batch statistics do not depend on the weights."""
    return keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9),
                             keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(2)])


def classification_episode(num_tasks=2, support_shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {
        "support_x": (rng.normal(size=(num_tasks, 4, 3)) + support_shift).astype("float32"),
        "support_y": np.tile(np.array([0, 1, 0, 1], np.int32), (num_tasks, 1)),
        "query_x": rng.normal(size=(num_tasks, 6, 3)).astype("float32"),
    }
    return inputs, np.tile(np.array([0, 1, 0, 1, 0, 1], np.int32), (num_tasks, 1))


LEARNERS = {
    "maml": lambda m, **kw: learners.MAML(m, inner_learning_rate=0.1, inner_steps=2, **kw),
    "maml_recompute": lambda m, **kw: learners.MAML(m, inner_learning_rate=0.1, inner_steps=2,
                                                   recompute_inner_steps=True, **kw),
    "mamlpp": lambda m, **kw: learners.MAMLPlusPlus(m, training_steps=3, inner_steps=2, **kw),
    "fomaml": lambda m, **kw: learners.MAML(m, inner_learning_rate=0.1, inner_steps=2, first_order=True, **kw),
    "metasgd": lambda m, **kw: learners.MetaSGD(m, inner_learning_rate=0.1, inner_steps=1, **kw),
    "anil": lambda m, **kw: learners.ANIL(m, inner_learning_rate=0.1, inner_steps=2, **kw),
    "reptile": lambda m, **kw: learners.Reptile(m, inner_optimizer=keras.optimizers.SGD(0.1), inner_steps=2, **kw),
    "imaml": lambda m, **kw: learners.iMAML(m, inner_learning_rate=0.1, inner_steps=2, cg_steps=2, **kw),
}


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_adaptation_never_touches_the_moving_statistics_and_training_tracks_the_query_set(name):
    learner = LEARNERS[name](batch_norm_first_model())
    learner.compile(optimizer=keras.optimizers.SGD(0.01), loss=CE)
    inputs, labels = classification_episode(support_shift=100.0)
    batch_norm = learner.model.layers[0]
    learner.predict_on_batch(inputs)
    learner.test_on_batch(inputs, labels)
    np.testing.assert_array_equal(batch_norm.moving_mean.numpy(), np.zeros(3))
    learner.train_on_batch(inputs, labels)
    query_mean = inputs["query_x"].reshape(-1, 3).mean(0)  # the mean of the per-task means
    np.testing.assert_allclose(batch_norm.moving_mean.numpy(), 0.1 * query_mean, rtol=1e-4, atol=1e-6)


def test_adapted_model_uses_the_support_set_statistics():
    learner = learners.MAML(batch_norm_first_model(), inner_learning_rate=0.1, inner_steps=1)
    learner.compile(loss=CE)
    inputs, _ = classification_episode()
    support_x, support_y = inputs["support_x"][0], inputs["support_y"][0]
    adapted = learner.adapt(support_x, support_y)
    batch_norm = adapted.layers[0]
    np.testing.assert_allclose(batch_norm.moving_mean.numpy(), support_x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(batch_norm.moving_variance.numpy(), support_x.var(0), rtol=1e-4)
    # Inference with the adapted model equals the learner's own (batch-statistics) view of the support set.
    expected = learner.model.stateless_call(
        [tf.convert_to_tensor(v) for v in adapted.trainable_variables],
        [tf.convert_to_tensor(v) for v in learner.model.non_trainable_variables], support_x, training=True)[0]
    np.testing.assert_allclose(adapted.predict(support_x, verbose=0), expected.numpy(), rtol=1e-4, atol=1e-5)
    assert learner.model.layers[0].moving_mean.numpy().tolist() == [0.0, 0.0, 0.0]


def test_adapt_takes_the_same_steps_as_plain_gradient_descent():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    learner = learners.MAML(model, inner_learning_rate=0.05, inner_steps=1, eval_inner_steps=4)
    learner.compile(loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)).astype("float32"), rng.normal(size=(6, 1)).astype("float32")
    w = model.get_weights()[0]
    for steps in (4, 2):
        expected = w.copy()
        for _ in range(steps):
            expected -= 0.05 * 2.0 * x.T @ (x @ expected - y) / len(x)
        adapted = learner.adapt(x, y) if steps == 4 else learner.adapt(x, y, steps=steps)
        np.testing.assert_allclose(adapted.get_weights()[0], expected, rtol=1e-5)
    np.testing.assert_array_equal(model.get_weights()[0], w)  # the meta-weights are untouched


def test_adapt_layers_words_head_and_all_are_those_of_keras_meta_lite(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh", name="body"),
                              keras.layers.Dense(2, name="out"), keras.layers.Activation("linear", name="logits")])
    head = learners.MAML(model, adapt_layers="head")
    assert head.adapt_layers == ["out"] and head.adapt_mask == [False, False, True, True]
    assert learners.MAML(model, adapt_layers="all").adapt_mask == [True] * 4
    assert learners.Reptile(model, adapt_layers="head").adapt_layers == ["out"]
    assert learners.iMAML(model, adapt_layers="all").adapt_layers is None
    for learner in (head, learners.ANIL(model, adapt_layers="all")):  # ANIL's default is the head, not all
        learner.compile(loss=CE)
        learner.save(tmp_path / "learner.keras")
        assert keras.saving.load_model(tmp_path / "learner.keras").adapt_mask == learner.adapt_mask
    # A layer named "head" is that layer, as every other name.
    named = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="head"), keras.layers.Dense(2, name="d")])
    assert learners.MAML(named, adapt_layers="head").adapt_mask == [True, True, False, False]
    with pytest.raises(ValueError, match="takes no `adapt_layers`"):
        learners.iMAML(model, adapt_layers="head")


def test_anil_adapts_only_the_head():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh", name="body"),
                              keras.layers.Dense(2, name="head")])
    learner = learners.ANIL(model, inner_learning_rate=0.5, inner_steps=3)
    learner.compile(loss=CE)
    assert learner.adapt_layers == ["head"]
    inputs, _ = classification_episode()
    adapted = learner.adapt(inputs["support_x"][0], inputs["support_y"][0])
    np.testing.assert_array_equal(adapted.get_layer("body").get_weights()[0], model.get_layer("body").get_weights()[0])
    assert not np.allclose(adapted.get_layer("head").get_weights()[0], model.get_layer("head").get_weights()[0])


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_save_and_load_round_trip(name, tmp_path):
    keras.utils.set_random_seed(0)
    learner = LEARNERS[name](batch_norm_first_model())
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE, metrics=["sparse_categorical_accuracy"])
    inputs, labels = classification_episode()
    learner.fit(inputs, labels, epochs=2, batch_size=2, verbose=0)
    path = str(tmp_path / f"{name}.keras")
    learner.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is type(learner)
    np.testing.assert_allclose(reloaded.predict_on_batch(inputs), learner.predict_on_batch(inputs), rtol=1e-5,
                               atol=1e-6)
    # More shots than in training: any support size works.
    bigger, _ = classification_episode(seed=3)
    bigger = {k: np.concatenate([v, v], axis=1) for k, v in bigger.items()}
    assert reloaded.predict_on_batch(bigger).shape == (2, 12, 2)
    reloaded.fit(inputs, labels, epochs=1, batch_size=2, verbose=0)  # compiled again on load


def test_meta_sgd_learns_and_saves_its_rates(tmp_path):
    learner = learners.MetaSGD(batch_norm_first_model(), inner_learning_rate=0.1)
    learner.compile(optimizer=keras.optimizers.Adam(0.05), loss=CE)
    inputs, labels = classification_episode()
    learner.fit(inputs, labels, epochs=3, batch_size=2, verbose=0)
    rates = [r.numpy() for r in learner.inner_optimizer.learning_rates]
    assert rates[0].shape == learner.model.trainable_variables[0].shape
    assert not np.allclose(rates[0], 0.1)
    learner.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(reloaded.inner_optimizer.learning_rates[0].numpy(), rates[0])


def test_eval_inner_steps_can_change_after_predict():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    learner = learners.MAML(model, inner_learning_rate=0.5, inner_steps=1)
    learner.compile(loss=CE)
    inputs, _ = classification_episode()
    one = learner.predict(inputs, verbose=0)
    learner.eval_inner_steps = 5
    five = learner.predict(inputs, verbose=0)
    assert not np.allclose(one, five)
    learner.eval_inner_steps = 0
    np.testing.assert_allclose(learner.predict(inputs, verbose=0)[0], model.predict(inputs["query_x"][0], verbose=0),
                               rtol=1e-5)


def test_padded_support_examples_do_not_count_in_the_inner_loss():
    logits = tf.constant([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    padded = inner_loop.mean_loss(CE, tf.constant([0, 1, -1]), logits)
    np.testing.assert_allclose(padded.numpy(), CE(tf.constant([0, 1]), logits[:2]).numpy(), rtol=1e-6)


def test_maml_meta_learns_sinusoid_regression():
    from keras_meta.datasets.sine import SinusoidTasks

    keras.utils.set_random_seed(0)
    learner = learners.MAML(keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, activation="relu"),
                                              keras.layers.Dense(1)]), inner_learning_rate=0.01)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    test = SinusoidTasks(seed=1).dataset(batch_size=50, num_episodes=100)
    before = learner.evaluate(test, verbose=0)
    learner.fit(SinusoidTasks(seed=0).dataset(batch_size=10), epochs=1, steps_per_epoch=300, verbose=0)
    after = learner.evaluate(test, verbose=0)
    assert after < 0.8 * before


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: learners.MAML("not a model"), "built keras.Model"),
        (lambda: learners.MAML(keras.Sequential([keras.layers.Dense(2)])), "built keras.Model"),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), inner_steps=-1),
         "non-negative integer"),
        (lambda: learners.ANIL(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")]),
                               adapt_layers=["head"]), "the model's layers are"),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), inner_clipnorm=0),
         "inner_clipnorm"),
        (lambda: learners.iMAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), regularization=0),
         "regularization"),
        (lambda: learners.LearnableOptimizer(granularity="row"), "granularity"),
        (lambda: learners.LearnableOptimizer(steps=0), "positive integer"),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
                               multi_step_loss_annealing_steps=10), "`multi_step_loss=True` too"),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), first_order=True,
                               first_order_steps=10), "no second order to switch to"),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
                               per_step_inner_learning_rates=True), "pass `learn_inner_learning_rate`"),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
                               per_step_batch_norm=True), "has none"),
        (lambda: learners.MAMLPlusPlus(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
                                       training_steps=0), "training_steps"),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), first_order=True,
                               recompute_inner_steps=True), "no effect with `first_order=True`"),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), parallel_tasks=0),
         '`parallel_tasks` must be "auto" or a positive integer, got 0'),
        (lambda: learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), parallel_tasks="all"),
         "got 'all'"),
        (lambda: learners.iMAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")]),
                                adapt_layers=["d"]), "takes no `adapt_layers`"),
        (lambda: learners.MetaSGD(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
                                  learn_inner_learning_rate="scalar"), "with `granularity`"),
    ],
)
def test_bad_arguments_get_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_mamlpp_fixes_turned_off_take_their_refinements_along():
    def mamlpp(**kwargs):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization(),
                                  keras.layers.Dense(2)])
        return learners.MAMLPlusPlus(model, training_steps=30, inner_steps=2, **kwargs)

    preset = mamlpp()
    assert (preset.multi_step_loss_annealing_steps, preset.first_order_steps) == (3, 10)
    assert preset.inner_optimizer.steps == 2 and len(preset.batch_norm_steps) == 2
    plain = mamlpp(multi_step_loss=False, first_order=True, learn_inner_learning_rate=False)
    assert not plain.multi_step_loss and plain.multi_step_loss_annealing_steps is None
    assert plain.first_order_steps is None
    assert plain.inner_optimizer is None and plain.first_order and len(plain.batch_norm_steps) == 2
    frozen = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                               keras.layers.BatchNormalization(trainable=False), keras.layers.Dense(2)])
    assert learners.MAMLPlusPlus(frozen, training_steps=30).batch_norm_steps == []


@pytest.mark.parametrize("name", ["maml", "imaml", "reptile"])
def test_parallel_tasks_change_nothing_but_speed(name, monkeypatch):
    map_fn, at_once = tf.map_fn, []

    def recording_map_fn(*args, parallel_iterations=None, **kwargs):
        at_once.append(parallel_iterations)
        return map_fn(*args, parallel_iterations=parallel_iterations, **kwargs)

    monkeypatch.setattr(tf, "map_fn", recording_map_fn)
    monkeypatch.setattr(gradient_based, "usable_cores", lambda: 4)  # "auto": 4 tasks at once
    results = []
    for parallel_tasks in (1, 3, "auto"):
        keras.utils.set_random_seed(0)
        learner = LEARNERS[name](batch_norm_first_model(), parallel_tasks=parallel_tasks)
        learner.compile(optimizer=keras.optimizers.SGD(0.1), loss=CE)
        inputs, labels = classification_episode(num_tasks=5, seed=1)
        at_once.clear()
        learner.train_on_batch(inputs, labels)
        results.append((learner.get_weights(), learner.predict_on_batch(inputs)))
        assert set(at_once) == {4 if parallel_tasks == "auto" else parallel_tasks}, at_once
    weights_1, predictions_1 = results[0]
    for weights, predictions in results[1:]:
        assert len(weights) == len(weights_1) > 0
        for one, other in zip(weights_1, weights, strict=True):
            np.testing.assert_allclose(other, one, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(predictions, predictions_1, rtol=1e-5, atol=1e-6)


def test_auto_parallel_tasks_is_a_task_per_core_on_cpus_and_one_on_accelerators(monkeypatch):
    assert LEARNERS["maml"](batch_norm_first_model()).parallel_tasks == "auto"  # the default
    monkeypatch.setattr(gradient_based, "usable_cores", lambda: 2)
    assert gradient_based.auto_parallel_tasks() == 2
    monkeypatch.setattr(gradient_based, "usable_cores", lambda: 64)  # memory grows with every task at once
    assert gradient_based.auto_parallel_tasks() == gradient_based.MAX_AUTO_PARALLEL_TASKS == 8
    devices = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["/device:GPU:0"] if kind == "GPU" else devices(kind))
    assert gradient_based.auto_parallel_tasks() == 1


def test_missing_loss_and_bad_support_sets_get_clear_errors():
    learner = learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    inputs, _ = classification_episode()
    learner.compile(optimizer="adam")
    with pytest.raises(ValueError, match="single `loss=`"):
        learner.predict_on_batch(inputs)
    learner.compile(optimizer="adam", loss=CE)
    with pytest.raises(ValueError, match="labels >= 0"):
        learner.adapt(inputs["support_x"][0], np.array([0, -1, 0, 1]))
    with pytest.raises(ValueError, match="one task"):
        learner.adapt(inputs["support_x"], inputs["support_y"])


def test_nan_inner_loss_is_reported():
    learner = learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    learner.compile(optimizer="adam", loss=CE)
    inputs, labels = classification_episode()
    inputs["support_x"][0, 0, 0] = np.nan
    before = [w.copy() for w in learner.get_weights()]
    with pytest.raises(learners.NonFiniteError, match="Training step 1 had non-finite support inputs"):
        learner.fit(inputs, labels, epochs=1, batch_size=2, verbose=0)
    for old, new in zip(before, learner.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_nan_inner_loss_outside_training_is_reported():
    learner = learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    learner.compile(optimizer="adam", loss=CE)
    inputs, labels = classification_episode()
    inputs["support_x"][0, 0, 0] = np.inf
    message = "The inner-loop loss on a task's support set is NaN or infinite"
    with pytest.raises(learners.NonFiniteError, match=message):
        learner.predict(inputs, batch_size=2, verbose=0)
    with pytest.raises(learners.NonFiniteError, match=message):
        learner.evaluate(inputs, labels, batch_size=2, verbose=0)
    with pytest.raises(learners.NonFiniteError, match="`support_x` holds NaN or infinite values"):
        learner.adapt(inputs["support_x"][0], inputs["support_y"][0])
    diverging = learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]), inner_learning_rate=1e30,
                              inner_steps=3)
    diverging.compile(loss="mse")  # the first step's weights square past float32's range in the next loss
    with pytest.raises(learners.NonFiniteError, match=message):
        diverging.adapt(np.ones((4, 3), "float32"), np.full((4, 1), 10.0, "float32"))


def test_inner_gradient_clipping_bounds_each_step():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    learner = learners.MAML(model, inner_learning_rate=1.0, inner_steps=1, inner_clipnorm=0.5)
    learner.compile(loss="mse")
    x, y = np.ones((4, 3), "float32"), np.full((4, 1), 100.0, "float32")
    adapted = learner.adapt(x, y)
    change = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(adapted.get_weights(), model.get_weights(), strict=True)))
    np.testing.assert_allclose(change, 0.5, rtol=1e-5)  # lr * clipnorm, the raw gradient is far larger


class TwoTower(keras.Model):
    """A subclassed model with Dropout and an LSTM."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lstm = keras.layers.LSTM(4)
        self.dropout = keras.layers.Dropout(0.1)
        self.head = keras.layers.Dense(2)

    def call(self, x, training=False):
        return self.head(self.dropout(self.lstm(x), training=training))


def test_subclassed_models_with_dropout_and_lstm_meta_train():
    model = TwoTower()
    model(np.zeros((1, 5, 3), "float32"))
    learner = learners.MAML(model, inner_learning_rate=0.1, inner_steps=2)
    learner.compile(optimizer="adam", loss=CE)
    rng = np.random.default_rng(0)
    inputs = {"support_x": rng.normal(size=(2, 4, 5, 3)).astype("float32"),
              "support_y": np.tile(np.array([0, 1, 0, 1], np.int32), (2, 1)),
              "query_x": rng.normal(size=(2, 6, 5, 3)).astype("float32")}
    labels = np.tile(np.array([0, 1, 0, 1, 0, 1], np.int32), (2, 1))
    history = learner.fit(inputs, labels, epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert learner.predict_on_batch(inputs).shape == (2, 6, 2)
    assert learner.adapt(inputs["support_x"][0], inputs["support_y"][0]).predict(
        inputs["query_x"][0], verbose=0).shape == (6, 2)


@pytest.mark.parametrize("optimizer", [
    keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1, momentum=0.9),
    keras.optimizers.SGD(0.1, momentum=0.5, nesterov=True),
    keras.optimizers.Adam(0.05, beta_1=0.0), keras.optimizers.Adam(0.05, amsgrad=True),
    keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)),
], ids=["sgd", "momentum", "nesterov", "adam", "amsgrad", "adam-schedule"])
def test_functional_inner_optimizer_makes_the_keras_updates(optimizer):
    from keras_meta.learners.inner_optimizers import functional_optimizer

    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in start] for _ in range(4)]
    rule = functional_optimizer(optimizer)
    variables = [keras.Variable(w) for w in start]
    optimizer.build(variables)
    params, state = [tf.constant(w) for w in start], rule.init(start)
    for step_grads in grads:
        optimizer.apply([tf.constant(g) for g in step_grads], variables)
        params, state = rule.step(params, [tf.constant(g) for g in step_grads], state)
    for variable, param, first in zip(variables, params, start, strict=True):
        assert np.abs(variable.numpy() - first).max() > 1e-3  # the steps moved the weights
        np.testing.assert_allclose(param.numpy(), variable.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer, message", [
    (keras.optimizers.RMSprop(0.1), "must be one of"),
    (keras.optimizers.SGD(0.1, clipnorm=1.0), "clipnorm"),
    (keras.optimizers.Adam(0.1, weight_decay=0.01), "weight_decay"),
])
def test_reptile_refuses_inner_optimizers_it_cannot_run(optimizer, message):
    with pytest.raises(ValueError, match=message):
        learners.Reptile(batch_norm_first_model(), inner_optimizer=optimizer)


def test_reptile_inner_optimizer_survives_saving(tmp_path):
    learner = learners.Reptile(batch_norm_first_model(), inner_optimizer=keras.optimizers.SGD(0.3, momentum=0.5))
    learner.compile(optimizer=keras.optimizers.SGD(1.0), loss=CE)
    learner.save(tmp_path / "reptile.keras")
    reloaded = keras.saving.load_model(tmp_path / "reptile.keras")
    config = reloaded.inner_optimizer.get_config()
    assert type(reloaded.inner_optimizer).__name__ == "SGD"
    assert (config["learning_rate"], config["momentum"]) == pytest.approx((0.3, 0.5))


def tensor_peak_mb(learner, inputs, labels):
    """The peak of TensorFlow's CPU tensor memory during one (already traced) training step, in MiB."""
    learner.train_on_batch(inputs, labels)
    tf.config.experimental.reset_memory_stats("CPU:0")
    learner.train_on_batch(inputs, labels)
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20


def test_recomputed_inner_steps_keep_memory_flat_as_the_steps_grow():
    """Second-order MAML keeps every inner step's activations; recomputing them keeps one step's at a time."""
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                              keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    rng = np.random.default_rng(0)
    inputs = {"support_x": rng.random((2, 25, 16, 16, 1), np.float32),
              "support_y": np.tile(np.repeat(np.arange(5, dtype=np.int32), 5), (2, 1)),
              "query_x": rng.random((2, 5, 16, 16, 1), np.float32)}
    labels = np.tile(np.arange(5, dtype=np.int32), (2, 1))
    peaks = {}
    for recompute in (False, True):
        for steps in (1, 8):
            learner = learners.MAML(model, inner_learning_rate=0.01, inner_steps=steps,
                                    recompute_inner_steps=recompute,
                                    parallel_tasks=1)  # one task's memory: tasks at once overlap as they are scheduled
            learner.compile(optimizer=keras.optimizers.SGD(0.0), loss=CE)
            peaks[recompute, steps] = tensor_peak_mb(learner, inputs, labels)
    assert peaks[False, 8] > 2.5 * peaks[False, 1], peaks  # the growth that recomputation removes
    # Recomputed, 8 steps hold about what 1 step holds (the order the ops run in, and what earlier tests left in
    # the allocator, move each peak by a MiB or two), far below the 8 steps kept.
    assert peaks[True, 8] < 1.5 * peaks[True, 1], peaks
    assert peaks[True, 8] < 0.6 * peaks[False, 8], peaks


def test_an_episode_refused_while_tracing_leaves_strategies_usable():
    # An error inside `tf.map_fn` while tracing used to leave a caching device on the global variable scope, and
    # every later `strategy.scope()` of the process failed with "Caching devices is not yet supported".
    learner = learners.MAML(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    learner.compile(optimizer="sgd", loss=CE)
    inputs, labels = classification_episode()
    wrong = dict(inputs, support_x=np.zeros((2, 4, 5), "float32"), query_x=np.zeros((2, 6, 5), "float32"))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        learner.train_on_batch(wrong, labels)
    assert tf.compat.v1.get_variable_scope().caching_device is None
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        variable = tf.Variable(1.0)
    assert float(variable.numpy()) == 1.0


def test_map_fn_restores_the_variable_scope_when_its_function_raises():
    from keras_meta._map import map_fn

    def refuse(element):
        raise ValueError("refused")

    @tf.function
    def mapped(x):
        return map_fn(refuse, x)

    with pytest.raises(ValueError, match="refused"):
        mapped(tf.zeros([2, 3]))
    assert tf.compat.v1.get_variable_scope().caching_device is None
    assert map_fn(lambda x: x + 1, tf.constant([1, 2])).numpy().tolist() == [2, 3]
