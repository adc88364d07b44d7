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
    keras.utils.set_random_seed(0)
    uninterrupted = protonet()
    uninterrupted.fit(sampler.dataset(batch_size=2), epochs=3, steps_per_epoch=2, verbose=0)

    backup = keras_meta.callbacks.BackupAndRestore(tmp_path / "backup", delete_checkpoint=False)
    assert backup.restored_stream_position() == 0
    keras.utils.set_random_seed(0)
    protonet().fit(sampler.dataset(batch_size=2), epochs=2, steps_per_epoch=2, callbacks=[backup], verbose=0)
    assert sorted(os.listdir(tmp_path / "backup")) == ["epoch-000002", "latest.json"]
    metadata = json.loads((tmp_path / "backup" / "epoch-000002" / "training_metadata.json").read_text())
    assert metadata == {"epoch": 2, "batches": 4} and backup.restored_stream_position() == 4
    # A new process would build a new learner: other initial weights, then the backup's, then epoch 3 on batches 4-5.
    resumed = protonet()
    resumed.fit(sampler.dataset(batch_size=2), None, None, 3, 0, [backup], steps_per_epoch=2)  # callbacks positional
    for restored, expected in zip(resumed.get_weights(), uninterrupted.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, expected)
    assert sorted(os.listdir(tmp_path / "backup")) == ["epoch-000003", "latest.json"]


def test_backup_warns_when_the_stream_cannot_resume(tmp_path, labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=3, shots=1, queries=2, seed=0)
    backup = keras_meta.callbacks.BackupAndRestore(tmp_path / "backup", delete_checkpoint=False)
    protonet().fit(sampler.dataset(batch_size=2), epochs=1, steps_per_epoch=1, callbacks=[backup], verbose=0)
    with pytest.warns(UserWarning, match="episode stream starts again"):
        protonet().fit(sampler.dataset(batch_size=2).take(2), epochs=2, callbacks=[backup], verbose=0)
    with pytest.warns(UserWarning, match="keras_meta.callbacks.BackupAndRestore continues it"):
        protonet().fit(sampler.dataset(batch_size=2), epochs=1, steps_per_epoch=1, verbose=0,
                       callbacks=[keras.callbacks.BackupAndRestore(tmp_path / "keras_backup")])


def test_unreadable_backup_is_reported(tmp_path):
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        keras_meta.callbacks.BackupAndRestore(tmp_path).restored_stream_position()


def test_backup_is_deleted_when_the_run_completes(tmp_path, labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=3, shots=1, queries=2, seed=0)
    protonet().fit(sampler.dataset(batch_size=2), epochs=2, steps_per_epoch=1, verbose=0,
                   callbacks=[keras_meta.callbacks.BackupAndRestore(tmp_path / "backup")])
    assert not (tmp_path / "backup").exists()
