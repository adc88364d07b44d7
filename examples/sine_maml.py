"""
Title: MAML on sinusoid regression
Description: Meta-train MAML on sine waves of random amplitude and phase, then fit a
new sine wave from 5 points with a few gradient steps, and plot the adapted curves.

Run:  python examples/sine_maml.py --output-dir runs/sine_maml
"""

import argparse
import json
import os

import keras_meta  # before Keras and TensorFlow: turns on TensorFlow's oneDNN CPU kernels
import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_meta.datasets.sine import SinusoidTasks  # noqa: E402

parser = argparse.ArgumentParser(description="MAML on sinusoid regression.")
parser.add_argument("--output-dir", default="runs/sine_maml")
parser.add_argument("--steps", type=int, default=20000, help="meta-training steps (25 tasks each)")
args = parser.parse_args()
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
learner.fit(tasks.dataset(batch_size=25), epochs=epochs, steps_per_epoch=args.steps // epochs, verbose=2)

"""
## Evaluation: 5 points of a new sine wave

Mean squared error on 100 query points of 600 new tasks, after 0, 1 and 10 steps.
"""

test = SinusoidTasks(shots=5, queries=100, seed=1).dataset(batch_size=100, num_episodes=600)
results = {}
for steps in (0, 1, 10):
    learner.eval_inner_steps = steps
    results[f"mse_{steps}step"] = float(learner.evaluate(test, verbose=0))
print(json.dumps(results))

"""
## Adapt to one task and plot

`adapt` returns a plain Keras model with the adapted weights.
"""

rng = np.random.default_rng(3)
amplitude, phase = rng.uniform(0.1, 5.0), rng.uniform(0, np.pi)
support_x = rng.uniform(-5, 5, size=(5, 1)).astype("float32")
support_y = (amplitude * np.sin(support_x - phase)).astype("float32")
grid = np.linspace(-5, 5, 200, dtype="float32")[:, None]
plt.figure(figsize=(7, 4))
plt.plot(grid, amplitude * np.sin(grid - phase), "k", label="true function")
for steps in (0, 1, 10):
    adapted = learner.adapt(support_x, support_y, steps=steps)
    plt.plot(grid, adapted(grid).numpy(), label=f"after {steps} step(s)")
plt.scatter(support_x, support_y, c="r", zorder=3, label="5 support points")
plt.legend()
os.makedirs(args.output_dir, exist_ok=True)
plot_path = os.path.join(args.output_dir, "adapted_curves.png")
plt.savefig(plot_path, dpi=100, bbox_inches="tight")
with open(os.path.join(args.output_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
learner.save(os.path.join(args.output_dir, "maml_sine.keras"))
print(f"Plot: {os.path.abspath(plot_path)}")
