"""MAML on sinusoid regression, the set-up of the MAML paper (Finn et al. 2017).

A 1-40-40-1 ReLU MLP is meta-trained on K-shot sinusoid tasks (Adam 1e-3,
meta-batch 25, inner SGD with step 0.01; by default 2 inner steps with the
multi-step loss, so that 1 step and 10 steps are both good); then, on a fixed set of new tasks,
it adapts to 5 support points with 1, 5 and 10 steps and is scored by the mean
squared error on 100 query points per task. One training run depends on its
seed (10-step errors of 0.31, 0.26 and 0.28 for seeds 0, 1 and 2), so
`--seeds N` (3 by default) trains N times, seeds `--seed` to `--seed + N - 1`,
each scored on the same test tasks, and reports the mean (and each run's
figures in `..._per_seed`). Prints one JSON line.

    python benchmarks/sine.py
    python benchmarks/sine.py --seeds 1 --seed 4
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta.datasets.sine import SinusoidTasks  # noqa: E402

from recording import add_results_argument, record  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_results_argument(parser)
    parser.add_argument("--steps", type=int, default=20000, help="meta-training steps")
    parser.add_argument("--meta-batch", type=int, default=25)
    parser.add_argument("--train-shots", type=int, default=10)
    parser.add_argument("--inner-steps", type=int, default=2, help="inner steps during meta-training")
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--multi-step-loss", action=argparse.BooleanOptionalAction, default=True,
                        help="meta-train on the mean query loss after every inner step (default on)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-shots", type=int, default=5)
    parser.add_argument("--eval-tasks", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="the first training run's seed")
    parser.add_argument("--seeds", type=int, default=3, help="training runs, each with a seed of its own")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    if args.seeds < 1 or args.steps < 1:
        parser.error(f"--seeds and --steps must be at least 1, got {args.seeds} and {args.steps}.")
    return args


TEST_SEED = 10**6  # the test tasks: the same for every training run, drawn apart from every training stream


def train_and_score(args, seed):
    """One training run with `seed`: `{"train_seconds": ..., "mse_Kstep": ...}` for K in 0, 1, 5, 10."""
    keras.utils.set_random_seed(seed)
    model = keras_meta.models.mlp((1,), hidden_units=(40, 40), num_outputs=1)
    learner = keras_meta.learners.MAML(model, inner_learning_rate=args.inner_lr, inner_steps=args.inner_steps,
                                       multi_step_loss=args.multi_step_loss)
    learner.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="mse")
    train = SinusoidTasks(shots=args.train_shots, queries=args.train_shots, seed=seed)
    epochs = max(1, args.steps // 1000)
    start = time.perf_counter()
    learner.fit(train.dataset(batch_size=args.meta_batch), epochs=epochs, steps_per_epoch=args.steps // epochs,
                verbose=args.verbose)
    scores = {"train_seconds": time.perf_counter() - start}
    test = SinusoidTasks(shots=args.eval_shots, queries=100, seed=TEST_SEED)
    for steps in (0, 1, 5, 10):
        learner.eval_inner_steps = steps
        mse = learner.evaluate(test.dataset(batch_size=100, num_episodes=args.eval_tasks),
                               verbose=1 if args.verbose and steps else 0)
        scores[f"mse_{steps}step"] = float(mse)
    return scores


def main():
    args = parse_args()
    seeds = [args.seed + i for i in range(args.seeds)]
    runs = [train_and_score(args, seed) for seed in seeds]
    results = {"algo": "maml", "benchmark": "sine", "train_steps": args.steps, "meta_batch": args.meta_batch,
               "train_inner_steps": args.inner_steps, "multi_step_loss": args.multi_step_loss, "seeds": seeds}
    for key in runs[0]:
        digits = 1 if key == "train_seconds" else 4
        results[key] = round(sum(run[key] for run in runs) / len(runs), digits)  # the mean over the runs
        if len(runs) > 1:
            results[f"{key}_per_seed"] = [round(run[key], digits) for run in runs]
    print(json.dumps(record("sine", results, args.results_dir)))


if __name__ == "__main__":
    main()
