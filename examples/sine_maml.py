"""
Title: MAML on sinusoid regression
Description: Meta-train MAML on sine waves of random amplitude and phase, then fit a
new sine wave from 5 points with a few gradient steps, and plot the adapted curves.

Run:  python examples/sine_maml.py --output-dir runs/sine_maml

Expected on a 2-core CPU: about 2.3 minutes in all; test MSE about 3.27 before adapting,
0.69 after 1 step and 0.39 after 10 (`benchmarks/results/sine_maml.jsonl`; other seeds
differ by up to a third, `benchmarks/sine.py` averages three).

Writes a run folder (`--output-dir`): `config.json` (settings and package versions),
`history.csv` (the training loss per epoch), `tensorboard/`, `checkpoints/` (the learner every
`--checkpoint-every` steps), `maml_sine.keras` (the learner), `results.json` (the test MSE
after 0, 1 and 10 steps), and the figures `history.png` and `adapted_curves.png` (a new sine
wave, its 5 support points and the model after 0, 1 and 10 steps).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta import plots  # noqa: E402
from keras_meta.datasets.sine import SinusoidTasks  # noqa: E402
from keras_meta.runs import RunRecord  # noqa: E402

parser = argparse.ArgumentParser(description="MAML on sinusoid regression.")
parser.add_argument("--output-dir", default="runs/sine_maml")
parser.add_argument("--steps", type=int, default=20000, help="meta-training steps (25 tasks each)")
parser.add_argument("--checkpoint-every", type=int, default=5000, help="training steps between checkpoints")
args = parser.parse_args()
record = RunRecord(args.output_dir, vars(args), overwrite=True)
keras.utils.set_random_seed(0)

"""
## The model and the learner

A 1-40-40-1 ReLU network, as in the MAML paper. `MAML` wraps it: each training step
adapts it to 25 tasks with two SGD steps of size 0.01 on 10 support points, and
back-propagates the mean loss on 10 query points after each step through the steps
(`multi_step_loss=True`), so that one step and ten steps are both good.
"""

model = keras_meta.models.mlp((1,), hidden_units=(40, 40), num_outputs=1)
learner = keras_meta.learners.MAML(model, inner_learning_rate=0.01, inner_steps=2, multi_step_loss=True)
learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
tasks = SinusoidTasks(shots=10, queries=10, seed=0)
epochs = max(1, args.steps // 1000)
start = time.perf_counter()
history = learner.fit(tasks.dataset(batch_size=25), epochs=epochs, steps_per_epoch=args.steps // epochs, verbose=2,
                      callbacks=record.callbacks(checkpoint_every=args.checkpoint_every))
train_seconds = time.perf_counter() - start

"""
## Evaluation: 5 points of a new sine wave

Mean squared error on 100 query points of 600 new tasks, after 0, 1 and 10 steps.
"""

test = SinusoidTasks(shots=5, queries=100, seed=1).dataset(batch_size=100, num_episodes=600)
results = {"train_seconds": round(train_seconds, 1)}
for steps in (0, 1, 10):
    learner.eval_inner_steps = steps
    results[f"mse_{steps}step"] = float(learner.evaluate(test, verbose=0))
print(json.dumps(results))
record.save_learner(learner, "maml_sine.keras")
record.write_results(results)

"""
## Adapt to one task and plot

`plot_regression_adaptation` draws a new sine wave, its 5 support points and
`learner.adapt(support_x, support_y, steps)` (a plain Keras model with the adapted
weights) after 0, 1 and 10 steps: the sine figure of the MAML paper.
"""

rng = np.random.default_rng(3)
amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0, np.pi)
support_x = rng.uniform(-5, 5, size=(5, 1)).astype("float32")
support_y = (amplitude * np.sin(support_x - phase)).astype("float32")
record.save_figure(plots.plot_history(history), "history")
plot_path = record.save_figure(plots.plot_regression_adaptation(
    learner, support_x, support_y, (-5, 5), true_function=lambda x: amplitude * np.sin(x - phase),
    steps=(0, 1, 10)), "adapted_curves")
print(f"Plot: {os.path.abspath(plot_path)}")
