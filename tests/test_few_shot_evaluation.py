"""`keras_meta.callbacks.FewShotEvaluation`: the scores it logs, and Keras' callbacks that read them."""

import glob
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_meta
from keras_meta.callbacks import FewShotEvaluation
from keras_meta.data import EpisodeSampler
from keras_meta.evaluation import evaluate_episodes, evaluate_few_shot

KEY, CI_KEY = "val_5way_1shot_accuracy", "val_5way_1shot_ci95"
EPISODES = dict(ways=5, shots=1, queries=5, num_episodes=20, seed=3)


@pytest.fixture(scope="module")
def blobs():
    """30 classes of 10 noisy examples around Gaussian centres: classes 0-19 to train on, 20-29 held out."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16))
    y = np.repeat(np.arange(30), 10)
    x = (centres[y] + 1.2 * rng.normal(size=(len(y), 16))).astype("float32")
    train = EpisodeSampler(x[y < 20], y[y < 20], ways=5, shots=1, queries=5, seed=0)
    return train, x[y >= 20], y[y >= 20] - 20


def learner(learning_rate=0.1):
    keras.utils.set_random_seed(0)
    model = keras_meta.learners.PrototypicalNetwork(keras_meta.models.mlp((16,), hidden_units=(32,)))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class Recorder(keras.callbacks.Callback):
    """Placed after FewShotEvaluation: what it logged, and `evaluate_few_shot` of the same weights."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.logged, self.fresh = x, y, [], []

    def on_epoch_end(self, epoch, logs=None):
        self.logged.append((logs.get(KEY), logs.get(CI_KEY)))
        score = evaluate_few_shot(self.model, self.x, self.y, verbose=0, **EPISODES)
        self.fresh.append((score.accuracy, score.ci95))


def test_logged_scores_are_evaluate_few_shot_of_that_epoch(blobs):
    train, test_x, test_y = blobs
    model, recorder = learner(), Recorder(test_x, test_y)
    history = model.fit(train.dataset(batch_size=4), epochs=3, steps_per_epoch=3, verbose=0,
                        callbacks=[FewShotEvaluation(test_x, test_y, **EPISODES), recorder])
    assert recorder.logged == recorder.fresh  # exactly: the same episodes, batches and weights
    assert len(set(recorder.fresh)) == 3  # training moved the scores, so none was a stale copy
    assert history.history[KEY] == [accuracy for accuracy, _ in recorder.fresh]
    assert history.history[CI_KEY] == [ci95 for _, ci95 in recorder.fresh]
    assert all(ci95 > 0 for _, ci95 in recorder.fresh)


def test_episode_dataset_names_the_keys_from_its_episodes(blobs):
    train, test_x, test_y = blobs
    episodes = EpisodeSampler(test_x, test_y, ways=4, shots=2, queries=3, seed=1).dataset(batch_size=6,
                                                                                          num_episodes=15)
    model = learner()
    few_shot = FewShotEvaluation(episodes=episodes)
    assert (few_shot.accuracy_key, few_shot.ci95_key) == ("val_4way_2shot_accuracy", "val_4way_2shot_ci95")
    history = model.fit(train.dataset(batch_size=4), epochs=1, steps_per_epoch=2, verbose=0, callbacks=[few_shot])
    expected = evaluate_episodes(model, episodes, verbose=0)
    assert history.history["val_4way_2shot_accuracy"] == [expected.accuracy]
    assert history.history["val_4way_2shot_ci95"] == [expected.ci95]
    assert FewShotEvaluation(episodes=episodes, name="held_out").accuracy_key == "val_held_out_accuracy"


def test_every_evaluates_first_every_nth_and_last_epoch_and_carries_scores_between(blobs, monkeypatch):
    train, test_x, test_y = blobs
    calls = []

    def counted(model, episodes, verbose):
        calls.append(len(calls))
        return evaluate_episodes(model, episodes, verbose)

    monkeypatch.setattr(keras_meta.callbacks, "evaluate_episodes", counted)
    model, recorder = learner(), Recorder(test_x, test_y)
    history = model.fit(train.dataset(batch_size=4), epochs=5, steps_per_epoch=3, verbose=0,
                        callbacks=[FewShotEvaluation(test_x, test_y, every=2, **EPISODES), recorder])
    assert len(calls) == 4  # epochs 1, 2, 4 and 5 (the last), counted from 1
    fresh = [accuracy for accuracy, _ in recorder.fresh]
    assert history.history[KEY] == [fresh[0], fresh[1], fresh[1], fresh[3], fresh[4]]
    assert fresh[2] != fresh[1]  # epoch 3 did change the learner: its logged score is the carried one


def test_model_checkpoint_keeps_the_best_few_shot_weights(blobs, tmp_path):
    train, test_x, test_y = blobs
    path = str(tmp_path / "best.weights.h5")
    model = learner()
    best = keras.callbacks.ModelCheckpoint(path, monitor=KEY, mode="max", save_best_only=True,
                                           save_weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a missing monitor value would warn
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        history = model.fit(train.dataset(batch_size=4), epochs=5, steps_per_epoch=3, verbose=0,
                            callbacks=[FewShotEvaluation(test_x, test_y, every=2, **EPISODES), best])
    scores = history.history[KEY]
    assert scores[2] == scores[1] and scores[-1] < max(scores)  # a carried score, and a best before the end
    restored = learner()
    restored(next(iter(train.dataset(batch_size=1)))[0])
    restored.load_weights(path)
    assert evaluate_few_shot(restored, test_x, test_y, verbose=0, **EPISODES).accuracy == max(scores)


def test_early_stopping_stops_on_the_few_shot_accuracy(blobs):
    train, test_x, test_y = blobs
    model = learner(learning_rate=0.0)  # the accuracy never improves
    stop = keras.callbacks.EarlyStopping(monitor=KEY, mode="max", patience=2)
    history = model.fit(train.dataset(batch_size=4), epochs=20, steps_per_epoch=1, verbose=0,
                        callbacks=[FewShotEvaluation(test_x, test_y, **EPISODES), stop])
    assert len(history.history[KEY]) == 3 and stop.stopped_epoch == 2


def test_tensorboard_writes_the_few_shot_scalar(blobs, tmp_path):
    train, test_x, test_y = blobs
    model = learner()
    history = model.fit(train.dataset(batch_size=4), epochs=2, steps_per_epoch=2, verbose=0,
                        callbacks=[FewShotEvaluation(test_x, test_y, **EPISODES),
                                   keras.callbacks.TensorBoard(log_dir=str(tmp_path))])
    written = {}
    for path in glob.glob(os.path.join(tmp_path, "validation", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "epoch_5way_1shot_accuracy":
                    written[event.step] = float(tf.make_ndarray(value.tensor))
    assert sorted(written) == [0, 1]
    np.testing.assert_allclose([written[0], written[1]], history.history[KEY], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), r"needs held-out examples `x` and labels `y`"),
        (dict(x="test_x", ways=5), r"needs held-out examples `x` and labels `y`"),
        (dict(x="test_x", y="test_y"), r"Give the `ways`"),
        (dict(x="test_x", y="test_y", ways=0), r"`ways` must be a positive integer, got 0"),
        (dict(x="test_x", y="test_y", ways=11, queries=1), r"ways=11 but only 10 classes"),
        (dict(x="test_x", y="test_y", ways=5, shots=5, queries=6), r"examples per class"),
        (dict(x="test_x", y="test_y", ways=5, num_episodes=0), r"`num_episodes` must be a positive integer"),
        (dict(x="test_x", y="test_y", ways=5, queries=5, every=0), r"`every` must be a positive integer, got 0"),
        (dict(x="test_x", y="test_y", ways=5, queries=5, every=1.5), r"`every` must be a positive integer"),
        (dict(x="test_x", y="test_y", ways=5, queries=5, verbose=2), r"`verbose` must be 0"),
        (dict(x="test_x", y="test_y", ways=5, queries=5, name=""), r"`name` must be a non-empty string"),
        (dict(x="test_x", y="test_y", episodes="fixed"), r"either held-out `x, y` or `episodes`, not both"),
        (dict(episodes="fixed", ways=5), r"with `episodes`, their batches fix the ways"),
        (dict(episodes="stream"), r"`episodes` is infinite"),
        (dict(episodes="list"), r"must be a finite `tf.data.Dataset`.*got list"),
        (dict(episodes="variable"), r"differ in ways or shots.*give a name"),
    ],
)
def test_bad_arguments_raise(blobs, kwargs, message):
    _, test_x, test_y = blobs
    sampler = EpisodeSampler(test_x, test_y, ways=3, shots=1, queries=2, seed=0)
    variable = EpisodeSampler(test_x, test_y, ways=(2, 4), shots=1, queries=2, seed=0)
    values = {"test_x": test_x, "test_y": test_y, "fixed": sampler.dataset(batch_size=2, num_episodes=4),
              "stream": sampler.dataset(batch_size=2), "list": list(sampler.dataset(batch_size=2, num_episodes=2)),
              "variable": variable.dataset(batch_size=8, num_episodes=8)}
    kwargs = {key: values.get(value, value) if isinstance(value, str) else value for key, value in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        FewShotEvaluation(**kwargs)
