"""A meta-training run that may be killed and started again: `python tests/resume_runs.py HOW LEARNER STRATEGY OUT`.

HOW: `full` (never interrupted), `kill` (SIGKILL in the middle of the third of
four epochs), `kill_in_save` (SIGKILL while the second epoch's backup is being
written, after its weights file is half written) or `resume` (the same command
again). LEARNER: `protonet` or `maml` (second order). STRATEGY: `one_device` or
`mirrored` (two logical CPU devices). The final weights go to `OUT/<HOW>.npz`.
"""

import os
import signal
import sys


def main(how, name, strategy_name, out):
    from distributed_runs import make_strategy  # beside this script

    strategy = make_strategy(strategy_name)
    import keras
    import numpy as np

    import keras_meta
    from keras_meta import learners
    from keras_meta.data import EpisodeSampler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8, 8, 1)).astype("float32")
    y = np.repeat(np.arange(20), 10)
    sampler = EpisodeSampler(x, y, ways=3, shots=1, queries=2, seed=0)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        body = [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D()]
        if name == "protonet":
            learner = learners.PrototypicalNetwork(keras.Sequential(body))
        else:
            learner = learners.MAML(keras.Sequential(body + [keras.layers.Dense(3)]), inner_learning_rate=0.1)
        learner.compile(optimizer=keras.optimizers.Adam(1e-2),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Kill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 7:  # epoch 3 of 4, 3 steps each
                os.kill(os.getpid(), signal.SIGKILL)

    callbacks = [keras_meta.callbacks.BackupAndRestore(os.path.join(out, "backup"))]
    if how == "kill":
        callbacks.append(Kill())
    if how == "kill_in_save":
        save_weights = learner.save_weights

        def dying_save(path, **kwargs):
            save_weights(path, **kwargs)
            if int(learner.optimizer.iterations.numpy()) == 6:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

        learner.save_weights = dying_save
    learner.fit(sampler.dataset(batch_size=4), epochs=4, steps_per_epoch=3, callbacks=callbacks, verbose=0)
    np.savez(os.path.join(out, f"{how}.npz"), *learner.get_weights())


if __name__ == "__main__":
    main(*sys.argv[1:5])
