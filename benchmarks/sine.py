"""MAML on sinusoid regression, the set-up of the MAML paper (Finn et al. 2017).

A 1-40-40-1 ReLU MLP is meta-trained on K-shot sinusoid tasks (Adam 1e-3,
meta-batch 25, inner SGD with step 0.01; by default 2 inner steps with the
multi-step loss, so that 1 step and 10 steps are both good); then, on a fixed set of new tasks,
it adapts to 5 support points with 1, 5 and 10 steps and is scored by the mean
squared error on 100 query points per task. Prints one JSON line.

    python benchmarks/sine.py
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    return parser.parse_args()


def main():
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    model = keras_meta.models.mlp((1,), hidden_units=(40, 40), num_outputs=1)
    learner = keras_meta.learners.MAML(model, inner_learning_rate=args.inner_lr, inner_steps=args.inner_steps,
                                       multi_step_loss=args.multi_step_loss)
    learner.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="mse")
    train = SinusoidTasks(shots=args.train_shots, queries=args.train_shots, seed=args.seed)
    epochs = max(1, args.steps // 1000)
    start = time.perf_counter()
    learner.fit(train.dataset(batch_size=args.meta_batch), epochs=epochs, steps_per_epoch=args.steps // epochs,
                verbose=args.verbose)
    results = {"algo": "maml", "benchmark": "sine", "train_steps": args.steps, "meta_batch": args.meta_batch,
               "train_inner_steps": args.inner_steps, "multi_step_loss": args.multi_step_loss,
               "train_seconds": round(time.perf_counter() - start, 1)}
    test = SinusoidTasks(shots=args.eval_shots, queries=100, seed=args.seed + 1)
    for steps in (1, 5, 10):
        learner.eval_inner_steps = steps
        mse = learner.evaluate(test.dataset(batch_size=100, num_episodes=args.eval_tasks),
                               verbose=1 if args.verbose else 0)
        results[f"mse_{steps}step"] = round(float(mse), 4)
    learner.eval_inner_steps = 0
    results["mse_0step"] = round(float(learner.evaluate(test.dataset(batch_size=100, num_episodes=args.eval_tasks),
                                                        verbose=0)), 4)
    print(json.dumps(record("sine", results, args.results_dir)))


if __name__ == "__main__":
    main()
