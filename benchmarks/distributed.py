"""Data-parallel meta-training on CPUs: throughput, peak memory and scaling efficiency.

Workloads (synthetic Omniglot-shaped data, 28x28x1, 64 classes of 20 examples,
drawn by `EpisodeSampler`; conv4 with BatchNorm; Adam 1e-3):

* `protonet`: Prototypical Networks, 20-way 5-shot, 15 queries, `--protonet-batch`
  episodes per step (default 2);
* `maml`: second-order MAML, 5-way 1-shot, 15 queries, 1 inner SGD step of 0.4,
  `--maml-batch` tasks per step (default 8).

Configurations, each in fresh processes, all with the same global batch:

* `one_device`: one replica, no strategy;
* `mirrored`: `MirroredStrategy` over two logical CPU devices in one process;
* `multi_worker`: `MultiWorkerMirroredStrategy`, two processes on localhost
  (`TF_CONFIG`), each with one CPU device.

Each configuration takes the same cores: a process gets `cpu_count / processes`
threads per op (at least 1; `--intra-op-threads` overrides). One `fit` runs
`--warmup` steps, then `--steps` timed steps; throughput is tasks (an episode is
a task) per second over the timed steps, for two workers that of the slower.
`..._scaling_efficiency` is throughput / (2 x throughput of `one_device`): 1.0
is perfect scaling. Memory per process: `..._peak_rss_mb` from `ru_maxrss`
(it counts TensorFlow's shared library pages, about 330 MiB, once per process),
`..._peak_anon_mb` the peak of `RssAnon` sampled every 5 ms from `/proc`; for
two workers, both workers' peaks (`..._per_worker`) and their sum. Prints one
JSON line.

    python benchmarks/distributed.py
    python benchmarks/distributed.py --workloads maml --configs one_device,multi_worker --steps 20
"""

import argparse
import concurrent.futures
import json
import os
import resource
import socket
import subprocess
import sys
import time

from recording import add_results_argument, record  # noqa: E402
from throughput import resident_kib

WORKLOADS = {
    "protonet": dict(ways=20, shots=5, queries=15),
    "maml": dict(ways=5, shots=1, queries=15),
}
CONFIGS = {"one_device": 1, "mirrored": 1, "multi_worker": 2}  # name -> processes
REPLICAS = {"one_device": 1, "mirrored": 2, "multi_worker": 2}


def measure(name, config, batch, warmup, steps, intra_op_threads):
    """Trains one workload in this process (one worker of it for `multi_worker`); returns its measurements."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads
    import tensorflow as tf

    import keras_meta

    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    if config == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    elif config == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    import keras
    import numpy as np

    class StepClock(keras.callbacks.Callback):
        """`times[i]`: when training step `i` ended."""

        def on_train_begin(self, logs=None):
            self.start, self.times = time.perf_counter(), []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    w = WORKLOADS[name]
    rng = np.random.default_rng(0)
    x = rng.random((64 * 20, 28, 28, 1), np.float32)
    y = np.repeat(np.arange(64), 20)
    sampler = keras_meta.data.EpisodeSampler(x, y, ways=w["ways"], shots=w["shots"], queries=w["queries"], seed=0)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        if name == "protonet":
            learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4())
        else:
            learner = keras_meta.learners.MAML(keras_meta.models.conv4(num_classes=w["ways"]),
                                               inner_learning_rate=0.4, inner_steps=1)
        learner.compile(optimizer=keras.optimizers.Adam(1e-3),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clock = StepClock()
    learner.fit(sampler.dataset(batch_size=batch), epochs=1, steps_per_epoch=warmup + steps, verbose=0,
                callbacks=[clock])
    return {
        "replicas": strategy.num_replicas_in_sync,
        "tasks_per_s": batch * steps / (clock.times[-1] - clock.times[warmup - 1]),
        "warmup_seconds": clock.times[warmup - 1] - clock.start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def run_sampled_processes(commands, envs, timeout):
    """Runs commands at once; `[(stdout, peak RssAnon in MiB)]`, each process's memory sampled every 5 ms.

    When one fails or the time runs out, the others are killed (a worker
    would wait for its peer for ever) and the error shows the first failure.
    """
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for command, env in zip(commands, envs, strict=True)]
    peaks = [0] * len(processes)
    deadline = time.monotonic() + timeout
    first_failure, timed_out = None, False
    try:
        with concurrent.futures.ThreadPoolExecutor(len(processes)) as pool:
            outputs = [pool.submit(process.communicate) for process in processes]
            while not all(output.done() for output in outputs):
                for i, process in enumerate(processes):
                    peaks[i] = max(peaks[i], resident_kib(process.pid))
                if first_failure is None and not timed_out:  # once killed, a process's exit is no failure
                    first_failure = next((i for i, (p, o) in enumerate(zip(processes, outputs, strict=True))
                                          if o.done() and p.returncode), None)
                    timed_out = first_failure is None and time.monotonic() > deadline
                    if first_failure is not None or timed_out:
                        for process in processes:
                            process.kill()
                time.sleep(0.005)
            results = [output.result() for output in outputs]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    if timed_out:
        raise RuntimeError(f"{' '.join(commands[0])} did not finish within {timeout} s.")
    if first_failure is None:
        first_failure = next((i for i, p in enumerate(processes) if p.returncode), None)
    if first_failure is not None:
        process = processes[first_failure]
        raise subprocess.CalledProcessError(process.returncode, commands[first_failure], results[first_failure][0],
                                            results[first_failure][1])
    return [(stdout, peak / 1024.0) for (stdout, _), peak in zip(results, peaks, strict=True)]


def free_ports(count):
    """`count` TCP ports on localhost that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def threads_per_process(config, args):
    """Threads per op in each process of a configuration: `--intra-op-threads`, or the cores split evenly."""
    if args.intra_op_threads:
        return args.intra_op_threads
    return max(1, (os.cpu_count() or 1) // CONFIGS[config])


def run_config(name, config, args):
    """One workload in one configuration, in fresh processes; its JSON fields."""
    batch = getattr(args, f"{name}_batch")
    threads = threads_per_process(config, args)
    command = [sys.executable, os.path.abspath(__file__), "--one", name, "--config", config, "--batch", str(batch),
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--intra-op-threads", str(threads)]
    count = CONFIGS[config]
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    envs = [env] * count
    if config == "multi_worker":
        cluster = {"worker": [f"localhost:{port}" for port in free_ports(count)]}
        envs = [dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
                for i in range(count)]
    runs = run_sampled_processes([command] * count, envs, args.timeout)
    reports = [dict(json.loads(out.strip().splitlines()[-1]), peak_anon_mb=anon) for out, anon in runs]
    prefix = f"{name}_{config}"
    results = {f"{prefix}_replicas": reports[0]["replicas"], f"{prefix}_intra_op_threads": threads,
               f"{prefix}_tasks_per_s": round(min(r["tasks_per_s"] for r in reports), 3),
               f"{prefix}_warmup_seconds": round(max(r["warmup_seconds"] for r in reports), 1)}
    for kind in ("peak_rss_mb", "peak_anon_mb"):
        results[f"{prefix}_{kind}"] = round(sum(r[kind] for r in reports))
        if count > 1:
            results[f"{prefix}_{kind}_per_worker"] = [round(r[kind]) for r in reports]
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_results_argument(parser)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"some of {','.join(WORKLOADS)}")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"some of {','.join(CONFIGS)}")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (tracing, caches)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--protonet-batch", type=int, default=2, help="global batch of ProtoNet, in episodes")
    parser.add_argument("--maml-batch", type=int, default=8, help="global batch of MAML, in tasks")
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="threads per op in every process (default: the cores divided by the processes)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one configuration may take")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure in this process
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.config, args.batch, args.warmup, args.steps, args.intra_op_threads)))
        return
    names, configs = args.workloads.split(","), args.configs.split(",")
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {sorted(WORKLOADS)}")
    unknown = [config for config in configs if config not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {sorted(CONFIGS)}")
    if args.warmup < 1 or args.steps < 1:
        parser.error(f"--warmup and --steps must be at least 1, got {args.warmup} and {args.steps}.")
    if args.intra_op_threads < 0:
        parser.error(f"--intra-op-threads must be at least 1 (or 0 for the default), got {args.intra_op_threads}.")
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}.")
    replicas = max(REPLICAS[config] for config in configs)
    for name in names:
        batch = getattr(args, f"{name}_batch")
        if batch < 1 or batch % replicas:
            parser.error(f"--{name}-batch must be a positive multiple of {replicas} (the replicas), got {batch}.")
    results = {"benchmark": "distributed", "cpu_count": os.cpu_count(), "warmup": args.warmup, "steps": args.steps}
    for name in names:
        results[f"{name}_batch"] = getattr(args, f"{name}_batch")
        for config in configs:
            results.update(run_config(name, config, args))
        if "one_device" in configs:
            single = results[f"{name}_one_device_tasks_per_s"]
            for config in configs:
                if config != "one_device":
                    results[f"{name}_{config}_scaling_efficiency"] = round(
                        results[f"{name}_{config}_tasks_per_s"] / (REPLICAS[config] * single), 3)
    print(json.dumps(record("distributed", results, args.results_dir)))


if __name__ == "__main__":
    main()
