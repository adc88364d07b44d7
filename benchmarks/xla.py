"""Meta-training speed with and without XLA (`compile(jit_compile=True)`), per learner.

Synthetic Omniglot-shaped episodes (28x28x1), 5-way 1-shot with 5 queries
per class, 4 tasks per step; conv4 (BatchNorm) as the backbone or the model;
Adam 1e-3 outside. Gradient-based learners adapt with 1 inner SGD step of
0.4 (MAML, first-order MAML, Meta-SGD, ANIL), 3 steps for MAML with
`truncation=1`, Reptile (its default inner Adam) and iMAML (3 conjugate
gradient steps). A pool of 16 episodes, each with its own label order, is
reused, so data costs nothing. For each learner, one `fit` of `--warmup`
steps, then `--steps` timed steps, first in graph mode, then with XLA, on
the device TensorFlow finds. Prints one JSON line: `<learner>_tasks_per_s`,
`<learner>_xla_tasks_per_s`, their ratio `<learner>_xla_vs_graph`, and the
warm-up seconds of each (tracing and, with XLA, compiling).

    python benchmarks/xla.py
    python benchmarks/xla.py --learners maml,protonet --steps 20 --warmup 3
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_meta import learners  # noqa: E402
from keras_meta.models import conv4  # noqa: E402

from recording import add_results_argument, record  # noqa: E402

WAYS, SHOTS, QUERIES, META_BATCH, POOL = 5, 1, 5, 4, 16


def gradient(cls, **options):
    return lambda: cls(conv4(num_classes=WAYS), **options)


def metric(cls, **options):
    return lambda: cls(conv4(), **options)


LEARNERS = {
    "protonet": metric(learners.PrototypicalNetwork),
    "matching": metric(learners.MatchingNetwork),
    "matching_fce": metric(learners.MatchingNetwork, full_context_embeddings=True),
    "r2d2": metric(learners.R2D2),
    "meta_network": metric(learners.MetaNetwork, ways=WAYS),
    "embedding_meta_network": metric(learners.EmbeddingMetaNetwork),
    "maml": gradient(learners.MAML, inner_learning_rate=0.4, inner_steps=1),
    "fomaml": gradient(learners.MAML, inner_learning_rate=0.4, inner_steps=1, first_order=True),
    "maml_truncated": gradient(learners.MAML, inner_learning_rate=0.4, inner_steps=3, truncation=1),
    "metasgd": gradient(learners.MetaSGD, inner_learning_rate=0.4, inner_steps=1),
    "anil": gradient(learners.ANIL, inner_learning_rate=0.4, inner_steps=1),
    "reptile": gradient(learners.Reptile, inner_steps=3),
    "imaml": gradient(learners.iMAML, inner_learning_rate=0.4, inner_steps=3, cg_steps=3),
}


class StepClock(keras.callbacks.Callback):
    """`times[i]`: when training step `i` of one `fit` ended."""

    def on_train_begin(self, logs=None):
        self.start, self.times = time.perf_counter(), []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def episodes():
    """A repeated dataset of `POOL` synthetic episodes, `META_BATCH` at a time."""
    rng = np.random.default_rng(0)
    support_y = np.repeat(np.arange(WAYS, dtype=np.int32), SHOTS)
    query_y = np.repeat(np.arange(WAYS, dtype=np.int32), QUERIES)
    inputs = {
        "support_x": rng.random((POOL, len(support_y), 28, 28, 1), np.float32),
        "support_y": np.stack([rng.permutation(support_y) for _ in range(POOL)]),
        "query_x": rng.random((POOL, len(query_y), 28, 28, 1), np.float32),
    }
    labels = np.stack([rng.permutation(query_y) for _ in range(POOL)])
    data = tf.data.Dataset.from_tensor_slices((inputs, labels)).repeat().batch(META_BATCH).prefetch(2)
    options = tf.data.Options()
    options.autotune.enabled = False  # its tuning thread delays the end of `fit`
    return data.with_options(options)


def measure(name, jit_compile, warmup, steps, data):
    """`(tasks per second, warm-up seconds)` of one learner in one mode."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    learner = LEARNERS[name]()
    learner.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    clock = StepClock()
    learner.fit(data, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[clock])
    seconds = clock.times[-1] - clock.times[warmup - 1]
    return META_BATCH * steps / seconds, clock.times[warmup - 1] - clock.start


def device_info():
    """The device TensorFlow runs the learners on (an accelerator if there is one), and its model name."""
    logical = tf.config.list_logical_devices()
    device = next((d for d in logical if d.device_type != "CPU"), logical[0])
    model = None
    if device.device_type == "GPU":
        gpus = tf.config.list_physical_devices("GPU")
        model = tf.config.experimental.get_device_details(gpus[0]).get("device_name") if gpus else None
    elif device.device_type == "CPU":
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
        except (OSError, StopIteration):
            model = platform.processor() or None
    return {"device": device.name, "device_model": model, "cpu_count": os.cpu_count()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_results_argument(parser)
    parser.add_argument("--learners", default=",".join(LEARNERS), help=f"comma-separated, from {list(LEARNERS)}")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per learner and mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, XLA compiling)")
    args = parser.parse_args()
    names = [name for name in args.learners.split(",") if name]
    unknown = [name for name in names if name not in LEARNERS]
    if unknown or not names:
        parser.error(f"unknown learners {unknown}; choose from {list(LEARNERS)}")
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"--steps and --warmup must be at least 1, got {args.steps} and {args.warmup}.")

    probe = LEARNERS["protonet"]()
    probe.compile(loss="mse")  # jit_compile="auto"
    results = {"benchmark": "xla", **device_info(), "auto_jit_compile": bool(probe.jit_compile),
               "ways": WAYS, "shots": SHOTS, "queries": QUERIES, "meta_batch": META_BATCH,
               "steps": args.steps, "warmup": args.warmup}
    data = episodes()
    for name in names:
        graph, graph_warmup = measure(name, False, args.warmup, args.steps, data)
        xla, xla_warmup = measure(name, True, args.warmup, args.steps, data)
        results.update({f"{name}_tasks_per_s": round(graph, 3), f"{name}_xla_tasks_per_s": round(xla, 3),
                        f"{name}_xla_vs_graph": round(xla / graph, 2),
                        f"{name}_warmup_seconds": round(graph_warmup, 1),
                        f"{name}_xla_warmup_seconds": round(xla_warmup, 1)})
    print(json.dumps(record("xla", results, args.results_dir)))


if __name__ == "__main__":
    main()
