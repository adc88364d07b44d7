"""Callbacks for meta-training runs.

`FewShotEvaluation` scores the learner on a fixed set of held-out N-way K-shot
episodes during `fit` and puts the accuracy and its 95% interval into the
epoch logs, where `History`, `TensorBoard`, `CSVLogger`, `ModelCheckpoint`,
`EarlyStopping` and `ReduceLROnPlateau` find it; put it first in `callbacks=`.

`BackupAndRestore` is Keras' callback of that name for episode streams: a run
killed at any point and started again with the same command continues from
its last completed epoch with the same weights, optimizer state *and* the
same episodes, so it ends bit-identical to a run that was never interrupted
(Keras' own callback restarts the episode stream at its first episode). A
backup being written when the process dies never replaces the last good one.

Example:

>>> import keras_meta
>>> few_shot = keras_meta.callbacks.FewShotEvaluation(test_x, test_y, ways=5, shots=1)  # doctest: +SKIP
>>> best = keras.callbacks.ModelCheckpoint("best.keras", monitor="val_5way_1shot_accuracy", mode="max",
...                                        save_best_only=True)  # doctest: +SKIP
>>> learner.fit(train, epochs=50, steps_per_epoch=100, callbacks=[few_shot, best])  # doctest: +SKIP
>>> backup = keras_meta.callbacks.BackupAndRestore("runs/backup")
>>> learner.fit(sampler.dataset(batch_size=32), epochs=50, steps_per_epoch=100,
...             callbacks=[backup])  # doctest: +SKIP
"""

import json
import os
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data.checks import integer_argument
from keras_meta.data.episode_format import SUPPORT_Y
from keras_meta.data.episodes import _size_range
from keras_meta.evaluation import evaluate_episodes, few_shot_episodes

_POINTER = "latest.json"


class FewShotEvaluation(keras.callbacks.Callback):
    """Accuracy on a fixed set of held-out few-shot episodes, in the epoch logs of `fit`.

    Adds `val_<name>_accuracy` and `val_<name>_ci95` (the half-width of the
    95% interval) to the epoch logs, `<name>` being e.g. `5way_1shot`. Put it
    *first* in `callbacks=`: Keras calls callbacks in list order with one logs
    dict, so only the callbacks after it (and `History`, the progress bar)
    see the scores. Give `ModelCheckpoint`, `EarlyStopping` and
    `ReduceLROnPlateau` `mode="max"` for the accuracy.

    Args:
        x, y: held-out examples and integer labels (classes unseen in training)
            to draw the episodes from, as `evaluate_few_shot` does.
        ways, shots, queries, num_episodes, seed, batch_size: the episodes, as
            in `keras_meta.evaluation.evaluate_few_shot`.
        episodes: instead of `x, y`, a finite episode dataset that yields the
            same episodes on every pass, e.g.
            `sampler.dataset(batch_size=50, num_episodes=600)`.
        name: the `<name>` of the log keys; by default `<ways>way_<shots>shot`
            (read from the first batch when `episodes` is given).
        every: evaluate every `every` epochs. The first epoch of each `fit`,
            every epoch `e` (counted from 1) with `e % every == 0`, and the
            last epoch are evaluated; the epochs between carry the last scores,
            so every epoch's logs have the keys (`ModelCheckpoint` with
            `save_best_only` then saves only after an improvement; the patience
            of `EarlyStopping` counts epochs: use a multiple of `every`).
        verbose: 1 shows a progress bar and the scores of each evaluation.

    The episodes are built once, so every evaluation sees the same ones; the
    scores are those of `evaluate_episodes(learner, episodes)` at the end of
    the epoch (also under a `tf.distribute` strategy, where each episode
    counts once).

    Example:

    >>> import keras, numpy as np, keras_meta
    >>> x = np.random.default_rng(0).normal(size=(200, 8)).astype("float32")
    >>> y = np.repeat(np.arange(20), 10)
    >>> learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.mlp((8,), hidden_units=(16,)))
    >>> learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> train = keras_meta.data.EpisodeSampler(x[:100], y[:100], ways=5, shots=1, queries=5).dataset(4)
    >>> few_shot = keras_meta.callbacks.FewShotEvaluation(x[100:], y[100:], ways=5, queries=5, num_episodes=20)
    >>> history = learner.fit(train, epochs=2, steps_per_epoch=3, callbacks=[few_shot], verbose=0)
    >>> len(history.history["val_5way_1shot_accuracy"])
    2
    """

    def __init__(self, x=None, y=None, ways=None, shots=1, queries=15, num_episodes=100, seed=0, batch_size=None,
                 episodes=None, name=None, every=1, verbose=0):
        super().__init__()
        if episodes is not None:
            if x is not None or y is not None:
                raise ValueError("Give either held-out `x, y` or `episodes`, not both: `episodes` already holds "
                                 "the evaluation episodes.")
            if ways is not None:
                raise ValueError("`ways` describes episodes drawn from `x, y`; with `episodes`, their batches "
                                 "fix the ways (name the logs with `name=`).")
            self.episodes = _checked_episodes(episodes)
        else:
            if x is None or y is None:
                raise ValueError("FewShotEvaluation needs held-out examples `x` and labels `y` (with `ways=`), "
                                 "or a finite episode dataset `episodes=`.")
            if ways is None:
                raise ValueError("Give the `ways` of the evaluation episodes, e.g. `ways=5`.")
            self.episodes = few_shot_episodes(x, y, ways, shots, queries, num_episodes, seed, batch_size)
            if name is None:
                name = f"{_range_name(*_size_range('ways', ways))}way_{_range_name(*_size_range('shots', shots))}shot"
        if name is None:
            name = _name_from_episodes(self.episodes)
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty string such as '5way_1shot', got {name!r}.")
        self.every = integer_argument("every", every)
        if verbose not in (0, 1):
            raise ValueError(f"`verbose` must be 0 (silent) or 1 (progress bar and scores), got {verbose!r}.")
        self.verbose = int(verbose)
        self.name = name
        self.accuracy_key, self.ci95_key = f"val_{name}_accuracy", f"val_{name}_ci95"
        self.result = None  # the last `EpisodeAccuracy`
        self._first_epoch = True

    def on_train_begin(self, logs=None):
        self.result = None
        self._first_epoch = True

    def on_epoch_end(self, epoch, logs=None):
        last = (self.params or {}).get("epochs")
        if self._first_epoch or (epoch + 1) % self.every == 0 or (last is not None and epoch + 1 >= last):
            self.result = evaluate_episodes(self.model, self.episodes, verbose=self.verbose)
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.name} accuracy {self.result.accuracy:.2%} +- "
                      f"{self.result.ci95:.2%} over {self.result.num_episodes} episodes")
        self._first_epoch = False
        if logs is not None:
            logs[self.accuracy_key] = self.result.accuracy
            logs[self.ci95_key] = self.result.ci95


def _range_name(low, high):
    return str(low) if low == high else f"{low}-{high}"


def _checked_episodes(episodes):
    if not isinstance(episodes, tf.data.Dataset):
        raise ValueError(f"`episodes` must be a finite `tf.data.Dataset` of episode batches, got "
                         f"{type(episodes).__name__}; e.g. `sampler.dataset(batch_size=50, num_episodes=600)`.")
    if int(episodes.cardinality()) < 0:
        raise ValueError("`episodes` is infinite (or of unknown size); give a fixed set such as "
                         "`sampler.dataset(batch_size=50, num_episodes=600)`.")
    spec = episodes.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3) or not isinstance(spec[0], dict) \
            or SUPPORT_Y not in spec[0]:
        raise ValueError("`episodes` must yield `(inputs, labels)` or `(inputs, labels, sample_weight)` batches "
                         f"with `inputs` a dict of support_x, support_y and query_x, as `sampler.dataset(...)`; "
                         f"it yields {spec}.")
    return episodes


def _name_from_episodes(episodes):
    """`'<ways>way_<shots>shot'` from the first batch of `episodes`, if all its episodes have that shape."""
    support_y = next(iter(episodes))[0][SUPPORT_Y].numpy()
    shapes = set()
    for labels in support_y.reshape(len(support_y), -1):
        classes, counts = np.unique(labels[labels >= 0], return_counts=True)
        shapes.add((len(classes), tuple(sorted(set(counts.tolist())))))
    if len(episodes.element_spec) == 3 or len(shapes) != 1 or len(next(iter(shapes))[1]) != 1:
        raise ValueError("The episodes differ in ways or shots, so the log keys cannot be named after them; "
                         "give a name, e.g. `name='2-5way_1-3shot'` for `val_2-5way_1-3shot_accuracy`.")
    (ways, (shots,)), = shapes
    return f"{ways}way_{shots}shot"


class BackupAndRestore(keras.callbacks.Callback):
    """Backs up the learner after every epoch and restores it, and its episode stream, on the next `fit`.

    Args:
        backup_dir: a folder for the backups (under `tf.distribute` with several
            workers, one that every worker reads: the chief writes it).
        delete_checkpoint: delete the backups when `fit` completes.

    Each backup is a new folder (`epoch-000003/`: weights with optimizer
    state, and the epoch and episode-batch counts), made complete under a
    temporary name before `latest.json` points to it with one atomic rename;
    the previous backup is removed only after that. Use it with a learner's
    `fit` on `sampler.dataset(batch_size)`, which then resumes the episode
    stream too. Backups are made at epoch ends: pick `steps_per_epoch` for
    how much work a crash may cost.
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("`backup_dir` must name a folder for the backups.")
        if save_freq != "epoch":
            raise ValueError(
                f"`save_freq` must be 'epoch', got {save_freq!r}: a backup taken inside an epoch could not resume "
                "the episode stream exactly. Use a smaller `steps_per_epoch` to back up more often."
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = bool(delete_checkpoint)
        self._batches = 0  # episode batches consumed by the run, the restored part included
        self._epoch_batches = 0
        self.stream_resumed = False  # set by a learner's `fit` when it continues the episode stream

    # -- reading --------------------------------------------------------------

    def latest_backup(self):
        """`(folder, metadata)` of the last complete backup, or `None`."""
        pointer = os.path.join(self.backup_dir, _POINTER)
        if not os.path.exists(pointer):
            return None
        try:
            with open(pointer) as f:
                folder = os.path.join(self.backup_dir, json.load(f)["folder"])
            with open(os.path.join(folder, "training_metadata.json")) as f:
                return folder, json.load(f)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"The backup in {self.backup_dir!r} is unreadable ({error}); delete the folder to start afresh."
            ) from error

    def restored_stream_position(self):
        """Episode batches the backed-up run had consumed (0 without a backup): where its stream continues."""
        backup = self.latest_backup()
        return 0 if backup is None else int(backup[1]["batches"])

    # -- callback -------------------------------------------------------------

    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError("BackupAndRestore needs a built model: call it on an episode batch before `fit`.")
        backup = self.latest_backup()
        self._batches = self._epoch_batches = 0
        if backup is not None:
            folder, metadata = backup
            if metadata["batches"] and not self.stream_resumed:
                warnings.warn(
                    "BackupAndRestore restores weights and optimizer state, but the episode stream starts again at "
                    "its first episode: give a learner's `fit` the stream `sampler.dataset(batch_size)` itself, and "
                    "this callback in `callbacks=`, to continue the episodes too.", stacklevel=2)
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            try:
                self.model.load_weights(os.path.join(folder, "backup.weights.h5"))
            except (OSError, ValueError) as error:
                raise ValueError(f"The backup in {folder!r} cannot be loaded ({error}); delete "
                                 f"{self.backup_dir!r} to start afresh.") from error
            self.model._initial_epoch = int(metadata["epoch"])
            self._batches = int(metadata["batches"])

    def on_train_batch_end(self, batch, logs=None):
        self._epoch_batches = batch + 1  # `batch` is the epoch's last step run (several with steps_per_execution)

    def on_epoch_end(self, epoch, logs=None):
        self._batches += self._epoch_batches
        self._epoch_batches = 0
        self._save({"epoch": epoch + 1, "batches": self._batches})

    def on_train_end(self, logs=None):
        self.stream_resumed = False
        if self.delete_checkpoint and self._is_chief():
            shutil.rmtree(self.backup_dir, ignore_errors=True)

    # -- writing --------------------------------------------------------------

    def _is_chief(self):
        return self.model.distribute_strategy.extended.should_checkpoint

    def _save(self, metadata):
        if not self._is_chief():
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{metadata['epoch']:06d}"
        partial = os.path.join(self.backup_dir, f".{name}.partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by a process that died while writing
        os.makedirs(partial)
        weights = os.path.join(partial, "backup.weights.h5")
        self.model.save_weights(weights)
        _sync(weights)
        _write_json(os.path.join(partial, "training_metadata.json"), metadata)
        _sync(partial)
        final = os.path.join(self.backup_dir, name)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        _write_json(os.path.join(self.backup_dir, _POINTER), {"folder": name})  # the switch to the new backup
        _sync(self.backup_dir)
        for entry in os.listdir(self.backup_dir):
            if entry.startswith("epoch-") and entry != name:
                shutil.rmtree(os.path.join(self.backup_dir, entry), ignore_errors=True)


def _sync(path):
    """Flushes a file or a folder's entries to disk (a backup must survive a crash of the machine too)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_json(path, value):
    """Writes `value` to `path` atomically: a complete file under a temporary name, then a rename."""
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
