"""
Title: Few-shot Omniglot with MAML
Description: Meta-train second-order MAML (or first-order MAML, Meta-SGD, ANIL) on the
bundled Omniglot splits, evaluate 5-way 1-shot on unseen alphabets, and adapt a plain
Keras classifier to five new characters from one drawing each.

Run:  python examples/omniglot_maml.py --output-dir runs/omniglot_maml
      python examples/omniglot_maml.py --algo anil --steps 500
"""

import argparse
import json
import os

import keras_meta  # before Keras and TensorFlow: turns on TensorFlow's oneDNN CPU kernels
import keras
import numpy as np
import tensorflow as tf

from keras_meta.data import EpisodeSampler
from keras_meta.datasets import omniglot
from keras_meta.evaluation import evaluate_few_shot

parser = argparse.ArgumentParser(description="Meta-train MAML on Omniglot.")
parser.add_argument("--algo", choices=["maml", "fomaml", "metasgd", "anil"], default="maml")
parser.add_argument("--output-dir", default="runs/omniglot_maml")
parser.add_argument("--steps", type=int, default=1000, help="meta-training steps of 16 tasks")
parser.add_argument("--episodes", type=int, default=600, help="evaluation episodes")
args = parser.parse_args()

"""
## Speed on a CPU

The tasks are small, so ops gain little from several threads each; instead, each core
adapts its own task: one thread per op (set before TensorFlow runs its first op), and
`parallel_tasks` below. The results are the same.
"""

tf.config.threading.set_intra_op_parallelism_threads(1)
tasks_at_once = min(os.cpu_count() or 1, 16)
keras.utils.set_random_seed(0)

"""
## Data

Training tasks: 5-way 1-shot episodes of `small1` with rotations as new classes.
Test tasks: the `small2` alphabets that `small1` lacks.
"""

train, test = omniglot.unseen_alphabet_split(train_splits=("small1",), test_split="small2")
sampler = EpisodeSampler(train.images, train.labels, ways=5, shots=1, queries=5,
                         rotations=(0, 90, 180, 270), seed=0)

"""
## The learner

The wrapped model is conv4 with a 5-way head. Each step adapts it to 16 tasks with one
SGD step of size 0.4 and back-propagates the query loss through that step.
"""

model = keras_meta.models.conv4(input_shape=(28, 28, 1), num_classes=5)
options = dict(inner_learning_rate=0.4, inner_steps=1, eval_inner_steps=3, parallel_tasks=tasks_at_once)
learner = {
    "maml": lambda: keras_meta.learners.MAML(model, **options),
    "fomaml": lambda: keras_meta.learners.MAML(model, first_order=True, **options),
    "metasgd": lambda: keras_meta.learners.MetaSGD(model, **options),
    "anil": lambda: keras_meta.learners.ANIL(model, **{**options, "inner_steps": 3, "eval_inner_steps": 10}),
}[args.algo]()
learner.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
)
epochs = max(1, args.steps // 100)
learner.fit(sampler.dataset(batch_size=16), epochs=epochs, steps_per_epoch=args.steps // epochs)

"""
## Evaluation on unseen alphabets
"""

score = evaluate_few_shot(learner, test.images, test.labels, ways=5, shots=1, num_episodes=args.episodes)
print(f"5-way 1-shot accuracy: {score.accuracy:.2%} +- {score.ci95:.2%}")

"""
## Adapt to five new characters, save
"""

rng = np.random.default_rng(0)
characters = rng.choice(len(test.alphabets), size=5, replace=False)
support = np.stack([np.flatnonzero(test.labels == c)[0] for c in characters])
classifier = learner.adapt(test.images[support], np.arange(5))
queries = np.concatenate([np.flatnonzero(test.labels == c)[1:] for c in characters])
accuracy = float(np.mean(classifier.predict(test.images[queries], verbose=0).argmax(-1) == np.repeat(np.arange(5), 19)))
print(f"Adapted classifier on the other 95 drawings: {accuracy:.2%}")
os.makedirs(args.output_dir, exist_ok=True)
learner.save(os.path.join(args.output_dir, f"{args.algo}.keras"))
classifier.save(os.path.join(args.output_dir, "adapted_5way_classifier.keras"))
with open(os.path.join(args.output_dir, "results.json"), "w") as f:
    json.dump({"algo": args.algo, "acc_5w1s": score.accuracy, "ci95_5w1s": score.ci95,
               "adapted_classifier_accuracy": accuracy}, f, indent=2)
print(f"Written to {os.path.abspath(args.output_dir)}")
