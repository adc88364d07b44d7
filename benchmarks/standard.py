"""The published few-shot protocols: meta-train on a dataset's training classes, test on its test classes.

For a named dataset and learner: trains on the standard training split
(episodes of `--ways` classes), then evaluates 5-way 1-shot and 5-shot (and
20-way for Omniglot) over `--episodes` fixed test episodes of 15 queries per
class (at least 600), with the 95% confidence interval. Prints one JSON line.
When the dataset's files are absent it prints a JSON line with `"skipped"`
and what to fetch, and exits with status 0.
Published numbers to compare with: docs/standard_benchmarks.md.

    python benchmarks/standard.py --dataset cifar_fs --algo protonet --backbone resnet12
    python benchmarks/standard.py --dataset mini_imagenet --algo maml --backbone conv4 --data-dir /data
    python benchmarks/standard.py --dataset omniglot_vinyals --algo protonet --backbone conv4
    python benchmarks/standard.py --dataset omniglot_small --algo protonet --backbone resnet12 \\
        --resnet-filters 32,48,64,96 --steps 300  # the bundled splits, no download
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # TensorFlow's oneDNN CPU kernels: set before it loads

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_meta  # noqa: E402
from keras_meta.data import EpisodeSampler  # noqa: E402
from keras_meta.data.sources import image_decoder  # noqa: E402
from keras_meta.datasets import cifar_fs, cub, fc100, mini_imagenet, omniglot, tiered_imagenet  # noqa: E402
from keras_meta.evaluation import evaluate_few_shot  # noqa: E402

from recording import add_results_argument, record  # noqa: E402

ROTATIONS = (0, 90, 180, 270)


def omniglot_vinyals(args):
    train = omniglot.load_vinyals("trainval", image_size=28, data_dir=args.data_dir)
    test = omniglot.load_vinyals("test", image_size=28, data_dir=args.data_dir)
    return train.images, train.labels, test.images, test.labels, None


def omniglot_small(args):
    train, test = omniglot.unseen_alphabet_split(("small1",), "small2")
    return train.images, train.labels, test.images, test.labels, None


def image_set(module, **options):
    def load(args):
        train = module.load("train", dtype="uint8", data_dir=args.data_dir, **options)
        test = module.load("test", dtype="uint8", data_dir=args.data_dir, **options)
        return train.images, train.labels, test.images, test.labels, None
    return load


def tiered(args):
    train = tiered_imagenet.load("train", data_dir=args.data_dir)
    test = tiered_imagenet.load("test", data_dir=args.data_dir)
    return train.images, train.labels, test.images, test.labels, image_decoder(84, dtype="uint8")


# name: (loader, input shape, classes are rotated too, evaluation (ways, shots) pairs)
DATASETS = {
    "omniglot_vinyals": (omniglot_vinyals, (28, 28, 1), True, [(5, 1), (5, 5), (20, 1), (20, 5)]),
    "omniglot_small": (omniglot_small, (28, 28, 1), True, [(5, 1), (5, 5), (20, 1), (20, 5)]),
    "mini_imagenet": (image_set(mini_imagenet, image_size=84), (84, 84, 3), False, [(5, 1), (5, 5)]),
    "tiered_imagenet": (tiered, (84, 84, 3), False, [(5, 1), (5, 5)]),
    "cifar_fs": (image_set(cifar_fs), (32, 32, 3), False, [(5, 1), (5, 5)]),
    "fc100": (image_set(fc100), (32, 32, 3), False, [(5, 1), (5, 5)]),
    "cub": (image_set(cub, image_size=84), (84, 84, 3), False, [(5, 1), (5, 5)]),
}
METRIC = ("protonet", "r2d2", "matching")
GRADIENT = ("maml", "fomaml", "anil", "metasgd", "mamlpp")


def backbone(args, input_shape, num_classes=None):
    rescale = 1 / 255 if input_shape[-1] == 3 else None  # colour datasets arrive as uint8
    if args.backbone == "conv4":
        return keras_meta.models.conv4(input_shape, filters=args.filters, num_classes=num_classes,
                                       global_pool=input_shape[0] > 28, rescale=rescale)
    if args.backbone == "resnet12":
        filters = tuple(int(f) for f in args.resnet_filters.split(","))
        return keras_meta.models.resnet12(input_shape, filters=filters, num_classes=num_classes,
                                          drop_rate=args.drop_rate, rescale=rescale)
    return keras_meta.models.wrn28_10(input_shape, num_classes=num_classes, rescale=rescale)


def learner_for(args, input_shape):
    learners = keras_meta.learners
    if args.algo in METRIC:
        encoder = backbone(args, input_shape)
        return {"protonet": learners.PrototypicalNetwork, "r2d2": learners.R2D2,
                "matching": learners.MatchingNetwork}[args.algo](encoder)
    model = backbone(args, input_shape, num_classes=args.ways)
    inner = dict(inner_learning_rate=args.inner_lr, inner_steps=args.inner_steps,
                 eval_inner_steps=args.eval_inner_steps)
    if args.algo == "mamlpp":
        return learners.MAMLPlusPlus(model, training_steps=args.steps, **inner)
    if args.algo == "fomaml":
        return learners.MAML(model, first_order=True, **inner)
    return {"maml": learners.MAML, "anil": learners.ANIL, "metasgd": learners.MetaSGD}[args.algo](model, **inner)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_results_argument(parser)
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--algo", choices=METRIC + GRADIENT, default="protonet")
    parser.add_argument("--backbone", choices=["conv4", "resnet12", "wrn28_10"], default="conv4")
    parser.add_argument("--data-dir", help="folder holding <dataset>/ (default $KERAS_HOME or ~/.keras)")
    parser.add_argument("--ways", type=int, default=None,
                        help="training ways (default 5; metric learners 20 on Omniglot, 15 elsewhere)")
    parser.add_argument("--shots", type=int, default=None, help="training shots (default 1 on Omniglot, else 5)")
    parser.add_argument("--queries", type=int, default=None, help="training queries per class (default 15, MAML 5)")
    parser.add_argument("--meta-batch", type=int, default=None, help="tasks per step (default 1, MAML 4)")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--filters", type=int, default=64, help="conv4 filters per block")
    parser.add_argument("--resnet-filters", default="64,160,320,640", help="ResNet-12 filters per block")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="ResNet-12 DropBlock rate")
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--eval-inner-steps", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=600, help="test episodes per setting (at least 600)")
    parser.add_argument("--allow-fewer-episodes", action="store_true",
                        help="accept --episodes below 600 (quick checks; not the published protocol)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the meta-trained learner to this .keras file")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    omniglot_like = args.dataset.startswith("omniglot")
    gradient = args.algo in GRADIENT
    if args.ways is None:
        args.ways = 5 if gradient else (20 if omniglot_like else 15)
    if args.shots is None:
        args.shots = 1 if omniglot_like else 5
    if args.queries is None:
        args.queries = 5 if gradient else 15
    if args.meta_batch is None:
        args.meta_batch = 4 if gradient else 1
    for name in ("ways", "shots", "queries", "meta_batch", "steps", "episodes", "inner_steps", "eval_inner_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.drop_rate and args.algo in GRADIENT:
        parser.error("--drop-rate is for the metric learners: a gradient learner adapts in training mode, so "
                     "DropBlock would also drop units while it predicts.")
    if args.episodes < 600 and not args.allow_fewer_episodes:
        parser.error(f"--episodes {args.episodes}: the published protocol tests on at least 600 episodes "
                     "(add --allow-fewer-episodes for a quick check).")
    return args


def main():
    args = parse_args()
    loader, input_shape, rotated, settings = DATASETS[args.dataset]
    try:
        train_x, train_y, test_x, test_y, decode = loader(args)
    except OSError as error:  # files absent (or offline): FileNotFoundError, or a download that failed
        print(f"{args.dataset}: data absent, skipped. {error}", file=sys.stderr)
        print(json.dumps({"dataset": args.dataset, "algo": args.algo, "skipped": str(error)}))
        return
    keras.utils.set_random_seed(args.seed)
    rotations = ROTATIONS if rotated else None
    sampler = EpisodeSampler(train_x, train_y, ways=args.ways, shots=args.shots, queries=args.queries,
                             rotations=rotations, seed=args.seed, decode=decode)
    learner = learner_for(args, input_shape)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=args.steps, alpha=0.05)
    learner.compile(optimizer=keras.optimizers.Adam(schedule),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    epochs = -(-args.steps // 100)
    start = time.perf_counter()
    learner.fit(sampler.dataset(batch_size=args.meta_batch), epochs=epochs,
                steps_per_epoch=-(-args.steps // epochs), verbose=args.verbose)
    results = {"dataset": args.dataset, "algo": args.algo, "backbone": args.backbone,
               "train_classes": sampler.num_classes, "train_ways": args.ways, "train_shots": args.shots,
               "train_steps": epochs * -(-args.steps // epochs), "train_seconds": round(time.perf_counter() - start, 1),
               "test_classes": int(np.unique(test_y).size) * (len(ROTATIONS) if rotated else 1),
               "test_episodes": args.episodes, "params": learner.count_params(),
               "devices": [device.device_type for device in tf.config.list_logical_devices()]}
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        learner.save(args.save)
        results["saved"] = args.save
    for ways, shots in settings:
        if args.algo in GRADIENT and ways != args.ways:
            results.setdefault("not_run", {})[f"{ways}w{shots}s"] = (
                f"a gradient learner's head has --ways {args.ways} outputs; train with --ways {ways} for it")
            continue
        start = time.perf_counter()
        # Omniglot's test classes are rotated like its training ones, as in the published protocol.
        score = evaluate_few_shot(learner, test_x, test_y, ways, shots=shots, queries=15,
                                  num_episodes=args.episodes, seed=args.seed + 1,
                                  verbose=1 if args.verbose else 0, rotations=rotations, decode=decode)
        results[f"acc_{ways}w{shots}s"] = round(score.accuracy, 4)
        results[f"ci95_{ways}w{shots}s"] = round(score.ci95, 4)
        results[f"eval_seconds_{ways}w{shots}s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(record("standard", results, args.results_dir)))


if __name__ == "__main__":
    main()
