"""
Title: Second-order MAML on one CPU, GPUs or several machines
Description: Meta-train second-order MAML on the bundled Omniglot splits under the
`tf.distribute` strategy that fits the machine, resume a killed run exactly, and
evaluate 5-way 1-shot on unseen alphabets.

Run:  python examples/distributed_maml.py --output-dir runs/distributed_maml
      python examples/distributed_maml.py --cpu-replicas 2 --steps 200   # MirroredStrategy without GPUs
      # several machines: the same command on each, with TF_CONFIG naming the cluster and its index,
      # and an --output-dir every worker can read (docs/distributed.md)

Expected on a 2-core CPU with `--cpu-replicas 2 --steps 200`: about 2.0 minutes in all,
then 58.8% +- 1.5 5-way 1-shot on 600 episodes of unseen alphabets after those 200 steps
(`benchmarks/results/distributed_maml.jsonl`); the default 1000 steps train five times as
long.

Started again with the same command after being killed, a run continues from its last
completed epoch (`--steps-per-epoch` steps) with the same weights, optimizer state and
episodes.

Writes a run folder (`--output-dir`, from the chief only): `config.json` (settings and
package versions), `history.csv` (loss and accuracy per epoch; a resumed run appends to it),
`tensorboard/`, `checkpoints/` (the learner every `--checkpoint-every` steps), `maml.keras`
(the learner), `results.json` and the figure `history.png`; `backup/` holds the backups
while training runs.
"""

import argparse
import json
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

parser = argparse.ArgumentParser(description="Meta-train second-order MAML on Omniglot under tf.distribute.")
parser.add_argument("--output-dir", default="runs/distributed_maml")
parser.add_argument("--steps", type=int, default=1000, help="meta-training steps")
parser.add_argument("--steps-per-epoch", type=int, default=100, help="steps between backups")
parser.add_argument("--batch-size", type=int, default=16,
                    help="tasks per step, over all replicas (a multiple of the replicas)")
parser.add_argument("--episodes", type=int, default=600, help="evaluation episodes")
parser.add_argument("--cpu-replicas", type=int, default=1,
                    help="split the CPU into this many logical devices and mirror over them (no GPUs needed)")
parser.add_argument("--checkpoint-every", type=int, default=500, help="training steps between checkpoints")
args = parser.parse_args()
for name in ("steps", "steps_per_epoch", "batch_size", "episodes", "cpu_replicas", "checkpoint_every"):
    if getattr(args, name) < 1:
        parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
steps_per_epoch = min(args.steps_per_epoch, args.steps)
if args.steps % steps_per_epoch:
    parser.error(f"--steps ({args.steps}) must be a multiple of --steps-per-epoch ({args.steps_per_epoch}).")

"""
## The strategy

Chosen from the environment, before TensorFlow runs anything:

* `TF_CONFIG` naming more than one task: `MultiWorkerMirroredStrategy` (one process per
  machine, each machine's GPUs, or its CPU);
* `--cpu-replicas N` (N > 1): `MirroredStrategy` over N logical devices of the CPU;
* more than one GPU: `MirroredStrategy` over all of them;
* otherwise the default strategy: one GPU, or the CPU.
"""


def cluster_size():
    """Tasks (chief and workers) named in `TF_CONFIG`; 0 without it."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    except ValueError as error:
        raise SystemExit(f"TF_CONFIG is not valid JSON ({error}).") from error
    cluster = config.get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


gpus = tf.config.list_physical_devices("GPU")
if cluster_size() > 1 and args.cpu_replicas > 1:
    parser.error("--cpu-replicas is for one machine: with a TF_CONFIG cluster each worker mirrors over its GPUs, "
                 "or runs on its CPU.")

"""
On CPUs the tasks are small, so each core adapts its own task with one thread per op
(as in `omniglot_maml.py`; the learner's default `parallel_tasks="auto"` gives each of
this machine's replicas its share of the cores); on GPUs each replica adapts its tasks
one after the other.
"""

on_cpu = not gpus or args.cpu_replicas > 1
if on_cpu:
    tf.config.threading.set_intra_op_parallelism_threads(1)  # before TensorFlow starts
if cluster_size() > 1:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
elif args.cpu_replicas > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.cpu_replicas)])
elif len(gpus) > 1:
    strategy = tf.distribute.MirroredStrategy()
else:
    strategy = tf.distribute.get_strategy()  # no strategy: the GPU, or the CPU
strategy_name = {tf.distribute.MultiWorkerMirroredStrategy: "MultiWorkerMirroredStrategy",
                 tf.distribute.MirroredStrategy: "MirroredStrategy"}.get(type(strategy), "default")
replicas = strategy.num_replicas_in_sync
if args.batch_size % replicas:
    parser.error(f"--batch-size ({args.batch_size}) must be a multiple of the {replicas} replicas of "
                 f"{strategy_name}.")
is_chief = strategy.extended.should_checkpoint  # writes the backups and the run folder
record = RunRecord(args.output_dir, vars(args), overwrite=True) if is_chief else None
print(f"Strategy {strategy_name}: {replicas} replica(s), {args.batch_size // replicas} tasks each per step")

keras.utils.set_random_seed(0)

"""
## Data

Training tasks: 5-way 1-shot episodes of `small1` with rotations as new classes.
Test tasks: the `small2` alphabets that `small1` lacks.
"""

train, test = omniglot.unseen_alphabet_split(train_splits=("small1",), test_split="small2")
sampler = EpisodeSampler(train.images, train.labels, ways=5, shots=1, queries=5,
                         rotations=(0, 90, 180, 270), seed=0)

"""
## The learner, created in the strategy's scope

conv4 with a 5-way head; one SGD step of 0.4 on each task's support set, the query loss
back-propagated through it (second order). `sampler.dataset(batch_size)` is the global
batch: each replica draws its own share of every batch.
"""

with strategy.scope():
    learner = keras_meta.learners.MAML(keras_meta.models.conv4(input_shape=(28, 28, 1), num_classes=5),
                                       inner_learning_rate=0.4, inner_steps=1, eval_inner_steps=3)
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )

"""
## Meta-training that resumes

The chief backs up the learner and the position in the episode stream after every
epoch; a run started again continues from the last backup. The backups are deleted when
training completes. The chief also logs the epochs (after a resume, appending to
`history.csv`) and writes the checkpoints.
"""

backup = keras_meta.callbacks.BackupAndRestore(os.path.join(args.output_dir, "backup"))
resumed = backup.latest_backup()
resumed_epoch = 0 if resumed is None else int(resumed[1]["epoch"])
if resumed_epoch:
    print(f"Resuming after epoch {resumed_epoch}")
callbacks = [backup]
if is_chief:
    callbacks = [*record.callbacks(checkpoint_every=args.checkpoint_every), backup]
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.CSVLogger):
            callback.append = resumed_epoch > 0
start = time.perf_counter()
history = learner.fit(sampler.dataset(batch_size=args.batch_size), epochs=args.steps // steps_per_epoch,
                      steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=2 if is_chief else 0)
train_seconds = time.perf_counter() - start

"""
## Evaluation on unseen alphabets

Each episode is predicted and counted once, whatever the strategy.
"""

score = evaluate_few_shot(learner, test.images, test.labels, ways=5, shots=1, num_episodes=args.episodes,
                          verbose=0)
print(f"5-way 1-shot accuracy: {score.accuracy:.2%} +- {score.ci95:.2%}")

if is_chief:
    record.save_learner(learner, "maml.keras")
    results = {"strategy": strategy_name, "replicas": replicas, "batch_size": args.batch_size,
               "steps": args.steps, "resumed_after_epoch": resumed_epoch, "train_seconds": round(train_seconds, 1),
               "final_train_loss": history.history["loss"][-1] if history.history.get("loss") else None,
               "acc_5w1s": score.accuracy, "ci95_5w1s": score.ci95, "episodes": score.num_episodes}
    record.write_results(results)
    # the curves of every epoch, those before a resume included
    logged = np.atleast_1d(np.genfromtxt(record.path("history.csv"), delimiter=",", names=True))
    curves = {key: logged[key] for key in logged.dtype.names if key != "epoch" and not np.isnan(logged[key]).all()}
    record.save_figure(plots.plot_history(curves), "history")
    print(f"Written to {os.path.abspath(args.output_dir)}")
