"""The update guard under a `MirroredStrategy` of two logical CPUs (device set-up must come first).

`python tests/guard_mirrored.py OUT`: for several learners, a NaN in the second
replica's share of a batch stops `fit` (or is skipped) on both replicas with
nothing changed; writes `OUT/guard_mirrored.json`.
"""

import json
import os
import sys

from distributed_runs import learner_makers, make_strategy


def main(out):
    strategy = make_strategy("mirrored")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_meta import learners

    ways, tasks = 3, 4
    rng = np.random.default_rng(0)
    inputs = {"support_x": rng.normal(size=(tasks, ways, 8, 8, 1)).astype("float32"),
              "support_y": np.tile(np.arange(ways), (tasks, 1)).astype("int32"),
              "query_x": rng.normal(size=(tasks, 2 * ways, 8, 8, 1)).astype("float32")}
    query_y = np.tile(np.repeat(np.arange(ways), 2), (tasks, 1)).astype("int32")
    broken = dict(inputs, query_x=inputs["query_x"].copy())
    broken["query_x"][tasks - 1, 0, 0, 0, 0] = np.nan  # in the second replica's half of the batch

    def batch(x):
        return tf.data.Dataset.from_tensors((x, query_y))

    def state(learner):
        return [np.array(v.numpy()) for v in learner.weights + list(learner.optimizer.variables)]

    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    report = {}
    makers = learner_makers(learners, keras, ways)
    for name in ("protonet", "r2d2", "maml", "reptile"):
        with strategy.scope():
            learner = makers[name]()
            learner.compile(optimizer=keras.optimizers.Adam(1e-2),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        learner.fit(batch(inputs), verbose=0)
        before = state(learner)
        try:
            learner.fit(batch(broken), verbose=0)
            raised = None
        except learners.NonFiniteError as error:
            raised = str(error)
        unchanged_after_raise = same(before, state(learner))
        learner.on_non_finite = "skip"
        skipped = learner.fit(batch(broken), verbose=0).history["skipped_steps"][-1]
        unchanged_after_skip = same(before, state(learner))
        learner.fit(batch(inputs), verbose=0)
        report[name] = {"raised": raised, "unchanged_after_raise": unchanged_after_raise, "skipped": skipped,
                        "unchanged_after_skip": unchanged_after_skip, "trains_after": not same(before, state(learner)),
                        "finite": all(np.isfinite(v).all() for v in state(learner))}
    with open(os.path.join(out, "guard_mirrored.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
