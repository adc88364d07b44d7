"""`keras_meta.callbacks.BackupAndRestore`: what it refuses and what it leaves on disk.

Killing and resuming runs (bit-identical, also under MirroredStrategy) is tested
in tests/test_distributed.py.
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_meta
from keras_meta import learners
from keras_meta.data import EpisodeSampler


def protonet():
    learner = learners.PrototypicalNetwork(keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                                             keras.layers.Dense(4)]))
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return learner


def test_backup_refuses_backups_inside_an_epoch(tmp_path):
    with pytest.raises(ValueError, match="smaller `steps_per_epoch`"):
        keras_meta.callbacks.BackupAndRestore(tmp_path, save_freq=100)
    with pytest.raises(ValueError, match="folder"):
        keras_meta.callbacks.BackupAndRestore("")


def test_backup_keeps_one_complete_backup_and_resumes_the_stream_after_it(tmp_path, labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=3, shots=1, queries=2, seed=0)
    backup = keras_meta.callbacks.BackupAndRestore(tmp_path / "backup", delete_checkpoint=False)
    assert backup.restored_stream_position() == 0
    learner = protonet()
    learner.fit(sampler.dataset(batch_size=2), epochs=3, steps_per_epoch=2, callbacks=[backup], verbose=0)
    assert sorted(os.listdir(tmp_path / "backup")) == ["epoch-000003", "latest.json"]
    metadata = json.loads((tmp_path / "backup" / "epoch-000003" / "training_metadata.json").read_text())
    assert metadata == {"epoch": 3, "batches": 6} and backup.restored_stream_position() == 6
    # A later fit with more epochs restores the weights and continues from epoch 3 and episode batch 6.
    resumed = protonet()
    weights = [w.copy() for w in learner.get_weights()]
    resumed.fit(sampler.dataset(batch_size=2), epochs=3, steps_per_epoch=2, callbacks=[backup], verbose=0)
    for restored, saved in zip(resumed.get_weights(), weights):
        np.testing.assert_array_equal(restored, saved)  # nothing left to train: restored as saved


def test_unreadable_backup_is_reported(tmp_path):
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        keras_meta.callbacks.BackupAndRestore(tmp_path).restored_stream_position()


def test_backup_is_deleted_when_the_run_completes(tmp_path, labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=3, shots=1, queries=2, seed=0)
    protonet().fit(sampler.dataset(batch_size=2), epochs=2, steps_per_epoch=1, verbose=0,
                   callbacks=[keras_meta.callbacks.BackupAndRestore(tmp_path / "backup")])
    assert not (tmp_path / "backup").exists()
