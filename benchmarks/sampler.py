"""Episodes per second of the episode sampler alone (no model), on bundled Omniglot.

    python benchmarks/sampler.py

Prints one JSON line: for each setting, episodes/s over `--seconds` of iteration
after a warm-up batch.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

from keras_meta.data import EpisodeSampler  # noqa: E402
from keras_meta.datasets import omniglot  # noqa: E402

from recording import add_results_argument, record  # noqa: E402

SETTINGS = {"5w1s15q_b32": (5, 1, 15, 32), "20w5s15q_b1": (20, 5, 15, 1), "20w1s15q_b32": (20, 1, 15, 32),
            "var5-20w1-5s10q_b8": ((5, 20), (1, 5), 10, 8)}


def episodes_per_second(sampler, batch_size, seconds):
    iterator = iter(sampler.dataset(batch_size=batch_size))
    next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        count += batch_size
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    add_results_argument(parser)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    data = omniglot.load("small1")
    results = {"benchmark": "sampler", "data": "omniglot small1 x4 rotations, 28x28"}
    for name, (ways, shots, queries, batch_size) in SETTINGS.items():
        sampler = EpisodeSampler(data.images, data.labels, ways=ways, shots=shots, queries=queries,
                                 rotations=(0, 90, 180, 270), seed=0)
        results[f"{name}_episodes_per_s"] = round(episodes_per_second(sampler, batch_size, args.seconds), 1)
    print(json.dumps(record("sampler", results, args.results_dir)))


if __name__ == "__main__":
    main()
