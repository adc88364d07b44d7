"""`RunRecord`: a run folder with settings and versions, history, TensorBoard logs, checkpoints, results, figures."""

import json
import os

import keras
import numpy as np
import pytest

import keras_meta
from keras_meta.callbacks import FewShotEvaluation
from keras_meta.data import EpisodeSampler
from keras_meta.runs import RunRecord


def test_a_run_folder_holds_everything(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(20, 4))
    x = (centres[:, None] + rng.normal(size=(20, 6, 4))).reshape(-1, 4).astype("float32")
    y = np.repeat(np.arange(20), 6)
    record = RunRecord(tmp_path / "run", {"steps": 6, "ways": 3})
    learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.mlp((4,), (8,)))
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = EpisodeSampler(x[:60], y[:60], ways=3, shots=1, queries=2, seed=0).dataset(batch_size=2)
    few_shot = FewShotEvaluation(x[60:], y[60:], ways=3, queries=2, num_episodes=5)
    learner.fit(train, epochs=2, steps_per_epoch=3, verbose=0,
                callbacks=[few_shot, *record.callbacks(checkpoint_every=2)])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["settings"] == {"steps": 6, "ways": 3}
    assert config["versions"]["keras"] == keras.__version__
    rows = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and "val_3way_1shot_accuracy" in rows[0].split(",")
    # 6 steps, one checkpoint every 2 (counted across epochs): steps 2, 4 and 6
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == [
        "epoch001_batch00002.keras", "epoch002_batch00001.keras", "epoch002_batch00003.keras"]
    reloaded = keras.saving.load_model(str(tmp_path / "run" / "checkpoints" / "epoch002_batch00003.keras"))
    for a, b in zip(reloaded.get_weights(), learner.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(name.startswith("events") for _, _, files in os.walk(tmp_path / "run" / "tensorboard")
               for name in files)
    path = record.write_results({"acc": 0.5})
    assert json.loads(open(path).read()) == {"acc": 0.5}
    assert os.path.exists(record.save_learner(learner))


def test_another_runs_folder_is_not_overwritten(tmp_path):
    RunRecord(tmp_path, {"steps": 1})
    RunRecord(tmp_path, {"steps": 1})  # the same run again
    with pytest.raises(ValueError, match="holds another run"):
        RunRecord(tmp_path, {"steps": 2})
    assert json.loads((tmp_path / "config.json").read_text())["settings"] == {"steps": 1}
    RunRecord(tmp_path, {"steps": 2}, overwrite=True)
    assert json.loads((tmp_path / "config.json").read_text())["settings"] == {"steps": 2}


@pytest.mark.parametrize("config, every, message", [
    ([1], None, "`config` must be a dict"),
    ({"f": object()}, None, "`config` must hold JSON values"),
    ({}, 0, "`checkpoint_every` must be a positive integer number of steps"),
])
def test_bad_arguments_raise(tmp_path, config, every, message):
    with pytest.raises(ValueError, match=message):
        RunRecord(tmp_path, config).callbacks(checkpoint_every=every)
