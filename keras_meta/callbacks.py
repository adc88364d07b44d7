"""Callbacks for meta-training runs.

`BackupAndRestore` is Keras' callback of that name for episode streams: a run
killed at any point and started again with the same command continues from
its last completed epoch with the same weights, optimizer state *and* the
same episodes, so it ends bit-identical to a run that was never interrupted
(Keras' own callback restarts the episode stream at its first episode). A
backup being written when the process dies never replaces the last good one.

Example:

>>> import keras_meta
>>> backup = keras_meta.callbacks.BackupAndRestore("runs/backup")
>>> learner.fit(sampler.dataset(batch_size=32), epochs=50, steps_per_epoch=100,
...             callbacks=[backup])  # doctest: +SKIP
"""

import json
import os
import shutil
import warnings

import keras

_POINTER = "latest.json"


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
