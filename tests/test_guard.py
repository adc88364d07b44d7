"""The update guard: a non-finite step changes no weight, optimizer slot or batch-norm statistic, for every learner."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta
from keras_meta import learners
from keras_meta.learners import NonFiniteError

WAYS, SHOTS, QUERIES, TASKS = 3, 1, 2, 2


def make_learner(name, backbone, on_non_finite="raise"):
    if backbone == "mlp":
        shape = (8,)

        def embedding():
            return keras_meta.models.mlp(shape, (16,))

        def classifier():
            return keras_meta.models.mlp(shape, (16,), num_outputs=WAYS)
    else:
        shape = (12, 12, 1)

        def embedding():
            return keras_meta.models.conv4(shape, filters=4, blocks=2)

        def classifier():
            return keras_meta.models.conv4(shape, filters=4, blocks=2, num_classes=WAYS)
    gradient = {
        "MAML": lambda: learners.MAML(classifier(), inner_learning_rate=0.1),
        "FOMAML": lambda: learners.MAML(classifier(), inner_learning_rate=0.1, first_order=True),
        "MetaSGD": lambda: learners.MetaSGD(classifier()),
        "ANIL": lambda: learners.ANIL(classifier()),
        "Reptile": lambda: learners.Reptile(classifier(), inner_steps=2),
        "iMAML": lambda: learners.iMAML(classifier(), inner_steps=2, cg_steps=2),
    }
    embedding_based = {
        "PrototypicalNetwork": lambda: learners.PrototypicalNetwork(embedding()),
        "MatchingNetwork": lambda: learners.MatchingNetwork(embedding()),
        "R2D2": lambda: learners.R2D2(embedding()),
        "MetaNetwork": lambda: learners.MetaNetwork(embedding(), ways=WAYS),
        "EmbeddingMetaNetwork": lambda: learners.EmbeddingMetaNetwork(embedding()),
    }
    learner = {**gradient, **embedding_based}[name]()
    learner.on_non_finite = on_non_finite
    return learner, shape


NAMES = ["MAML", "FOMAML", "MetaSGD", "ANIL", "Reptile", "iMAML", "PrototypicalNetwork", "MatchingNetwork", "R2D2",
         "MetaNetwork", "EmbeddingMetaNetwork"]


def episodes(shape, seed=0):
    rng = np.random.default_rng(seed)
    support_y = np.tile(np.repeat(np.arange(WAYS), SHOTS), (TASKS, 1)).astype("int32")
    query_y = np.tile(np.repeat(np.arange(WAYS), QUERIES), (TASKS, 1)).astype("int32")
    x = {"support_x": rng.normal(size=(TASKS, WAYS * SHOTS, *shape)).astype("float32"), "support_y": support_y,
         "query_x": rng.normal(size=(TASKS, WAYS * QUERIES, *shape)).astype("float32")}
    return x, query_y


def corrupt(x, key, value=np.nan):
    x = dict(x)
    x[key] = x[key].copy()
    x[key].reshape(-1)[5] = value
    return x


def state_of(learner):
    """Every value a step may change: weights (and batch-norm statistics), optimizer slots and iteration count."""
    return [np.array(v.numpy()) for v in learner.weights + list(learner.optimizer.variables)]


def compiled(name, backbone, on_non_finite="raise", loss=None, warm=True):
    learner, shape = make_learner(name, backbone, on_non_finite)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["sparse_categorical_accuracy"])
    x, y = episodes(shape)
    if warm:
        learner.train_on_batch(x, y)  # one good step: the optimizer has slots and an iteration to keep
    else:
        learner.optimizer.build(learner.trainable_variables)
    return learner, x, y


@pytest.mark.parametrize("name, backbone", [
    pytest.param(n, b, id=f"{n}-{b}") for n in NAMES for b in ("mlp", "conv4")])
def test_a_non_finite_input_changes_nothing_and_is_named(name, backbone):
    learner, x, y = compiled(name, backbone)
    before = state_of(learner)
    for key, reason in [("query_x", "query inputs"), ("support_x", "support inputs")]:
        with pytest.raises(NonFiniteError, match=f"Training step 2 had non-finite {reason}"):
            learner.train_on_batch(corrupt(x, key), y)
        after = state_of(learner)
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after, strict=True)), (name, key)
    learner.on_non_finite = "skip"
    logs = learner.train_on_batch(corrupt(x, "query_x", np.inf), y, return_dict=True)
    assert logs["skipped_steps"] == 1.0 and logs["loss"] == 0.0
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, state_of(learner), strict=True))
    logs = learner.train_on_batch(x, y, return_dict=True)  # a good step after skipped ones still trains
    assert logs["skipped_steps"] == 0.0 and np.isfinite(logs["loss"])
    assert int(learner.optimizer.iterations.numpy()) == 2
    assert all(np.isfinite(w).all() for w in state_of(learner))


def finite_loss_nan_gradient(y_true, y_pred):
    """Cross-entropy plus `sqrt(0)`: a finite loss whose gradient is NaN."""
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    return loss + tf.sqrt(tf.reduce_sum(0.0 * y_pred, axis=-1))


@pytest.mark.parametrize("name", ["MAML", "Reptile", "PrototypicalNetwork", "R2D2"])
def test_non_finite_gradients_and_loss_are_named(name):
    learner, x, y = compiled(name, "mlp", loss=finite_loss_nan_gradient, warm=False)
    before = state_of(learner)
    with pytest.raises(NonFiniteError, match="Training step 1 had non-finite .*gradients"):
        learner.train_on_batch(x, y)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, state_of(learner), strict=True))

    learner, x, y = compiled(name, "mlp")
    before = state_of(learner)
    with pytest.raises(NonFiniteError, match="Training step 2 had non-finite .*loss"):
        learner.train_on_batch(corrupt(x, "query_x", 3e38) | {"query_x": x["query_x"] * 3e38}, y)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, state_of(learner), strict=True))


def test_fit_stops_at_the_step_and_skip_counts_in_the_logs():
    learner, x, y = compiled("PrototypicalNetwork", "conv4")
    bad = corrupt(x, "support_x")
    batches = [(x, y), (x, y), (bad, y), (x, y)]
    data = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=(
        {k: tf.TensorSpec(v.shape, v.dtype) for k, v in x.items()}, tf.TensorSpec(y.shape, y.dtype)))
    with pytest.raises(NonFiniteError, match="Training step 4 had non-finite support inputs"):
        learner.fit(data, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert int(learner.optimizer.iterations.numpy()) == 3
    learner.on_non_finite = "skip"
    history = learner.fit(data, epochs=2, verbose=0)
    assert history.history["skipped_steps"] == [1.0, 1.0]
    assert np.isfinite(history.history["loss"]).all()
    assert int(learner.optimizer.iterations.numpy()) == 3 + 2 * 3


def test_steps_per_execution_stops_updating_after_a_non_finite_step():
    learner, shape = make_learner("MAML", "mlp")
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    steps_per_execution=4)
    x, y = episodes(shape)
    batches = [(x, y), (corrupt(x, "query_x"), y), (x, y), (x, y)]
    data = tf.data.Dataset.from_generator(lambda: iter(batches), output_signature=(
        {k: tf.TensorSpec(v.shape, v.dtype) for k, v in x.items()}, tf.TensorSpec(y.shape, y.dtype)))
    with pytest.raises(NonFiniteError, match="Training step 2 had non-finite query inputs"):
        learner.fit(data, verbose=0)
    assert int(learner.optimizer.iterations.numpy()) == 1  # the steps after it in the execution changed nothing


def test_on_non_finite_is_checked_and_saved(tmp_path):
    with pytest.raises(ValueError, match="on_non_finite"):
        make_learner("MAML", "mlp", on_non_finite="ignore")
    learner, shape = make_learner("PrototypicalNetwork", "mlp", on_non_finite="skip")
    path = str(tmp_path / "learner.keras")
    learner.save(path)
    assert keras.saving.load_model(path).on_non_finite == "skip"


ONEDNN_OFF = """
import os, sys
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
sys.path.insert(0, {tests!r})
import numpy as np
import test_guard
from keras_meta.learners import NonFiniteError
for name in test_guard.NAMES:
    learner, x, y = test_guard.compiled(name, "mlp")
    before = test_guard.state_of(learner)
    for key in ("query_x", "support_x"):
        try:
            learner.train_on_batch(test_guard.corrupt(x, key), y)
            raise SystemExit(name + ": no error for a NaN in " + key)
        except NonFiniteError:
            pass
    assert all(np.array_equal(a, b) for a, b in zip(before, test_guard.state_of(learner))), name
print("checked", len(test_guard.NAMES))
"""


def test_the_guard_holds_with_onednn_off():
    script = ONEDNN_OFF.format(tests=os.path.dirname(__file__))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checked {len(NAMES)}" in done.stdout


def test_the_guard_holds_under_a_mirrored_strategy(tmp_path):
    """A NaN in one replica's share stops or skips the step on both replicas; nothing changes on either."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard_mirrored.py")
    result = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "guard_mirrored.json") as f:
        report = json.load(f)
    assert sorted(report) == ["maml", "protonet", "r2d2", "reptile"]
    for name, outcome in report.items():
        assert outcome["raised"] is not None, name
        assert "Training step 2 had non-finite query inputs" in outcome["raised"], name
        assert outcome["unchanged_after_raise"] and outcome["unchanged_after_skip"], name
        assert outcome["skipped"] == 1.0, name
        assert outcome["trains_after"] and outcome["finite"], name


def test_a_graph_cycle_error_of_a_training_step_says_what_to_do():
    from keras_meta.learners.base import explained_graph_cycles
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"260 nodes in a cycle(.|\n)*use_bias=False"):
        with explained_graph_cycles():
            raise tf.errors.InvalidArgumentError(None, None, "260 nodes in a cycle")
    with pytest.raises(tf.errors.InvalidArgumentError, match="^other$"):
        with explained_graph_cycles():
            raise tf.errors.InvalidArgumentError(None, None, "other")



def test_fit_and_train_on_batch_explain_a_graph_cycle(monkeypatch):
    def cyclic_step(*args, **kwargs):
        raise tf.errors.InvalidArgumentError(None, None, "12 nodes in a cycle")

    learner, x, y = compiled("MAML", "mlp", warm=False)
    for method in ("fit", "train_on_batch"):
        monkeypatch.setattr(keras.Model, method, cyclic_step)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"12 nodes in a cycle(.|\n)*TF_ENABLE_ONEDNN_OPTS"):
            getattr(learner, method)(x, y)
