"""
Title: Per-user next-item prediction with a GRU and MAML
Description: Each user has habits of their own: after item a they tend to pick item
P_user(a). MAML meta-learns a GRU recommender that adapts to a new user from 10 of their
sessions; Acc@1, Recall@5 and MRR before and after adaptation.

Run:  python examples/gru_next_item.py
"""

import argparse
import json

import keras_meta  # before Keras and TensorFlow: turns on TensorFlow's oneDNN CPU kernels
import keras
import tensorflow as tf

from keras_meta.data import QUERY_X, SUPPORT_X, SUPPORT_Y, TaskDistribution

parser = argparse.ArgumentParser(description="Per-user next-item prediction with MAML.")
parser.add_argument("--steps", type=int, default=600, help="meta-training steps of 16 users")
parser.add_argument("--users", type=int, default=300, help="evaluation users")
args = parser.parse_args()
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

num_items = 20
model = keras.Sequential([
    keras.Input((5,), dtype="int32"),
    keras.layers.Embedding(num_items, 16),
    keras.layers.GRU(32),
    keras.layers.Dense(num_items),
])
# Labels are item ids, one label space for every user: `episode_labels=False`.
learner = keras_meta.learners.MAML(model, inner_learning_rate=0.5, inner_steps=3, episode_labels=False)
ranking = [keras_meta.metrics.accuracy_at_1(), keras_meta.metrics.recall_at_k(5),
           keras_meta.metrics.MeanReciprocalRank()]
learner.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=ranking)
epochs = max(1, args.steps // 100)
learner.fit(UserSessions(seed=0).dataset(batch_size=16), epochs=epochs, steps_per_epoch=args.steps // epochs,
            verbose=2)

"""
## New users: before and after adapting to their 10 sessions
"""

new_users = UserSessions(seed=1).dataset(batch_size=50, num_episodes=args.users)
results = {}
for steps in (0, 3):
    learner.eval_inner_steps = steps
    scores = learner.evaluate(new_users, verbose=0, return_dict=True)
    results[f"after_{steps}_steps"] = {k: round(float(v), 4) for k, v in scores.items()}
print(json.dumps(results))
