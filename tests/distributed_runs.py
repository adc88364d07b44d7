"""Training runs under `tf.distribute`, one process per strategy (device set-up must come first).

`python tests/distributed_runs.py mirrored OUT`: every learner takes two SGD steps
on one device and, from the same weights on the same global batches, under a
`MirroredStrategy` of two logical CPU devices; writes `OUT/mirrored.json` and the
one-device weights `OUT/single_<learner>.npz`.

`TF_CONFIG=... python tests/distributed_runs.py worker OUT`: one worker of a
`MultiWorkerMirroredStrategy`; writes `OUT/worker<i>_<learner>.npz` and
`OUT/worker<i>.json`.
"""

import json
import os
import sys


def learner_makers(learners, keras, num_classes):
    """name -> `() -> compiled-ready learner` on tiny conv models with batch normalisation."""

    def body(head=()):
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                                 keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), *head])

    def classifier():
        return body([keras.layers.Dense(num_classes)])

    return {
        "protonet": lambda: learners.PrototypicalNetwork(body()),
        "protonet_clipped": lambda: learners.PrototypicalNetwork(body(), gradient_clipnorm=1e-3),
        "matching": lambda: learners.MatchingNetwork(body()),
        "matching_fce": lambda: learners.MatchingNetwork(body(), full_context_embeddings=True),
        "r2d2": lambda: learners.R2D2(body()),
        "meta_network": lambda: learners.MetaNetwork(body(), ways=num_classes),
        "embedding_meta_network": lambda: learners.EmbeddingMetaNetwork(body()),
        "maml": lambda: learners.MAML(classifier(), inner_learning_rate=0.1, inner_steps=2),
        "fomaml": lambda: learners.MAML(classifier(), inner_learning_rate=0.1, first_order=True),
        "maml_truncated": lambda: learners.MAML(classifier(), inner_learning_rate=0.1, inner_steps=2, truncation=1),
        "maml_recompute": lambda: learners.MAML(classifier(), inner_learning_rate=0.1, inner_steps=2,
                                                recompute_inner_steps=True),
        "mamlpp": lambda: learners.MAMLPlusPlus(classifier(), training_steps=3, inner_steps=2),  # 1 first-order step
        "meta_sgd": lambda: learners.MetaSGD(classifier(), inner_learning_rate=0.1),
        "anil": lambda: learners.ANIL(classifier(), inner_learning_rate=0.1),
        "reptile": lambda: learners.Reptile(classifier(), inner_optimizer=keras.optimizers.SGD(0.1), inner_steps=2),
        "imaml": lambda: learners.iMAML(classifier(), inner_learning_rate=0.1, inner_steps=2, cg_steps=2),
    }


def make_strategy(kind):
    """`mirrored` (two logical CPU devices), `worker` (from TF_CONFIG) or `one_device`; call it first."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads
    import tensorflow as tf

    if kind == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if kind == "worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def main(mode, out):
    strategy = make_strategy(mode)
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_meta import learners
    from keras_meta.data import EpisodeSampler
    from keras_meta.evaluation import evaluate_few_shot

    ways, steps, batch = 3, 2, 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8, 8, 1)).astype("float32")
    y = np.repeat(np.arange(20), 10)
    sampler = EpisodeSampler(x, y, ways=ways, shots=1, queries=2, seed=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    makers = learner_makers(learners, keras, ways)
    worker = 0 if mode == "mirrored" else strategy.cluster_resolver.task_id
    report = {}

    def train(name, scope):
        keras.utils.set_random_seed(0)
        with scope:
            learner = makers[name]()
            learner.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss, metrics=["sparse_categorical_accuracy"])
        start = [w.copy() for w in learner.get_weights()]
        trainable_start = [np.array(v) for v in learner.trainable_variables]
        learner.fit(sampler.dataset(batch_size=batch), epochs=1, steps_per_epoch=steps, verbose=0)
        learner.trainable_update_norm = float(np.sqrt(sum(
            np.sum((np.array(v) - s) ** 2) for v, s in zip(learner.trainable_variables, trainable_start, strict=True))))
        return learner, start

    for name in makers:
        if mode == "mirrored":
            single, start = train(name, tf.distribute.get_strategy().scope())
            np.savez(os.path.join(out, f"single_{name}.npz"), *start, *single.get_weights())
        learner, _ = train(name, strategy.scope())
        weights = learner.get_weights()
        copies = [[np.asarray(c) for c in strategy.experimental_local_results(v.value)] for v in learner.weights]
        entry = {"replicas_identical": all(all(np.array_equal(c[0], other) for other in c[1:]) for c in copies)}
        if mode == "mirrored":
            reference = single.get_weights()
            update = max(float(np.abs(r - s).max()) for r, s in zip(reference, start, strict=True))
            entry["update_max"] = update
            entry["max_difference"] = max(float(np.abs(w - r).max()) for w, r in zip(weights, reference, strict=True))
            entry["trainable_update_norms"] = [single.trainable_update_norm, learner.trainable_update_norm]
        else:
            np.savez(os.path.join(out, f"worker{worker}_{name}.npz"), *weights)
        if name in ("protonet", "maml", "reptile"):
            plain = makers[name]()  # the same weights on one device: what evaluation must match
            plain.compile(loss=loss)
            plain.set_weights(weights)
            scores = [evaluate_few_shot(model, x, y, ways=ways, shots=1, queries=2, num_episodes=10, verbose=0)
                      for model in (learner, plain)]
            episodes = sampler.dataset(batch_size=batch, num_episodes=6)
            entry["eval_episodes"] = scores[0].num_episodes
            entry["eval_matches_one_device"] = bool(np.array_equal(scores[0].per_episode, scores[1].per_episode))
            entry["keras_evaluate"] = learner.evaluate(episodes, verbose=0, return_dict=True)["loss"]
            entry["predict_rows"] = int(learner.predict(episodes, verbose=0).shape[0])
            inputs = next(iter(episodes))[0]
            entry["predict_on_batch_difference"] = float(np.abs(
                learner.predict_on_batch(inputs) - plain.predict_on_batch(inputs)).max())
            support_x, support_y = x[[0, 10, 20]], np.array([0, 1, 2])
            adapted = [model.adapt(support_x, support_y) for model in (learner, plain)]
            entry["adapt_difference"] = float(np.abs(adapted[0].predict(x[:6], verbose=0)
                                                     - adapted[1].predict(x[:6], verbose=0)).max())
        report[name] = entry
    with open(os.path.join(out, f"{mode if mode == 'mirrored' else f'worker{worker}'}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
