"""
Title: Few-shot Omniglot with MAML
Description: Meta-train second-order MAML (or first-order MAML, Meta-SGD, ANIL, MAML++) on the
bundled Omniglot splits, evaluate 5-way 1-shot on unseen alphabets, and adapt a plain
Keras classifier to five new characters from one drawing each.

Run:  python examples/omniglot_maml.py --output-dir runs/omniglot_maml
      python examples/omniglot_maml.py --algo anil --steps 500
      python examples/omniglot_maml.py --algo mamlpp --recompute-inner-steps
      python examples/omniglot_maml.py --flips --learning-rate 3e-3 --steps 6000  # longer (docs/comparison.md)

Expected on a 2-core CPU with the default MAML: about 5.9 minutes in all (5.4 of
training), then 86.4% +- 0.8 5-way 1-shot on 600 episodes of unseen alphabets, and the
adapted classifier 86.3% on the other drawings of its five characters
(`benchmarks/results/omniglot_maml.jsonl`; longer runs reach more, docs/benchmarks.md).

Writes a run folder (`--output-dir`): `config.json` (settings and package versions),
`history.csv` (loss and accuracy per epoch), `tensorboard/`, `checkpoints/` (the learner every
`--checkpoint-every` steps), `<algo>.keras` (the learner), `adapted_5way_classifier.keras`,
`results.json`, and the figures `history.png`, `adaptation.png` (query loss and accuracy on
unseen-alphabet tasks after 0 to `eval_inner_steps` inner steps) and `parameter_change.png`
(how far adapting to five new characters moves each layer's weights).
"""

import argparse
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta import plots  # noqa: E402
from keras_meta.data import EpisodeSampler  # noqa: E402
from keras_meta.datasets import omniglot  # noqa: E402
from keras_meta.evaluation import evaluate_few_shot  # noqa: E402
from keras_meta.runs import RunRecord  # noqa: E402

parser = argparse.ArgumentParser(description="Meta-train MAML on Omniglot.")
parser.add_argument("--algo", choices=["maml", "fomaml", "metasgd", "anil", "mamlpp"], default="maml")
parser.add_argument("--output-dir", default="runs/omniglot_maml")
parser.add_argument("--steps", type=int, default=1000, help="meta-training steps of 16 tasks")
parser.add_argument("--learning-rate", type=float, default=1e-3,
                    help="Adam's meta learning rate (MAML++: where its cosine schedule starts)")
parser.add_argument("--flips", action=argparse.BooleanOptionalAction, default=False,
                    help="the mirror image of each training character is a class too")
parser.add_argument("--queries", type=int, default=5, help="query drawings per class in each training task")
parser.add_argument("--episodes", type=int, default=600, help="evaluation episodes")
parser.add_argument("--eval-queries", type=int, default=15, help="query drawings per class in each test episode")
parser.add_argument("--checkpoint-every", type=int, default=250, help="training steps between checkpoints")
parser.add_argument("--recompute-inner-steps", action="store_true",
                    help="recompute the inner steps while back-propagating: memory of about one step, more time "
                         "(second-order algorithms)")
args = parser.parse_args()
if args.recompute_inner_steps and args.algo == "fomaml":
    parser.error("--recompute-inner-steps is for the second-order algorithms; fomaml keeps no inner steps.")
record = RunRecord(args.output_dir, vars(args), overwrite=True)

"""
## Speed on a CPU

The tasks are small, so ops gain little from several threads each; instead, each core
adapts its own task: one thread per op (set before TensorFlow runs its first op), and
the learners' default `parallel_tasks="auto"` (a task per core). The results are the same.
"""

tf.config.threading.set_intra_op_parallelism_threads(1)
keras.utils.set_random_seed(0)

"""
## Data

Training tasks: 5-way 1-shot episodes of `small1` with rotations (and with `--flips` mirror
images) as new classes.
Test tasks: the `small2` alphabets that `small1` lacks.
"""

train, test = omniglot.unseen_alphabet_split(train_splits=("small1",), test_split="small2")
sampler = EpisodeSampler(train.images, train.labels, ways=5, shots=1, queries=args.queries,
                         rotations=(0, 90, 180, 270), flips=args.flips, seed=0)
print(f"Training tasks: {sampler.max_ways}-way {sampler.max_shots}-shot, "
      f"{sampler.queries} queries per class, from {sampler.num_classes} classes")

"""
## The learner

The wrapped model is conv4 with a 5-way head. Each step adapts it to 16 tasks with one
SGD step of size 0.4 and back-propagates the query loss through that step; first-order
MAML takes 3 steps of 0.1 (5 at test), as a step of 0.4 takes the adapted weights too far
for their query gradient to suit the starting ones. MAML++
(`MAMLPlusPlus`) takes 3 steps with learned per-layer, per-step rates (starting at 0.4),
per-step batch-norm weights, an annealed multi-step loss and first-order steps for the
first third of training. With `--recompute-inner-steps`, the inner steps' activations
are recomputed while back-propagating instead of kept (memory for time).
"""

model = keras_meta.models.conv4(input_shape=(28, 28, 1), num_classes=5)
options = dict(inner_learning_rate=0.4, inner_steps=1, eval_inner_steps=3,
               recompute_inner_steps=args.recompute_inner_steps)
learner = {
    "maml": lambda: keras_meta.learners.MAML(model, **options),
    # first order: smaller steps, so the query gradient at the adapted weights suits the starting ones
    "fomaml": lambda: keras_meta.learners.MAML(model, first_order=True, **{
        **options, "inner_learning_rate": 0.1, "inner_steps": 3, "eval_inner_steps": 5}),
    "mamlpp": lambda: keras_meta.learners.MAMLPlusPlus(model, training_steps=args.steps,
                                                       **{**options, "inner_steps": 3, "eval_inner_steps": 3}),
    "metasgd": lambda: keras_meta.learners.MetaSGD(model, **options),
    "anil": lambda: keras_meta.learners.ANIL(model, **{**options, "inner_steps": 3, "eval_inner_steps": 10}),
}[args.algo]()
meta_learning_rate = args.learning_rate
if args.algo == "mamlpp":  # MAML++ anneals the meta learning rate: Keras' cosine schedule
    meta_learning_rate = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=args.steps,
                                                                alpha=0.05)
learner.compile(
    optimizer=keras.optimizers.Adam(meta_learning_rate),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
)
epochs = max(1, args.steps // 100)
start = time.perf_counter()
history = learner.fit(sampler.dataset(batch_size=16), epochs=epochs, steps_per_epoch=args.steps // epochs,
                      callbacks=record.callbacks(checkpoint_every=args.checkpoint_every))
train_seconds = time.perf_counter() - start

"""
## Evaluation on unseen alphabets
"""

score = evaluate_few_shot(learner, test.images, test.labels, ways=5, shots=1, queries=args.eval_queries,
                          num_episodes=args.episodes)
print(f"5-way 1-shot accuracy: {score.accuracy:.2%} +- {score.ci95:.2%}")

"""
## Adapt to five new characters, save
"""

rng = np.random.default_rng(0)
characters = rng.choice(len(test.alphabets), size=5, replace=False)
support = np.stack([np.flatnonzero(test.labels == c)[0] for c in characters])
classifier = learner.adapt(test.images[support], np.arange(5))
queries = np.concatenate([np.flatnonzero(test.labels == c)[1:] for c in characters])
truth = np.repeat(np.arange(5), [np.sum(test.labels == c) - 1 for c in characters])
accuracy = float(np.mean(classifier.predict(test.images[queries], verbose=0).argmax(-1) == truth))
print(f"Adapted classifier on the other {len(queries)} drawings: {accuracy:.2%}")
record.save_learner(learner, f"{args.algo}.keras")
record.save_learner(classifier, "adapted_5way_classifier.keras")
record.write_results({"algo": args.algo, "acc_5w1s": score.accuracy, "ci95_5w1s": score.ci95,
                      "adapted_classifier_accuracy": accuracy, "train_seconds": round(train_seconds, 1)})

"""
## Figures

The training curves; query loss and accuracy on 16 tasks (at most `--episodes`) of the
unseen alphabets after 0 (the meta-learned weights) to `eval_inner_steps` inner steps;
and, per layer, how far adapting to the five characters above moves the weights.
"""

test_sampler = EpisodeSampler(test.images, test.labels, ways=5, shots=1, queries=5, seed=0)
inputs, query_y = next(iter(test_sampler.dataset(batch_size=min(16, args.episodes))))
figures = {
    "history": plots.plot_history(history),
    "adaptation": plots.plot_adaptation(learner, inputs, query_y, steps=learner.eval_inner_steps),
    "parameter_change": plots.plot_parameter_change(learner, test.images[support], np.arange(5)),
}
for name, figure in figures.items():
    record.save_figure(figure, name)
print(f"Written to {os.path.abspath(args.output_dir)}")
