"""
Title: Few-shot Omniglot with Matching Networks, R2D2 and Meta Networks
Description: Meta-train one of the metric- and model-based learners on the bundled
Omniglot splits, evaluate 5-way and 20-way 1-shot on unseen alphabets, and adapt a
Keras classifier to five new characters from one drawing each.

Run:  python examples/omniglot_metric_learners.py --learner r2d2 --output-dir runs/omniglot_r2d2
      python examples/omniglot_metric_learners.py --learner matching --fce
      python examples/omniglot_metric_learners.py --learner metanet          # original Meta Networks
      python examples/omniglot_metric_learners.py --learner metanet-embedding
      python examples/omniglot_metric_learners.py --ways 60 --steps 2100  # 60-way training (docs/comparison.md)

Expected on a 2-core CPU with the default R2D2: about 2.4 minutes of training (3.5 in
all), then 94.4% +- 0.5 5-way 1-shot and 83.4% +- 0.4 20-way 1-shot on 600 episodes of
unseen alphabets (`benchmarks/results/omniglot_metric_learners.jsonl`).

Writes a run folder (`--output-dir`): `config.json` (settings and package versions),
`history.csv` (loss and accuracy per epoch), `tensorboard/`, `checkpoints/` (the learner every
`--checkpoint-every` steps), `<learner>.keras` (the learner), `adapted_5way_classifier.keras`,
`results.json`, and the figures `history.png`, `embeddings.png` (a test episode's embeddings
and class prototypes) and `accuracy_vs_shots.png`.
"""

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta import plots  # noqa: E402
from keras_meta.data import EpisodeSampler  # noqa: E402
from keras_meta.datasets import omniglot  # noqa: E402
from keras_meta.evaluation import evaluate_few_shot  # noqa: E402
from keras_meta.runs import RunRecord  # noqa: E402

parser = argparse.ArgumentParser(description="Meta-train a metric- or model-based learner on Omniglot.")
parser.add_argument("--learner", choices=["matching", "r2d2", "metanet", "metanet-embedding"], default="r2d2")
parser.add_argument("--fce", action="store_true", help="Matching Networks with full context embeddings")
parser.add_argument("--output-dir", default=None, help="default: runs/omniglot_<learner>")
parser.add_argument("--steps", type=int, default=2000, help="meta-training steps (one episode each)")
parser.add_argument("--ways", type=int, default=20, help="classes per training episode")
parser.add_argument("--queries", type=int, default=5, help="query drawings per class in each training episode")
parser.add_argument("--flips", action=argparse.BooleanOptionalAction, default=True,
                    help="the mirror image of each training character is a class too")
parser.add_argument("--learning-rate", type=float, default=1e-3,
                    help="where Adam's cosine-annealed learning rate starts")
parser.add_argument("--episodes", type=int, default=600, help="evaluation episodes")
parser.add_argument("--eval-queries", type=int, default=15, help="query drawings per class in each test episode")
parser.add_argument("--checkpoint-every", type=int, default=500, help="training steps between checkpoints")
args = parser.parse_args()
args.output_dir = args.output_dir or os.path.join("runs", f"omniglot_{args.learner}")
record = RunRecord(args.output_dir, vars(args), overwrite=True)
keras.utils.set_random_seed(0)

"""
## Data

Training tasks: `--ways`-way (20) 1-shot episodes of `small1`, rotations and mirror images as new classes.
Test tasks: the `small2` alphabets that `small1` lacks.
"""

train, test = omniglot.unseen_alphabet_split(train_splits=("small1",), test_split="small2")
sampler = EpisodeSampler(train.images, train.labels, ways=args.ways, shots=1, queries=args.queries,
                         rotations=(0, 90, 180, 270), flips=args.flips, seed=0)
print(f"Training tasks: {sampler.max_ways}-way {sampler.max_shots}-shot, "
      f"{sampler.queries} queries per class, from {sampler.num_classes} classes")

"""
## The learner

Every learner embeds images with the conv4 backbone; they differ in how the support set
turns into a classifier (attention, a ridge-regression solve, generated weights).
R2D2's ridge solve gains from a wide embedding, so for it conv4 keeps the 3x3 layout of
its last block (576 features instead of 64).
"""

backbone = keras_meta.models.conv4(input_shape=(28, 28, 1), pool_last_block=args.learner != "r2d2")
learner = {
    "matching": lambda: keras_meta.learners.MatchingNetwork(backbone, full_context_embeddings=args.fce),
    "r2d2": lambda: keras_meta.learners.R2D2(backbone),
    "metanet": lambda: keras_meta.learners.MetaNetwork(backbone, ways=max(args.ways, 20)),  # tested 20-way too
    "metanet-embedding": lambda: keras_meta.learners.EmbeddingMetaNetwork(backbone),
}[args.learner]()
learner.compile(
    optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.learning_rate, args.steps, alpha=0.05)),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
)
epochs = max(1, args.steps // 100)
start = time.perf_counter()
history = learner.fit(sampler.dataset(batch_size=1), epochs=epochs, steps_per_epoch=args.steps // epochs,
                      callbacks=record.callbacks(checkpoint_every=args.checkpoint_every))
train_seconds = time.perf_counter() - start

"""
## Evaluation on unseen alphabets
"""

results = {"learner": args.learner, "train_seconds": round(train_seconds, 1)}
for ways in (5, 20):
    score = evaluate_few_shot(learner, test.images, test.labels, ways=ways, shots=1, queries=args.eval_queries,
                              num_episodes=args.episodes)
    print(f"{ways}-way 1-shot accuracy: {score.accuracy:.2%} +- {score.ci95:.2%}")
    results.update({f"acc_{ways}w1s": score.accuracy, f"ci95_{ways}w1s": score.ci95})

"""
## Adapt to five new characters, save
"""

rng = np.random.default_rng(0)
characters = rng.choice(np.unique(test.labels), size=5, replace=False)
support = np.stack([np.flatnonzero(test.labels == c)[0] for c in characters])
classifier = learner.adapt(test.images[support], np.arange(5))
queries = np.concatenate([np.flatnonzero(test.labels == c)[1:] for c in characters])
truth = np.repeat(np.arange(5), [np.sum(test.labels == c) - 1 for c in characters])
results["adapted_classifier_accuracy"] = float(np.mean(
    classifier.predict(test.images[queries], verbose=0).argmax(-1) == truth))
print(f"Adapted classifier on the other drawings: {results['adapted_classifier_accuracy']:.2%}")
record.save_learner(learner, f"{args.learner}.keras")
record.save_learner(classifier, "adapted_5way_classifier.keras")
record.write_results(results)

"""
## Figures

The training curves, the embeddings of a 5-way 1-shot test episode with the class
prototypes, and 5-way accuracy against the number of shots.
"""

inputs, query_y = next(iter(EpisodeSampler(test.images, test.labels, ways=5, shots=1, queries=3,
                                           seed=0).dataset(batch_size=1)))
figures = {
    "history": plots.plot_history(history),
    "embeddings": plots.plot_embeddings(learner, inputs, query_y),
    "accuracy_vs_shots": plots.plot_accuracy_vs_shots(learner, test.images, test.labels, ways=5, shots=(1, 2, 5),
                                                      num_episodes=min(args.episodes, 100)),
}
for name, figure in figures.items():
    record.save_figure(figure, name)
print(f"Written to {os.path.abspath(args.output_dir)}")
