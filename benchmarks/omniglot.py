"""Meta-train on bundled Omniglot, evaluate on alphabets training never saw.

Trains on `small1` (rotations by 90/180/270 degrees as new classes; with
`--flips` the mirror images too) and
evaluates 5-way 1-shot, 20-way 1-shot and 5-way 5-shot accuracy over fixed
episode sets of the `small2` alphabets absent from `small1` (Japanese
(katakana), Sanskrit, Tagalog); the gradient-based learners, whose head has
`--train-ways` outputs, at that many ways only. Prints one JSON line.

    python benchmarks/omniglot.py --algo protonet --save runs/protonet.keras
    python benchmarks/omniglot.py --algo protonet --flips --steps 4000
    python benchmarks/omniglot.py --train-splits small1,small2 --save final.keras  # train only
    python benchmarks/omniglot.py --algo mamlpp --flips  # MAML++ (keras_meta.learners.MAMLPlusPlus)
    python benchmarks/omniglot.py --algo finetune-cosine  # Baseline++ (keras_meta.learners.FineTuneBaseline)

`--algo finetune` (Baseline) and `finetune-cosine` (Baseline++) are the transfer
baseline of Chen et al. 2019: `--steps` steps of ordinary classification over
every training class (each rotation, and with `--flips` each mirror image, a
class of its own; batches of `--meta-batch` images, 64 by default), then a new
linear or cosine head fitted to each test task's support set.
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
from keras_meta.datasets import omniglot  # noqa: E402
from keras_meta.evaluation import evaluate_few_shot  # noqa: E402

from options import parallel_tasks  # noqa: E402
from recording import add_results_argument, record  # noqa: E402

ROTATIONS = (0, 90, 180, 270)


def backbone(args):
    """conv4, after random shifts, rotations and zooms of each image (training only) with --augment."""
    encoder = keras_meta.models.conv4(input_shape=(28, 28, 1), filters=args.filters,
                                      pool_last_block=not args.spatial_embedding)
    if not args.augment:
        return encoder
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
        keras.layers.RandomRotation(10 / 360, fill_mode="constant"),
        keras.layers.RandomZoom(0.1, fill_mode="constant"),
        encoder,
    ], name="augmented_conv4")


def whole_class_data(train, args):
    """Every training image under every rotation (and with --flips mirrored), each transform of a class a class."""
    classes = int(train.labels.max()) + 1
    originals = [train.images, train.images[:, :, ::-1]] if args.flips else [train.images]
    images = np.concatenate([np.rot90(x, r // 90, axes=(1, 2)) for x in originals for r in ROTATIONS])
    transforms = len(originals) * len(ROTATIONS)
    labels = np.concatenate([train.labels + i * classes for i in range(transforms)])
    return images, labels, classes * transforms


def pretrain(encoder, train, args):
    """Whole-class pre-training of a metric learner's backbone: a softmax classifier over every training class.

    The rotations (and with --flips the mirror images) are new classes here too; the dense head is dropped
    afterwards.
    """
    images, labels, classes = whole_class_data(train, args)
    classifier = keras.Sequential([encoder, keras.layers.Dense(classes)])
    steps = args.pretrain_epochs * int(np.ceil(len(images) / 64))
    classifier.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps, alpha=0.05)),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    classifier.fit(images, labels, batch_size=64, epochs=args.pretrain_epochs, shuffle=True, verbose=args.verbose)


def build_protonet(args):
    return keras_meta.learners.PrototypicalNetwork(backbone(args))


def build_matching(args):
    scale = {} if args.cosine_scale is None else dict(cosine_scale=args.cosine_scale)
    return keras_meta.learners.MatchingNetwork(backbone(args), full_context_embeddings=args.fce, **scale)


def classifier(args):
    """conv4 with a `--train-ways` logits head: the model that gradient-based learners adapt."""
    return keras_meta.models.conv4(input_shape=(28, 28, 1), filters=args.filters, num_classes=args.train_ways)


def gradient_options(args):
    return dict(inner_learning_rate=args.inner_lr, inner_steps=args.inner_steps,
                eval_inner_steps=args.eval_inner_steps, parallel_tasks=args.parallel_tasks)


MULTI_STEP_LOSS_ALGOS = ("maml", "fomaml", "metasgd", "anil")  # MAML and its subclasses
SECOND_ORDER_ALGOS = ("maml", "metasgd", "anil", "mamlpp")  # those that can recompute their inner steps


def maml_options(args):
    """The inner loop plus the multi-step loss (the learners of MULTI_STEP_LOSS_ALGOS)."""
    return dict(gradient_options(args), **first_order_steps_option(args), multi_step_loss=args.multi_step_loss,
                recompute_inner_steps=args.recompute_inner_steps)


def first_order_steps_option(args):
    """`first_order_steps` when `--first-order-steps` is given (MAML++'s preset otherwise keeps its own, a third)."""
    return {} if args.first_order_steps is None else {"first_order_steps": args.first_order_steps}


LEARNED_RATES_ALGOS = ("mamlpp", "metasgd")  # those with learned inner learning rates of a chosen granularity


def learned_rates_option(args):
    """MAML++'s rates: per weight tensor and step (the paper's per layer) unless `--learned-rates` says otherwise."""
    return {} if args.learned_rates is None else {"learn_inner_learning_rate": args.learned_rates}


ALGOS = {
    "protonet": build_protonet,
    "matching": build_matching,
    "r2d2": lambda args: keras_meta.learners.R2D2(backbone(args)),
    "metanet": lambda args: keras_meta.learners.MetaNetwork(backbone(args), ways=max(args.train_ways, 20)),
    "metanet-embedding": lambda args: keras_meta.learners.EmbeddingMetaNetwork(backbone(args)),
    "maml": lambda args: keras_meta.learners.MAML(classifier(args), **maml_options(args)),
    "fomaml": lambda args: keras_meta.learners.MAML(classifier(args), first_order=True, **maml_options(args)),
    "metasgd": lambda args: keras_meta.learners.MetaSGD(classifier(args), granularity=args.learned_rates or "parameter",
                                                       **maml_options(args)),
    "anil": lambda args: keras_meta.learners.ANIL(classifier(args), **maml_options(args)),
    "mamlpp": lambda args: keras_meta.learners.MAMLPlusPlus(classifier(args), training_steps=args.steps,
                                                           recompute_inner_steps=args.recompute_inner_steps,
                                                           **first_order_steps_option(args),
                                                           **learned_rates_option(args), **gradient_options(args)),
    "imaml": lambda args: keras_meta.learners.iMAML(classifier(args), regularization=args.regularization,
                                                   cg_steps=args.cg_steps, **gradient_options(args)),
    "finetune": lambda args: keras_meta.learners.FineTuneBaseline(backbone(args), num_classes=args.whole_classes),
    "finetune-cosine": lambda args: keras_meta.learners.FineTuneBaseline(backbone(args), head="cosine",
                                                                       num_classes=args.whole_classes),
    "reptile": lambda args: keras_meta.learners.Reptile(
        classifier(args), inner_optimizer=keras.optimizers.Adam(args.inner_lr, beta_1=0.0),
        inner_steps=args.inner_steps, eval_inner_steps=args.eval_inner_steps, parallel_tasks=args.parallel_tasks),
}
FINETUNE = ("finetune", "finetune-cosine")  # trained on whole classes, not episodes
METRIC_BASED = ("protonet", "matching", "r2d2", "metanet", "metanet-embedding")
# The gradient-based learners' tasks are small: their ops gain little from several threads each, so each core
# adapts a task of its own (`parallel_tasks="auto"`) with one thread per op (0 restores TensorFlow's choice).
GRADIENT_FAST = dict(intra_op_threads=1)
# Settings that differ from the command-line defaults, per algorithm (a flag given explicitly wins).
DEFAULTS = {
    # The metric learners: mirror images as classes too and 60-way training episodes (each helps, and they add up:
    # docs/benchmarks.md); R2D2 with the 3x3x64 embedding its ridge solve gains from.
    "protonet": dict(flips=True, train_ways=60, steps=2100),
    "matching": dict(flips=True, train_ways=60, steps=2100),
    "r2d2": dict(flips=True, train_ways=60, steps=3600, spatial_embedding=True),
    "metanet": {},
    "metanet-embedding": {},
    "finetune": dict(meta_batch=64, steps=3000),
    "finetune-cosine": dict(meta_batch=64, steps=3000),
    # MAML, first-order MAML and MAML++: the settings of their best recorded lines (mirror images as classes too,
    # a meta learning rate of 3e-3 annealed by a cosine, a thread per op and a task per core), with as many steps
    # as fit in 30 minutes of training on a 2-core CPU. MAML: three inner steps of 0.1 (five at test), first order
    # for the first five sixths of the steps (`--first-order-steps`; a first-order step costs half a second-order
    # one); 4800 steps took 28.5 minutes.
    "maml": dict(GRADIENT_FAST, train_ways=5, train_queries=5, meta_batch=16, steps=4800, inner_lr=0.1,
                 inner_steps=3, eval_inner_steps=5, flips=True, learning_rate=3e-3),
    # First-order MAML: the same recipe with three smaller inner steps (its meta-gradient is the query gradient at
    # the adapted weights, which must stay near the starting ones), five at test; 6000 steps took 26.7 minutes.
    "fomaml": dict(GRADIENT_FAST, train_ways=5, train_queries=5, meta_batch=16, steps=6000, inner_lr=0.1,
                   inner_steps=3, eval_inner_steps=5, flips=True, learning_rate=3e-3),
    "mamlpp": dict(GRADIENT_FAST, train_ways=5, train_queries=5, meta_batch=16, steps=6000, inner_lr=0.4,
                   inner_steps=1, eval_inner_steps=3, flips=True, learning_rate=3e-3),
    # Meta-SGD: MAML's recipe (mirror images, 3e-3) with its own learned rates; 6000 steps took 27.4 minutes.
    "metasgd": dict(GRADIENT_FAST, train_ways=5, train_queries=5, meta_batch=16, steps=6000, inner_lr=0.4,
                    inner_steps=1, eval_inner_steps=1, flips=True, learning_rate=3e-3),
    # ANIL: the same recipe, its head alone adapted (one step in training, ten at test); 6000 steps took 21.4 minutes.
    "anil": dict(GRADIENT_FAST, train_ways=5, train_queries=5, meta_batch=16, steps=6000, inner_lr=0.4,
                 inner_steps=1, eval_inner_steps=10, flips=True, learning_rate=3e-3),
    "imaml": dict(GRADIENT_FAST, train_ways=5, train_queries=5, meta_batch=4, steps=600, inner_lr=0.1, inner_steps=5,
                  eval_inner_steps=5),  # 10 steps at test lowered accuracy (docs/benchmarks.md)
    # Reptile: the paper's Omniglot recipe (10 drawings per class in a training task's inner steps, the query set
    # only reports) with mirror images; 3000 steps took 34.4 minutes with other work on the CPU.
    "reptile": dict(GRADIENT_FAST, train_ways=5, train_shots=10, train_queries=1, meta_batch=5, steps=3000,
                    inner_lr=1e-3, inner_steps=5, eval_inner_steps=50, learning_rate=1.0, optimizer="sgd", flips=True),
}


def parse_args(argv=None):
    """The settings of a run: the command line (`argv`, default `sys.argv[1:]`) over the per-algorithm defaults."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_results_argument(parser)
    parser.add_argument("--algo", choices=sorted(ALGOS), default="protonet")
    parser.add_argument("--train-splits", default="small1", help="comma-separated bundled or downloaded splits")
    parser.add_argument("--train-ways", type=int, default=20,
                        help="classes per training episode (default: 60 for protonet, matching and r2d2; 5 for the "
                             "gradient-based learners, whose head has that many outputs and is tested at that many)")
    parser.add_argument("--train-shots", type=int, default=1)
    parser.add_argument("--train-queries", type=int, default=5)
    parser.add_argument("--meta-batch", type=int, default=1, help="tasks per training batch")
    parser.add_argument("--steps", type=int, default=2000, help="meta-training steps")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="the meta learning rate (default: 1e-3; 3e-3 for maml, fomaml, mamlpp, metasgd and anil; "
                             "Reptile: the initial meta step size, 1.0)")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                        help="outer optimizer (Reptile: sgd, the interpolation)")
    parser.add_argument("--inner-lr", type=float, default=0.4)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--eval-inner-steps", type=int, default=3)
    parser.add_argument("--multi-step-loss", action="store_true",
                        help=f"{', '.join(MULTI_STEP_LOSS_ALGOS)}: meta-train on the mean query loss after every "
                        "inner step")
    parser.add_argument("--recompute-inner-steps", action="store_true",
                        help="recompute inner steps while back-propagating (less memory; "
                        f"{', '.join(SECOND_ORDER_ALGOS)})")
    parser.add_argument("--first-order-steps", type=int,
                        help=f"{', '.join(SECOND_ORDER_ALGOS)}: training steps with first-order meta-gradients before "
                        "second-order ones (default: five sixths of --steps for maml, a third for mamlpp, 0 for the "
                        "others)")
    parser.add_argument("--learned-rates", choices=["parameter", "tensor", "scalar"],
                        help=f"{', '.join(LEARNED_RATES_ALGOS)}: one learned inner learning rate per weight, per "
                        "tensor or in all (default: per tensor for mamlpp, per weight for metasgd)")
    parser.add_argument("--regularization", type=float, default=2.0, help="imaml: the proximal strength lambda")
    parser.add_argument("--cg-steps", type=int, default=5, help="imaml: conjugate-gradient iterations")
    parser.add_argument("--eval-episodes", type=int, default=600)
    parser.add_argument("--eval-queries", type=int, default=15)
    parser.add_argument("--fce", action="store_true", help="Matching Networks: full context embeddings")
    parser.add_argument("--cosine-scale", type=float,
                        help="Matching Networks: the scale of the cosine similarities (default: the learner's)")
    parser.add_argument("--flips", action=argparse.BooleanOptionalAction, default=False,
                        help="the mirror image of each training class (and of its rotations) is a class too "
                             "(default: on, but for metanet, metanet-embedding, finetune, finetune-cosine and imaml)")
    parser.add_argument("--augment", action="store_true", help="random shift/rotation/zoom of training images")
    parser.add_argument("--filters", type=int, default=64, help="conv4 filters per block")
    parser.add_argument("--spatial-embedding", action=argparse.BooleanOptionalAction, default=False,
                        help="metric learners: no max-pool after conv4's last block (3x3x64 embedding; default: on "
                             "for r2d2)")
    parser.add_argument("--pretrain-epochs", type=int, default=0,
                        help="metric learners: epochs of whole-class pre-training of the backbone first")
    parser.add_argument("--parallel-tasks", type=parallel_tasks, default="auto",
                        help="gradient-based learners: tasks of a batch adapted at once (`parallel_tasks`; "
                             "default auto, one per core)")
    parser.add_argument("--intra-op-threads", type=int,
                        help="threads per TensorFlow op, 0 for TensorFlow's choice (default: 1 for the "
                             "gradient-based learners, else TensorFlow's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the meta-trained learner to this .keras file")
    parser.add_argument("--verbose", type=int, default=2,
                        help="Keras verbosity of training (and a progress bar on evaluation unless 0)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    explicit = {a.dest for a in parser._actions if any(flag in argv for flag in a.option_strings)}
    for name, value in DEFAULTS[args.algo].items():
        if name not in explicit:
            setattr(args, name, value)
    if args.algo == "maml" and "first_order_steps" not in explicit:
        args.first_order_steps = args.steps * 5 // 6  # as in its best line (DEFAULTS)
    if args.algo not in METRIC_BASED + FINETUNE and args.spatial_embedding:
        parser.error(f"--spatial-embedding is for the metric learners and the fine-tuning baseline, "
                     f"not --algo {args.algo}.")
    if args.algo not in METRIC_BASED and args.pretrain_epochs:
        parser.error(f"--pretrain-epochs is for the metric learners "
                     f"({', '.join(METRIC_BASED)}), not --algo {args.algo}.")
    if (args.fce or args.cosine_scale is not None) and args.algo != "matching":
        parser.error(f"--fce and --cosine-scale are for --algo matching, not --algo {args.algo}.")
    if args.parallel_tasks != "auto" and args.parallel_tasks < 1:
        parser.error("--parallel-tasks must be at least 1.")
    if args.intra_op_threads is not None and args.intra_op_threads < 0:
        parser.error("--intra-op-threads must be at least 0 (0: TensorFlow's choice).")
    if "parallel_tasks" in explicit and args.algo in METRIC_BASED + FINETUNE:
        parser.error(f"--parallel-tasks is for the learners that adapt several tasks at once, not --algo {args.algo}.")
    if args.recompute_inner_steps and args.algo not in SECOND_ORDER_ALGOS:
        parser.error(f"--recompute-inner-steps is for {', '.join(SECOND_ORDER_ALGOS)}, not --algo {args.algo}.")
    if args.first_order_steps is not None and args.algo not in SECOND_ORDER_ALGOS:
        parser.error(f"--first-order-steps is for {', '.join(SECOND_ORDER_ALGOS)}, not --algo {args.algo}.")
    if args.first_order_steps is not None and args.first_order_steps < 0:
        parser.error("--first-order-steps must be at least 0 (0: second order from the first step).")
    if args.learned_rates and args.algo not in LEARNED_RATES_ALGOS:
        parser.error(f"--learned-rates is for {', '.join(LEARNED_RATES_ALGOS)}, not --algo {args.algo}.")
    if args.multi_step_loss and args.algo not in MULTI_STEP_LOSS_ALGOS:
        parser.error(f"--multi-step-loss is for {', '.join(MULTI_STEP_LOSS_ALGOS)}, not --algo {args.algo}.")
    return args


def evaluation_settings(args):
    """(ways, shots) of the test episodes: 1-shot at 5 and 20 ways (gradient-based learners at the ways of their
    head), and 5-shot at 5 ways."""
    ways = (5, 20) if args.algo in METRIC_BASED + FINETUNE else (args.train_ways,)
    return [(w, 1) for w in ways] + [(ways[0], 5)]


def main():
    args = parse_args()
    if args.intra_op_threads:  # before TensorFlow runs its first op
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    keras.utils.set_random_seed(args.seed)
    train, test = omniglot.unseen_alphabet_split(tuple(args.train_splits.split(",")))
    if args.algo in FINETUNE:  # whole-class batches, not episodes
        images, labels, args.whole_classes = whole_class_data(train, args)
        training_data = (tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images), seed=args.seed)
                         .repeat().batch(args.meta_batch).prefetch(2))
        training = {"train_classes": args.whole_classes, "train_batch": args.meta_batch}
    else:
        sampler = EpisodeSampler(
            train.images, train.labels, ways=args.train_ways, shots=args.train_shots,
            queries=args.train_queries, rotations=ROTATIONS, flips=args.flips, seed=args.seed,
        )
        training_data = sampler.dataset(batch_size=args.meta_batch)
        training = {"train_ways": args.train_ways, "train_classes": sampler.num_classes}
    learner = ALGOS[args.algo](args)
    if args.optimizer == "sgd":  # Reptile's meta step size, annealed linearly to 0
        schedule = keras.optimizers.schedules.PolynomialDecay(args.learning_rate, args.steps, 0.0)
        optimizer = keras.optimizers.SGD(schedule)
    else:
        optimizer = keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=args.steps, alpha=0.05))
    learner.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    epochs = max(1, args.steps // 100)
    start = time.perf_counter()
    if args.pretrain_epochs:
        pretrain(learner.backbone, train, args)
    learner.fit(training_data, epochs=epochs,
                steps_per_epoch=args.steps // epochs, verbose=args.verbose)
    results = {"algo": args.algo, "train_splits": args.train_splits, **training,
               "train_steps": args.steps, "learning_rate": args.learning_rate, "flips": args.flips,
               "intra_op_threads": args.intra_op_threads or None, "eval_episodes": args.eval_episodes,
               "onednn": keras_meta.onednn_enabled(),
               "train_seconds": round(time.perf_counter() - start, 1)}
    if args.save:
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        learner.save(args.save)
        results["saved"] = os.path.abspath(args.save)
    if test is not None:
        results["test_alphabets"] = sorted(set(test.alphabets.tolist()))
        for ways, shots in evaluation_settings(args):
            start = time.perf_counter()
            score = evaluate_few_shot(learner, test.images, test.labels, ways, shots=shots,
                                      queries=args.eval_queries, num_episodes=args.eval_episodes, seed=args.seed + 1,
                                      verbose=1 if args.verbose else 0)
            setting = f"{ways}w{shots}s"
            results[f"acc_{setting}"] = round(score.accuracy, 4)
            results[f"ci95_{setting}"] = round(score.ci95, 4)
            seconds = time.perf_counter() - start
            results[f"eval_seconds_{setting}"] = round(seconds, 1)
            results[f"infer_ms_per_episode_{setting}"] = round(1000 * seconds / args.eval_episodes, 2)
    print(json.dumps(record("omniglot", results, args.results_dir)))


if __name__ == "__main__":
    main()
