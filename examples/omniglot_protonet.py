"""
Title: Few-shot Omniglot with Prototypical Networks
Description: Meta-train a Prototypical Network on the bundled Omniglot splits and
classify characters of alphabets it has never seen from one example each.

Run:  python examples/omniglot_protonet.py --output-dir runs/omniglot_protonet
      python examples/omniglot_protonet.py --ways 60 --steps 2000  # 60-way training episodes (docs/comparison.md)

Expected on a 2-core CPU: about 2.4 minutes of training, then 93.9% +- 0.5
5-way 1-shot and 82.6% +- 0.4 20-way 1-shot on 600 episodes of unseen alphabets
(`make demo`'s line in `benchmarks/results/demo.jsonl`).

Writes a run folder (`--output-dir`): `config.json` (settings and package versions),
`history.csv` (loss, accuracy and 5-way 1-shot validation accuracy per epoch),
`tensorboard/` (open with `tensorboard --logdir runs`), `checkpoints/` (the learner every
`--checkpoint-every` steps), `protonet.keras` (the learner), `adapted_5way_classifier.keras`,
`results.json`, and the figures `history.png`, `episode.png`, `embeddings.png` and
`accuracy_vs_shots.png`.
"""

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta.callbacks import FewShotEvaluation  # noqa: E402
from keras_meta.data import EpisodeSampler  # noqa: E402
from keras_meta.datasets import omniglot  # noqa: E402
from keras_meta.evaluation import evaluate_few_shot  # noqa: E402
from keras_meta.runs import RunRecord  # noqa: E402

parser = argparse.ArgumentParser(description="Meta-train and evaluate a Prototypical Network on Omniglot.")
parser.add_argument("--output-dir", default="runs/omniglot_protonet")
parser.add_argument("--steps", type=int, default=2400, help="meta-training episodes")
parser.add_argument("--ways", type=int, default=20, help="classes per training episode")
parser.add_argument("--queries", type=int, default=5, help="query drawings per class in each training episode")
parser.add_argument("--flips", action=argparse.BooleanOptionalAction, default=True,
                    help="the mirror image of each training character is a class too")
parser.add_argument("--learning-rate", type=float, default=1e-3,
                    help="where Adam's cosine-annealed learning rate starts")
parser.add_argument("--episodes", type=int, default=600, help="evaluation episodes per setting")
parser.add_argument("--eval-queries", type=int, default=15, help="query drawings per class in each test episode")
parser.add_argument("--validation-episodes", type=int, default=100,
                    help="5-way 1-shot episodes of unseen alphabets scored after every epoch")
parser.add_argument("--checkpoint-every", type=int, default=600, help="training steps between checkpoints")
args = parser.parse_args()
record = RunRecord(args.output_dir, vars(args), overwrite=True)
keras.utils.set_random_seed(0)

"""
## Data

`small1` (Balinese, Early Aramaic, Greek, Korean, Latin) is for meta-training, with
each character rotated by 90, 180 and 270 degrees, and the mirror image of each of
these, counted as a new class: 8 classes per character. The test
characters are those of `small2`'s alphabets that `small1` does not have: Japanese
(katakana), Sanskrit and Tagalog.
"""

train, test = omniglot.unseen_alphabet_split(train_splits=("small1",), test_split="small2")
print(f"Training: {len(train.alphabets)} characters x 4 rotations x 2 mirror images; "
      f"testing: {len(test.alphabets)} characters of {sorted(set(test.alphabets))}")
sampler = EpisodeSampler(train.images, train.labels, ways=args.ways, shots=1, queries=args.queries,
                         rotations=(0, 90, 180, 270), flips=args.flips, seed=0)
print(f"Training tasks: {sampler.max_ways}-way {sampler.max_shots}-shot, "
      f"{sampler.queries} queries per class, from {sampler.num_classes} classes")

"""
## Meta-training

Each training step is one `--ways`-way (20) 1-shot episode with `--queries` (5) queries per class.
"""

learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4(input_shape=(28, 28, 1)))
learner.compile(
    optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.learning_rate, args.steps, alpha=0.05)),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
)
epochs = max(1, args.steps // 200)
start = time.perf_counter()
# Accuracy on a fixed set of 5-way 1-shot episodes of the unseen alphabets after every epoch, in the logs
# (history.csv, TensorBoard) before the record's callbacks write them.
validation = FewShotEvaluation(test.images, test.labels, ways=5, shots=1, queries=args.eval_queries,
                               num_episodes=args.validation_episodes)
history = learner.fit(sampler.dataset(batch_size=1), epochs=epochs, steps_per_epoch=args.steps // epochs,
                      callbacks=[validation, *record.callbacks(checkpoint_every=args.checkpoint_every)])
train_seconds = time.perf_counter() - start

"""
## Evaluation on unseen alphabets

Mean query accuracy and its 95% confidence interval over fixed sets of episodes.
"""

results = {"train_seconds": round(train_seconds, 1)}
for ways in (5, 20):
    print(f"Evaluating {ways}-way 1-shot on {args.episodes} episodes")
    score = evaluate_few_shot(learner, test.images, test.labels, ways=ways, shots=1, queries=args.eval_queries,
                              num_episodes=args.episodes)
    print(f"{ways}-way 1-shot accuracy: {score.accuracy:.2%} +- {score.ci95:.2%}")
    results[f"acc_{ways}w1s"], results[f"ci95_{ways}w1s"] = score.accuracy, score.ci95

"""
## Save, and adapt to a new task

The learner saves as one `.keras` file. `adapt` turns the support set of one task
into a plain Keras classifier with the class prototypes baked in.
"""

learner_path = record.save_learner(learner, "protonet.keras")

rng = np.random.default_rng(0)
characters = rng.choice(len(test.alphabets), size=5, replace=False)
support = np.stack([np.flatnonzero(test.labels == c)[0] for c in characters])
classifier = learner.adapt(test.images[support], np.arange(5))
queries = np.concatenate([np.flatnonzero(test.labels == c)[1:] for c in characters])
truth = np.repeat(np.arange(5), [np.sum(test.labels == c) - 1 for c in characters])
accuracy = float(np.mean(classifier.predict(test.images[queries], verbose=0).argmax(-1) == truth))
print(f"Adapted 5-way classifier, one drawing per character: {accuracy:.2%} on the other {len(queries)} drawings")
classifier_path = record.save_learner(classifier, "adapted_5way_classifier.keras")
results["adapted_5way_accuracy"] = accuracy
results_path = record.write_results(results)

"""
## Figures

The training and validation curves, one test episode with the learner's predictions (wrong
ones in red), the episode's embeddings with the class prototypes, and accuracy against
the number of shots.
"""

figures = {}
try:
    from keras_meta import plots

    inputs, query_y = next(iter(EpisodeSampler(test.images, test.labels, ways=5, shots=1, queries=3,
                                               seed=0).dataset(batch_size=1)))
    figures = {
        "history": plots.plot_history(history),
        "episode": plots.plot_episode(inputs, query_y, learner=learner),
        "embeddings": plots.plot_embeddings(learner, inputs, query_y),
        "accuracy_vs_shots": plots.plot_accuracy_vs_shots(learner, test.images, test.labels, ways=5,
                                                          shots=(1, 2, 5), num_episodes=min(args.episodes, 100)),
    }
except ImportError as error:  # matplotlib is an optional extra
    print(f"No figures: {error}")
figure_paths = [record.save_figure(figure, name) for name, figure in figures.items()]

print("\nWritten:")
for label, path in [("run folder", args.output_dir), ("meta-trained learner", learner_path),
                    ("adapted classifier", classifier_path), ("results", results_path),
                    *[("figure", path) for path in figure_paths]]:
    print(f"  {label:22s} {os.path.abspath(path)}")
