"""A record of every run: one folder with its settings, curves, logs, checkpoints, results and figures.

`RunRecord(run_dir, config)` writes `config.json` (the settings plus the
versions of Python, keras-meta, TensorFlow, Keras and NumPy) at once, and gives
the Keras callbacks that fill the rest during `fit`: `history.csv`
(`CSVLogger`), TensorBoard logs in `tensorboard/`, and a checkpoint of the
learner every `checkpoint_every` training steps in `checkpoints/`
(`ModelCheckpoint`). `save_learner`, `write_results` and `save_figure` add
the learner, `results.json` and PNG figures.

Example:

>>> record = RunRecord("runs/protonet", {"ways": 20, "steps": 2400})  # doctest: +SKIP
>>> learner.fit(train, epochs=12, steps_per_epoch=200,
...             callbacks=[few_shot, *record.callbacks(checkpoint_every=600)])  # doctest: +SKIP
>>> record.write_results({"acc_5w1s": 0.95})  # doctest: +SKIP
>>> record.save_figure(keras_meta.plots.plot_history(learner.history), "history")  # doctest: +SKIP
"""

import json
import os
import platform

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data.checks import integer_argument

CONFIG, HISTORY, RESULTS = "config.json", "history.csv", "results.json"
TENSORBOARD, CHECKPOINTS = "tensorboard", "checkpoints"


def versions():
    """The versions of Python and the packages a run depends on."""
    import keras_meta

    return {"python": platform.python_version(), "keras_meta": keras_meta.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


class RunRecord:
    """The folder of one run; writes `config.json` (settings and package versions) when created.

    Args:
        run_dir: the run's folder, created if needed. A folder that already
            holds a `config.json` of a different run is refused (nothing of
            another run is overwritten); pass `overwrite=True` to reuse it.
        config: the run's settings, a JSON-serialisable dict (command-line
            arguments: `vars(args)`).
    """

    def __init__(self, run_dir, config, overwrite=False):
        if not isinstance(config, dict):
            raise ValueError(f"`config` must be a dict of the run's settings, got {type(config).__name__}.")
        self.run_dir = os.fspath(run_dir)
        self.config = {"settings": dict(config), "versions": versions()}
        try:
            text = json.dumps(self.config, indent=2, sort_keys=True)
        except TypeError as error:
            raise ValueError(f"`config` must hold JSON values (numbers, strings, lists, dicts): {error}.") from None
        path = self.path(CONFIG)
        if os.path.exists(path) and not overwrite:
            with open(path) as f:
                previous = json.load(f)
            if previous.get("settings") != self.config["settings"]:
                raise ValueError(
                    f"{self.run_dir!r} holds another run (its {CONFIG} has other settings); choose a new folder, "
                    "or pass overwrite=True to replace that run's record."
                )
        os.makedirs(self.run_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")

    def path(self, name):
        """The path of `name` inside the run folder."""
        return os.path.join(self.run_dir, name)

    def callbacks(self, checkpoint_every=None):
        """`CSVLogger` (`history.csv`), `TensorBoard` (`tensorboard/`) and, given `checkpoint_every` training
        steps, a `ModelCheckpoint` writing `checkpoints/epoch<e>_batch<b>.keras` every that many steps.

        Put a `FewShotEvaluation` before them in `callbacks=` so its scores reach their logs.
        """
        found = [keras.callbacks.CSVLogger(self.path(HISTORY)),
                 keras.callbacks.TensorBoard(log_dir=self.path(TENSORBOARD))]
        if checkpoint_every is not None:
            integer_argument("checkpoint_every", checkpoint_every, unit=" number of steps")
            os.makedirs(self.path(CHECKPOINTS), exist_ok=True)
            pattern = os.path.join(self.path(CHECKPOINTS), "epoch{epoch:03d}_batch{batch:05d}.keras")
            found.append(keras.callbacks.ModelCheckpoint(pattern, save_freq=int(checkpoint_every)))
        return found

    def save_learner(self, learner, name="learner.keras"):
        """Saves `learner` in the run folder; returns the path."""
        path = self.path(name)
        learner.save(path)
        return path

    def write_results(self, results):
        """Writes `results` (a JSON-serialisable dict) to `results.json`; returns the path."""
        path = self.path(RESULTS)
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        return path

    def save_figure(self, figure, name):
        """Saves a matplotlib `figure` as `<name>.png` in the run folder; returns the path."""
        path = self.path(name if name.endswith(".png") else f"{name}.png")
        figure.savefig(path, dpi=100)
        return path

