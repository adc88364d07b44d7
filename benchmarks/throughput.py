"""Meta-training throughput and peak memory, optionally side by side with learn2learn.

Workloads (synthetic Omniglot-shaped data, 28x28x1, conv4 with BatchNorm; Adam
1e-3 outside, SGD 0.4 inside; a pool of 64 tasks reused, so data costs nothing):

* `maml_k1`, `maml_k5`: second-order MAML, 5-way 1-shot, 15 queries, 32 tasks
  per step, 1 or 5 inner steps;
* `maml_k10`, `maml_k10_recompute`: second-order MAML with 10 inner steps,
  without and with `recompute_inner_steps=True` (inner steps recomputed while
  back-propagating: memory for time); the JSON line adds
  `maml_k10_recompute_tensors_peak_vs_maml_k1`, the tensor peak of 10
  recomputed steps over that of 1 plain step;
* `fomaml_k1`: first-order MAML, same set-up, 1 inner step;
* `protonet`: Prototypical Networks, 20-way 5-shot, 15 queries, 1 episode per step.

Each workload runs in its own process (so peak resident memory is its own):
one `fit` of warm-up steps then timed steps. Memory is reported twice for both
libraries: `..._peak_rss_mb` is the process's peak resident set (`ru_maxrss`),
which counts the pages of the framework's shared libraries read from disk
(about 330 MiB for TensorFlow, 130 MiB for PyTorch); `..._peak_anon_mb` is the
peak of its anonymous memory (`RssAnon`: tensors, graphs, Python objects),
sampled every 5 ms from `/proc` by this script for both libraries alike.
For keras-meta, `..._import_anon_mb` and `..._import_file_mb` split the memory
taken by `import keras_meta` (TensorFlow and Keras) the same way, and
`..._tensors_peak_mb` is the peak of TensorFlow's tensor allocator.
With `--peer PYTHON --peer-script FILE` (a Python that has learn2learn, and
a script that runs these workloads with it: the options `--algo --ways --shots
--queries --meta-batch --iters [--steps --inner-lr]`, printing a JSON line with
`throughput_per_s`; `$KERAS_META_PEER_SCRIPT` by default) the same workload
runs with learn2learn right after ours, and the JSON line gets
`..._vs_learn2learn` speed ratios; with `--onednn-off` each workload also runs
with TensorFlow's oneDNN CPU kernels off (keras-meta turns them on), for
`..._onednn_vs_off` ratios; with `--baseline DIR` (a checkout of another
version of keras-meta, e.g. `git worktree add /tmp/base v0.1`) each workload
also runs with that version's package, for `..._vs_baseline` speed ratios
(what a change costs or saves). With `--repeats R` every measurement is taken R
times, the variants of a workload alternating (ours, peer, ours, peer, ...),
and the JSON line reports medians, with each round's ratio in
`..._vs_learn2learn_runs` (the machines are noisy). Ops run on 2 threads and
the MAML workloads adapt `parallel_tasks="auto"` tasks at a time (the learners'
default: one per core; `parallel_tasks_at_once` in the JSON line) unless
`--parallel-tasks N` or `--intra-op-threads N` say otherwise
(docs/gradient_based_learners.md, "Speed on CPUs"). ProtoNet, one episode per
step, is slower with one thread per op, so measure it in a run of its own with
the default. Prints one JSON line.

    python benchmarks/throughput.py --peer $HOME/l2lenv/bin/python --peer-script peer_learn2learn.py --onednn-off \
        --repeats 3
    python benchmarks/throughput.py --baseline /tmp/base --repeats 5 --workloads maml_k1,fomaml_k1,protonet
    python benchmarks/throughput.py --peer $HOME/l2lenv/bin/python --peer-script peer_learn2learn.py --repeats 3 \
        --intra-op-threads 1 --workloads maml_k1,maml_k5,fomaml_k1
    python benchmarks/throughput.py --parallel-tasks 1 --workloads maml_k1,maml_k5,fomaml_k1  # least memory
"""

import argparse
import concurrent.futures
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from options import parallel_tasks  # noqa: E402
from recording import add_results_argument, record  # noqa: E402

WORKLOADS = {  # `recompute`: MAML's recompute_inner_steps (learn2learn has no such option: no peer run)
    "maml_k1": dict(algo="maml", steps=1, ways=5, shots=1, queries=15, meta_batch=32),
    "maml_k5": dict(algo="maml", steps=5, ways=5, shots=1, queries=15, meta_batch=32),
    "maml_k10": dict(algo="maml", steps=10, ways=5, shots=1, queries=15, meta_batch=32),
    "maml_k10_recompute": dict(algo="maml", steps=10, ways=5, shots=1, queries=15, meta_batch=32, recompute=True),
    "fomaml_k1": dict(algo="fomaml", steps=1, ways=5, shots=1, queries=15, meta_batch=32),
    "protonet": dict(algo="protonet", steps=0, ways=20, shots=5, queries=15, meta_batch=1),
}
UNIT = {"protonet": "episodes_per_s"}
HERE = os.path.dirname(os.path.abspath(__file__))


def measure(name, warmup, iters, jit_compile=False, parallel_tasks="auto", intra_op_threads=2):
    """Runs one workload in this process; returns tasks (or episodes) per second and peak RSS."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_meta

    def default_tasks_at_once():  # a --baseline checkout from before "auto" adapted one task at a time
        return getattr(keras_meta.learners, "auto_parallel_tasks", lambda: 1)()

    after_import = {kind: resident_kib("self", kind) / 1024.0 for kind in ("RssAnon", "RssFile")}

    class StepClock(keras.callbacks.Callback):
        """`times[i]`: when training step `i` of one `fit` ended (one `fit`, one data iterator, as a peer's loop)."""

        def on_train_begin(self, logs=None):
            self.start, self.times = time.perf_counter(), []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    w = WORKLOADS[name]
    rng = np.random.default_rng(0)
    pool = 64
    inputs = {
        "support_x": rng.random((pool, w["ways"] * w["shots"], 28, 28, 1), np.float32),
        "support_y": np.tile(np.repeat(np.arange(w["ways"], dtype=np.int32), w["shots"]), (pool, 1)),
        "query_x": rng.random((pool, w["ways"] * w["queries"], 28, 28, 1), np.float32),
    }
    labels = np.tile(np.repeat(np.arange(w["ways"], dtype=np.int32), w["queries"]), (pool, 1))
    data = tf.data.Dataset.from_tensor_slices((inputs, labels)).repeat().batch(w["meta_batch"]).prefetch(2)
    # Without autotuning: deleting an autotuned iterator waits for tf.data's tuning thread, whose sleeps
    # double from 10 ms, so `fit` returned only at 20.47 s (10 ms x 2047) after 13.4 s of steps.
    options = tf.data.Options()
    options.autotune.enabled = False
    data = data.with_options(options)
    del inputs, labels  # the dataset holds its own copy
    at_once = {} if parallel_tasks == "auto" else {"parallel_tasks": parallel_tasks}  # "auto": the default
    if w["algo"] == "protonet":
        learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4())
    else:
        learner = keras_meta.learners.MAML(keras_meta.models.conv4(num_classes=w["ways"]), inner_learning_rate=0.4,
                                           inner_steps=w["steps"], first_order=w["algo"] == "fomaml",
                                           recompute_inner_steps=w.get("recompute", False), **at_once)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    clock = StepClock()
    learner.fit(data, epochs=1, steps_per_epoch=warmup + iters, verbose=0, callbacks=[clock])
    return {
        "per_s": w["meta_batch"] * iters / (clock.times[-1] - clock.times[warmup - 1]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "warmup_seconds": clock.times[warmup - 1] - clock.start,
        "import_anon_mb": after_import["RssAnon"],
        "import_file_mb": after_import["RssFile"],
        "tensors_peak_mb": tensors_peak_mb(tf),
        "onednn": keras_meta.onednn_enabled(),
        "package": os.path.dirname(os.path.abspath(keras_meta.__file__)),
        "tasks_at_once": None if w["algo"] == "protonet" else at_once.get("parallel_tasks", default_tasks_at_once()),
    }


def run_sampled(command, env=None):
    """`(stdout, peak anonymous memory in MiB)` of a command, its `RssAnon` sampled every 5 ms."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak_kib = 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        output = pool.submit(process.communicate)
        while not output.done():
            peak_kib = max(peak_kib, resident_kib(process.pid))
            time.sleep(0.005)
        stdout, stderr = output.result()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, stdout, stderr)
    return stdout, peak_kib / 1024.0


def resident_kib(pid, kind="RssAnon"):
    """A process's resident memory of one kind (`RssAnon`, `RssFile` in `/proc/PID/status`), in KiB; 0 once it ended."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(kind + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tensors_peak_mb(tf):
    """The peak of TensorFlow's CPU tensor allocator, in MiB (None where the allocator keeps no statistics)."""
    try:
        return tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
    except ValueError:
        return None


def run_ours(name, args, *extra, onednn=True, package=None):
    """Measures one workload of keras-meta in a fresh process (`onednn=False`: TF_ENABLE_ONEDNN_OPTS=0).

    `package`: a checkout whose `keras_meta` the process imports instead of this one's.
    """
    command = [sys.executable, __file__, "--one", name, "--warmup", str(args.warmup), "--iters", str(args.iters),
               "--parallel-tasks", str(args.parallel_tasks), "--intra-op-threads", str(args.intra_op_threads), *extra]
    env = dict(os.environ)
    if not onednn:
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if package is not None:
        env["PYTHONPATH"] = os.pathsep.join([package, *filter(None, [env.get("PYTHONPATH")])])
    out, peak_anon_mb = run_sampled(command, env)
    return dict(json.loads(out.strip().splitlines()[-1]), peak_anon_mb=peak_anon_mb)


def run_peer(python, name, iters, script):
    w = WORKLOADS[name]
    command = [python, script, "--algo", w["algo"], "--ways", str(w["ways"]), "--shots", str(w["shots"]),
               "--queries", str(w["queries"]), "--meta-batch", str(w["meta_batch"]), "--iters", str(iters)]
    if w["algo"] != "protonet":
        command += ["--steps", str(w["steps"]), "--inner-lr", "0.4"]
    out, peak_anon_mb = run_sampled(command)
    return dict(json.loads(out.strip().splitlines()[-1]), peak_anon_mib=peak_anon_mb)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_results_argument(parser)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--peer", help="a Python with learn2learn: run its workloads too, alternately")
    parser.add_argument("--peer-script", default=os.environ.get("KERAS_META_PEER_SCRIPT"), metavar="FILE",
                        help="the script that runs a workload with learn2learn (default: $KERAS_META_PEER_SCRIPT)")
    parser.add_argument("--jit-compile", action="store_true",
                        help="also measure each workload with compile(jit_compile=True) (XLA)")
    parser.add_argument("--parallel-tasks", type=parallel_tasks, default="auto",
                        help="MAML's `parallel_tasks`: a number, or auto (the default: one task per core)")
    parser.add_argument("--intra-op-threads", type=int, default=2,
                        help="threads per TensorFlow op")
    parser.add_argument("--onednn-off", action="store_true",
                        help="also measure each workload with TensorFlow's oneDNN CPU kernels off")
    parser.add_argument("--baseline", metavar="DIR",
                        help="a checkout of another keras-meta version: run its workloads too, alternately")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each variant this many times, alternating, and report medians")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one workload in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.warmup, args.iters, args.jit_compile, args.parallel_tasks,
                                 args.intra_op_threads)))
        return
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if (args.parallel_tasks != "auto" and args.parallel_tasks < 1) or args.intra_op_threads < 1:
        parser.error("--parallel-tasks and --intra-op-threads must be at least 1.")
    if args.baseline and not os.path.isfile(os.path.join(args.baseline, "keras_meta", "__init__.py")):
        parser.error(f"--baseline {args.baseline!r} is not a keras-meta checkout (no keras_meta/__init__.py in it).")
    if args.warmup < 1 or args.iters < 1:
        parser.error(f"--warmup and --iters must be at least 1, got {args.warmup} and {args.iters}.")
    if args.peer and not (args.peer_script and os.path.isfile(args.peer_script)):
        parser.error(f"--peer needs the learn2learn workload script: --peer-script FILE (or $KERAS_META_PEER_SCRIPT); "
                     f"got {args.peer_script!r}.")
    results = {"benchmark": "throughput", "cpu_count": os.cpu_count(), "parallel_tasks": args.parallel_tasks,
               "intra_op_threads": args.intra_op_threads, "repeats": args.repeats}
    names = args.workloads.split(",")
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {sorted(WORKLOADS)}")
    for name in names:
        results.update(measure_workload(name, args))
    print(json.dumps(record("throughput", with_recompute_ratio(results), args.results_dir)))


def with_recompute_ratio(results):
    """`results` plus the tensor peak of 10 recomputed inner steps over that of 1 plain step, where both ran."""
    peaks = results.get("maml_k10_recompute_tensors_peak_mb"), results.get("maml_k1_tensors_peak_mb")
    if all(peaks):
        results = dict(results, maml_k10_recompute_tensors_peak_vs_maml_k1=round(peaks[0] / peaks[1], 2))
    return results


def measure_workload(name, args):
    """`args.repeats` rounds of every variant of one workload, alternating; medians as JSON fields."""
    unit = UNIT.get(name, "tasks_per_s")
    rounds = {"ours": [], "xla": [], "off": [], "peer": [], "baseline": []}
    for _ in range(args.repeats):
        rounds["ours"].append(run_ours(name, args))
        if args.jit_compile:
            rounds["xla"].append(run_ours(name, args, "--jit-compile"))
        if args.onednn_off:
            off = run_ours(name, args, onednn=False)
            if off["onednn"] or not rounds["ours"][-1]["onednn"]:
                raise RuntimeError("TF_ENABLE_ONEDNN_OPTS did not reach the measuring processes as intended.")
            rounds["off"].append(off)
        if args.baseline:
            baseline = run_ours(name, args, package=os.path.abspath(args.baseline))
            if baseline["package"] == rounds["ours"][-1]["package"]:
                raise RuntimeError(f"--baseline {args.baseline} imported the same keras_meta as this checkout.")
            rounds["baseline"].append(baseline)
        if args.peer and not WORKLOADS[name].get("recompute"):
            peer = run_peer(args.peer, name, args.iters, args.peer_script)
            rounds["peer"].append({"per_s": peer["throughput_per_s"], "peak_rss_mb": peer["peak_rss_mib"],
                                   "peak_anon_mb": peer["peak_anon_mib"]})

    def median(variant, key="per_s"):
        return statistics.median(run[key] for run in rounds[variant])

    ours = median("ours")
    results = {"onednn": rounds["ours"][0]["onednn"], f"{name}_{unit}": round(ours, 3),
               **({} if rounds["ours"][0].get("tasks_at_once") is None
                  else {"parallel_tasks_at_once": rounds["ours"][0]["tasks_at_once"]}),
               f"{name}_peak_rss_mb": round(median("ours", "peak_rss_mb")),
               f"{name}_peak_anon_mb": round(median("ours", "peak_anon_mb")),
               f"{name}_warmup_seconds": round(median("ours", "warmup_seconds"), 1),
               f"{name}_import_anon_mb": round(median("ours", "import_anon_mb")),
               f"{name}_import_file_mb": round(median("ours", "import_file_mb"))}
    if all(run["tensors_peak_mb"] is not None for run in rounds["ours"]):
        results[f"{name}_tensors_peak_mb"] = round(median("ours", "tensors_peak_mb"))
    if args.jit_compile:
        results[f"{name}_xla_{unit}"] = round(median("xla"), 3)
        results[f"{name}_xla_warmup_seconds"] = round(median("xla", "warmup_seconds"), 1)
        results[f"{name}_xla_vs_graph"] = round(median("xla") / ours, 2)
    if args.onednn_off:
        results[f"{name}_onednn_off_{unit}"] = round(median("off"), 3)
        results[f"{name}_onednn_vs_off"] = round(ours / median("off"), 2)
    if args.baseline:
        results[f"{name}_baseline_{unit}"] = round(median("baseline"), 3)
        results[f"{name}_vs_baseline"] = round(ours / median("baseline"), 3)
        results[f"{name}_vs_baseline_runs"] = [
            round(a["per_s"] / b["per_s"], 3) for a, b in zip(rounds["ours"], rounds["baseline"], strict=True)]
    if rounds["peer"]:
        results[f"{name}_learn2learn_{unit}"] = round(median("peer"), 3)
        results[f"{name}_learn2learn_peak_rss_mb"] = round(median("peer", "peak_rss_mb"))
        results[f"{name}_learn2learn_peak_anon_mb"] = round(median("peer", "peak_anon_mb"))
        results[f"{name}_vs_learn2learn"] = round(ours / median("peer"), 2)
        results[f"{name}_vs_learn2learn_runs"] = [
            round(a["per_s"] / b["per_s"], 2) for a, b in zip(rounds["ours"], rounds["peer"], strict=True)]
    return results


if __name__ == "__main__":
    main()
