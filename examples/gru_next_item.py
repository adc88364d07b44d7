"""
Title: Per-user next-item prediction with a GRU and MAML
Description: Each user has habits of their own: after item a they tend to pick item
P_user(a). MAML meta-learns a GRU recommender that adapts to a new user from 10 of their
sessions. Against a baseline, the same GRU trained on the pooled sessions of many users
and fine-tuned the same way: Acc@1, Recall@5 and MRR before and after adaptation.

Run:  python examples/gru_next_item.py --output-dir runs/gru_next_item

Expected on a 2-core CPU: about 1.3 minutes in all; on 300 new users, MAML after 3 inner
steps 29.5% Acc@1 and MRR 0.39, against 0.19 before adapting and 0.20 for the pooled
baseline fine-tuned the same way (`benchmarks/results/gru_next_item.jsonl`).

Writes a run folder (`--output-dir`): `config.json` (settings and package versions),
`history.csv` (MAML's loss and ranking metrics per epoch), `tensorboard/`, `checkpoints/` (the
MAML learner every `--checkpoint-every` steps), `maml_gru.keras` (the learner), `results.json`
(the JSON line it prints last: the table and the scores behind it), and the figures
`history.png`, `adaptation.png` (MAML's query loss and Acc@1 on new users after 0 to 3 inner
steps) and `comparison.png` (a bar chart of the table).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta import plots  # noqa: E402
from keras_meta.data import QUERY_X, SUPPORT_X, SUPPORT_Y, TaskDistribution  # noqa: E402
from keras_meta.runs import RunRecord  # noqa: E402

parser = argparse.ArgumentParser(description="Per-user next-item prediction with MAML, against a pooled baseline.")
parser.add_argument("--steps", type=int, default=600, help="training steps of 16 users (MAML and the baseline)")
parser.add_argument("--users", type=int, default=300, help="evaluation users")
parser.add_argument("--output-dir", default="runs/gru_next_item")
parser.add_argument("--checkpoint-every", type=int, default=200, help="MAML training steps between checkpoints")
args = parser.parse_args()
record = RunRecord(args.output_dir, vars(args), overwrite=True)
keras.utils.set_random_seed(0)

"""
## Users as tasks

A `TaskDistribution` subclass draws one task from a seed, in graph mode: a user (a random
permutation `P` of the items), then sessions of 6 items where each next item is `P` of
the previous one with probability 0.8 and a random item otherwise. Inputs are the first
5 items, the target is the 6th. The support set is 10 sessions, the query set 10 more.
"""


class UserSessions(TaskDistribution):
    check_drawn_labels = False  # labels are item ids, not the classes 0..N-1 of an N-way episode

    def __init__(self, num_items=20, window=5, shots=10, queries=10, habit=0.8, seed=None):
        super().__init__(seed)
        self.num_items, self.window, self.shots, self.queries, self.habit = num_items, window, shots, queries, habit

    def sample_task(self, seed):
        seeds = tf.random.experimental.stateless_split(seed, num=4)
        sessions, length = self.shots + self.queries, self.window + 1
        habit = tf.argsort(tf.random.stateless_uniform([self.num_items], seeds[0]))
        random_items = tf.random.stateless_uniform([sessions, length], seeds[1], 0, self.num_items, tf.int32)
        follows_habit = tf.random.stateless_uniform([sessions, length], seeds[2]) < self.habit
        items = [random_items[:, 0]]
        for t in range(1, length):
            items.append(tf.where(follows_habit[:, t], tf.gather(habit, items[-1]), random_items[:, t]))
        items = tf.stack(items, axis=1)
        x, y = items[:, : self.window], items[:, self.window]
        inputs = {SUPPORT_X: x[: self.shots], SUPPORT_Y: y[: self.shots], QUERY_X: x[self.shots:]}
        return inputs, y[self.shots:]


"""
## A GRU recommender, meta-trained with second-order MAML
"""

num_items, inner_steps, inner_learning_rate = 20, 3, 0.5


def gru_recommender():
    return keras.Sequential([
        keras.Input((5,), dtype="int32"),
        keras.layers.Embedding(num_items, 16),
        keras.layers.GRU(32),
        keras.layers.Dense(num_items),
    ])


def ranking_metrics():
    return [keras_meta.metrics.accuracy_at_1(), keras_meta.metrics.recall_at_k(5),
            keras_meta.metrics.MeanReciprocalRank()]


def loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


model = gru_recommender()
# Labels are item ids, one label space for every user: `episode_labels=False`.
learner = keras_meta.learners.MAML(model, inner_learning_rate=inner_learning_rate, inner_steps=inner_steps,
                                   episode_labels=False)
learner.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss(), metrics=ranking_metrics())
epochs = max(1, args.steps // 100)
start = time.perf_counter()
history = learner.fit(UserSessions(seed=0).dataset(batch_size=16), epochs=epochs,
                      steps_per_epoch=args.steps // epochs, verbose=2,
                      callbacks=record.callbacks(checkpoint_every=args.checkpoint_every))
maml_seconds = time.perf_counter() - start

"""
## The baseline: the same GRU, trained on the pooled sessions of many users

No meta-learning: an ordinary `fit` on the support and query sessions of the same
stream of training users (16 users, 320 sessions a step, as many steps as MAML),
flattened into one set of (5 items, next item) pairs. With every user's habit a
different permutation, the pooled data teaches what holds for everyone (a session's
own items hint at the user's habit); adaptation has to find the rest.
"""


def pooled_sessions(inputs, query_y):
    x = tf.concat([inputs[SUPPORT_X], inputs[QUERY_X]], axis=1)
    y = tf.concat([inputs[SUPPORT_Y], query_y], axis=1)
    return tf.reshape(x, [-1, x.shape[-1]]), tf.reshape(y, [-1])


baseline_model = gru_recommender()
baseline_model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss(), metrics=ranking_metrics())
start = time.perf_counter()
baseline_model.fit(UserSessions(seed=0).dataset(batch_size=16).map(pooled_sessions), epochs=epochs,
                   steps_per_epoch=args.steps // epochs, verbose=2)
baseline_seconds = time.perf_counter() - start

# The baseline adapts exactly as MAML does: `MAML` here only fine-tunes the trained
# weights on a user's support sessions (same inner steps and rate) and scores the query.
baseline = keras_meta.learners.MAML(baseline_model, inner_learning_rate=inner_learning_rate,
                                    inner_steps=inner_steps, episode_labels=False)
baseline.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss(), metrics=ranking_metrics())

"""
## New users: zero-shot versus few-shot, baseline versus MAML

The same held-out users (seed 1) for both, scored on their 10 query sessions after 0
steps (zero-shot) and after 3 SGD steps on their 10 support sessions (few-shot).
"""

new_users = UserSessions(seed=1).dataset(batch_size=50, num_episodes=args.users)
results, table = {}, {}
for name, adapter in (("baseline", baseline), ("maml", learner)):
    for steps in (0, inner_steps):
        adapter.eval_inner_steps = steps
        scores = adapter.evaluate(new_users, verbose=0, return_dict=True)
        scores = {k: round(float(v), 4) for k, v in scores.items()}
        results[f"after_{steps}_steps" if name == "maml" else f"baseline_after_{steps}_steps"] = scores
        table[f"{name}_{steps}_steps"] = {k: scores[k] for k in ("acc@1", "recall@5", "mrr")}
learner.eval_inner_steps = baseline.eval_inner_steps = inner_steps
results["table"] = table
results["train_seconds"] = {"maml": round(maml_seconds, 1), "baseline": round(baseline_seconds, 1)}

columns = ("acc@1", "recall@5", "mrr")
print(f"\n{'':<22}" + "".join(f"{c:>10}" for c in columns))
for row, scores in table.items():
    name, steps = row.split("_")[:2]
    label = f"{'MAML' if name == 'maml' else 'baseline'}, {steps} steps"
    print(f"{label:<22}" + "".join(f"{scores[c]:>10.4f}" for c in columns))

record.save_learner(learner, "maml_gru.keras")
record.write_results(results)

"""
## Figures

MAML's training curves; its query loss and Acc@1 on 16 new users after 0 to 3 inner
steps; and the table as a bar chart.
"""

inputs, query_y = next(iter(UserSessions(seed=1).dataset(batch_size=16)))
fig = Figure(figsize=(7, 4), layout="constrained")
ax = fig.add_subplot()
width = 0.8 / len(table)
for i, (row, scores) in enumerate(table.items()):
    name, steps = row.split("_")[:2]
    ax.bar([c + (i - (len(table) - 1) / 2) * width for c in range(len(columns))],
           [scores[c] for c in columns], width, label=f"{'MAML' if name == 'maml' else 'baseline'}, {steps} steps")
ax.set_xticks(range(len(columns)), ["Acc@1", "Recall@5", "MRR"])
ax.set_ylim(0, 1)
ax.set_title(f"New users: zero-shot vs {inner_steps}-step adaptation on 10 sessions")
ax.legend()
figures = {"history": plots.plot_history(history),
           "adaptation": plots.plot_adaptation(learner, inputs, query_y, steps=inner_steps),
           "comparison": fig}
for name, figure in figures.items():
    record.save_figure(figure, name)
print(f"Written to {os.path.abspath(args.output_dir)}")
print(json.dumps(results))
