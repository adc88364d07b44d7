"""`keras-meta export`: `.keras` files (learners or plain models) to `.tflite` files.

    keras-meta export adapted.keras model.tflite --quantize float16
    keras-meta export protonet.keras classifier.tflite --max-ways 20
    keras-meta export maml.keras on_device.tflite --adapt-layers head --steps 5
    keras-meta export maml.keras task.tflite --adapt support.npz
    keras-meta export protonet.keras int8.tflite --quantize int8 --calibration-data images.npy

What is written depends on the file: a `PrototypicalNetwork` gives the
prototype classifier (`embed`, `prototypes`, `classify`), a MAML-family
learner the on-device adaptation file (`adapt`, `infer`, `save`, `restore`,
`reset`), and a plain Keras model (such as a saved `learner.adapt(...)`) a
one-signature file. `--adapt support.npz` (arrays `support_x`, `support_y`)
adapts a learner first and exports the adapted model. int8 needs
calibration images: `--calibration-data` (`.npy`, or `.npz` with `x`), or
for 28x28x1 inputs the bundled Omniglot training alphabets by default.
Prints one JSON line with the file's path, size and signatures.

Example:

>>> from keras_meta.lite import cli
>>> cli.main(["export", "adapted.keras", "adapted.tflite", "--quantize", "dynamic"])  # doctest: +SKIP
"""

import argparse
import json
import os
import sys

import numpy as np


def parser():
    main = argparse.ArgumentParser(prog="keras-meta", description="keras-meta command-line tools.")
    commands = main.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="convert a .keras learner or model to a .tflite file",
        description=__doc__.split("Example:")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("model", help="a .keras file: a learner or a plain Keras model")
    export.add_argument("output", help="the .tflite file to write")
    export.add_argument("--quantize", choices=["none", "dynamic", "float16", "int8"], default="none")
    export.add_argument("--calibration-data", help="int8: a .npy array (or .npz with `x`) of typical inputs")
    export.add_argument("--calibration-episodes", type=int, default=20,
                        help="int8 without --calibration-data: Omniglot episodes drawn for calibration")
    export.add_argument("--prototype-classifier", action="store_true",
                        help="export the prototype classifier (the default for a PrototypicalNetwork; for a plain "
                             "model, treat it as the embedding model)")
    export.add_argument("--max-ways", type=int, default=20, help="prototype classifier: the most classes")
    export.add_argument("--adapt", metavar="SUPPORT_NPZ",
                        help="adapt the learner to this support set (.npz with support_x, support_y) and export the "
                             "adapted model")
    export.add_argument("--adapt-layers", choices=["head", "all"], default="head",
                        help="on-device adaptation: the last Dense layer (builtin ops) or all adapted layers "
                             "(needs --allow-flex for convolutions)")
    export.add_argument("--steps", type=int, help="on-device adaptation steps (default: the learner's)")
    export.add_argument("--support-size", type=int, help="on-device adaptation: a fixed support-set size")
    export.add_argument("--batch-norm", choices=["support", "moving"], default="support",
                        help="on-device adaptation: batch statistics of the support set (as learner.adapt) or the "
                             "meta-trained moving statistics")
    export.add_argument("--allow-flex", action="store_true", help="allow TensorFlow (Flex) ops")
    return main


def calibration_data(args, input_shape):
    if args.calibration_data:
        data = np.load(args.calibration_data)
        if isinstance(data, np.lib.npyio.NpzFile):
            data = data["x"] if "x" in data.files else data[data.files[0]]
        return np.asarray(data, np.float32)
    if tuple(input_shape) != (28, 28, 1):
        raise SystemExit(f"int8 quantization of inputs of shape {tuple(input_shape)} needs --calibration-data.")
    from keras_meta.datasets import omniglot
    from keras_meta.lite import representative_images

    train = omniglot.load("small1")
    return representative_images(train.images, train.labels, num_episodes=args.calibration_episodes)


def export_command(args):
    import keras

    import keras_meta  # noqa: F401  (registers the learners for loading)
    from keras_meta import lite
    from keras_meta.learners import MAML, PrototypicalNetwork
    from keras_meta.learners.base import MetaLearner

    try:
        model = keras.saving.load_model(args.model)
    except (OSError, ValueError) as error:
        print(f"keras-meta export: cannot load {args.model}: {error}", file=sys.stderr)
        return 1
    quantize = None if args.quantize == "none" else args.quantize
    if args.adapt:
        if not isinstance(model, MetaLearner):
            print(f"keras-meta export: --adapt needs a learner; {args.model} holds a {type(model).__name__}.",
                  file=sys.stderr)
            return 1
        with np.load(args.adapt) as support:
            model = model.adapt(support["support_x"], support["support_y"])
    kind = "model"
    if isinstance(model, PrototypicalNetwork) or args.prototype_classifier:
        kind = "prototype_classifier"
    elif isinstance(model, MAML):
        kind = "on_device_learner"
    learner_inputs = {PrototypicalNetwork: lambda m: m.backbone, MAML: lambda m: m.model}
    inner = next((get(model) for cls, get in learner_inputs.items() if isinstance(model, cls)), model)
    if isinstance(inner, MetaLearner):
        print(f"keras-meta export: {args.model} holds a {type(model).__name__}, which takes episodes; pass "
              "`--adapt support.npz` (arrays support_x, support_y) to export the classifier it adapts to that "
              "support set.", file=sys.stderr)
        return 1
    shape = inner.input_shape[1:]
    data = calibration_data(args, shape) if quantize == "int8" else None
    try:
        if kind == "prototype_classifier":
            lite.export_prototype_classifier(model, args.output, max_ways=args.max_ways, quantize=quantize,
                                             representative_data=data, allow_flex=args.allow_flex)
        elif kind == "on_device_learner":
            lite.export_on_device_learner(model, args.output, adapt_layers=args.adapt_layers, steps=args.steps,
                                          support_size=args.support_size, batch_norm=args.batch_norm,
                                          quantize=quantize, representative_data=data, allow_flex=args.allow_flex)
        else:
            lite.export_model(model, args.output, quantize=quantize, representative_data=data,
                              allow_flex=args.allow_flex)
    except lite.LiteConversionError as error:
        print(f"keras-meta export: {error}", file=sys.stderr)
        return 1
    signatures = {name: sig["inputs"] for name, sig in lite.LiteModel(args.output).signatures.items()}
    print(json.dumps({"output": os.path.abspath(args.output), "kind": kind, "quantize": args.quantize,
                      "size_bytes": os.path.getsize(args.output), "signatures": signatures}))
    return 0


def main(argv=None):
    """Entry point of the `keras-meta` command; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parser().parse_args(argv)
    if args.command == "export":
        return export_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
