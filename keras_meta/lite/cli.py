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
import re
import sys
import zipfile
import zlib

import numpy as np


class BadArgumentError(ValueError):
    """A command-line argument the command cannot use: reported in one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """Reports a bad argument in one line, `keras-meta export: error: ...`, and exits with status 2."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def parser():
    main = ArgumentParser(prog="keras-meta", description="keras-meta command-line tools.")
    commands = main.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="convert a .keras learner or model to a .tflite file",
        description=__doc__.split("Example:")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("model", help="a .keras file: a learner or a plain Keras model")
    export.add_argument("output", help="the .tflite file to write")
    export.add_argument("--quantize", choices=["none", "dynamic", "float16", "int8"], default="none")
    export.add_argument("--calibration-data", help="int8: a .npy array (or .npz with `x`) of typical inputs")
    export.add_argument("--calibration-episodes", type=positive_int, default=20,
                        help="int8 without --calibration-data: Omniglot episodes drawn for calibration")
    export.add_argument("--prototype-classifier", action="store_true",
                        help="export the prototype classifier (the default for a PrototypicalNetwork; for a plain "
                             "model, treat it as the embedding model)")
    export.add_argument("--max-ways", type=positive_int, default=20, help="prototype classifier: the most classes")
    export.add_argument("--adapt", metavar="SUPPORT_NPZ",
                        help="adapt the learner to this support set (.npz with support_x, support_y) and export the "
                             "adapted model")
    export.add_argument("--adapt-layers", choices=["head", "all"], default="head",
                        help="on-device adaptation: the last Dense layer (builtin ops) or all adapted layers "
                             "(needs --allow-flex for convolutions)")
    export.add_argument("--steps", type=positive_int, help="on-device adaptation steps (default: the learner's)")
    export.add_argument("--support-size", type=positive_int, help="on-device adaptation: a fixed support-set size")
    export.add_argument("--batch-norm", choices=["support", "moving"], default="support",
                        help="on-device adaptation: batch statistics of the support set (as learner.adapt) or the "
                             "meta-trained moving statistics")
    export.add_argument("--allow-flex", action="store_true", help="allow TensorFlow (Flex) ops")
    return main


def load_model(path):
    """Loads a `.keras` file (or a legacy `.h5` file).

    Raises `FileNotFoundError` when there is no such file, and `ValueError`
    naming the file when it is corrupt (a truncated copy or download, say).
    """
    import keras

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such model file: {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder; pass a .keras file, as written by `model.save('model.keras')`.")
    corrupt = (f"{path!r} is a corrupt .keras file ({{}}); it may be truncated (an interrupted copy or download). "
               "Save the model again with `model.save(...)`.")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(corrupt.format("not a readable zip archive"))
    try:
        return keras.saving.load_model(path)
    except json.JSONDecodeError as error:
        raise ValueError(corrupt.format(f"unreadable config.json: {error}")) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, OSError) as error:
        if not path.endswith(".keras"):
            raise
        raise ValueError(corrupt.format(str(error).strip("\"'"))) from None


def read_arrays(path, option):
    """The arrays of a `.npy` file (`{"x": array}`) or a `.npz` file; `BadArgumentError` when unreadable."""
    if not os.path.isfile(path):
        raise BadArgumentError(f"{option} {path}: no such file.")
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        data = np.load(path)
        if not isinstance(data, np.lib.npyio.NpzFile):
            return {"x": data}
        with data:
            arrays = {name: data[name] for name in data.files}
    except unreadable as error:
        raise BadArgumentError(f"{option} {path}: not a readable .npy or .npz file ({error}).") from None
    others = [name for name, value in arrays.items() if not isinstance(value, np.ndarray)]
    if others:
        raise BadArgumentError(f"{option} {path}: not a readable .npy or .npz file (a zip whose entries "
                               f"{others[:5]} are not .npy arrays).")
    return arrays


def read_support(path):
    """`(support_x, support_y)` of an `--adapt` file."""
    arrays = read_arrays(path, "--adapt")
    if not {"support_x", "support_y"} <= set(arrays):
        raise BadArgumentError(f"--adapt {path} must be an .npz file with arrays support_x and support_y; "
                               f"it has {sorted(arrays)}.")
    support_x, support_y = arrays["support_x"], arrays["support_y"]
    numeric = all(np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
                  for a in (support_x, support_y))
    if not numeric or support_x.ndim < 1 or support_y.ndim < 1 or len(support_x) != len(support_y) \
            or not len(support_x):
        raise BadArgumentError(f"--adapt {path}: support_y must hold one label (or target) per support_x example; got "
                               f"support_x of shape {support_x.shape}, dtype {support_x.dtype}, and support_y of shape "
                               f"{support_y.shape}, dtype {support_y.dtype}.")
    return support_x, support_y


def check_support_shape(learner, support_x, path):
    """`support_x` examples must have the shape the learner's model takes."""
    inner = getattr(learner, "model", None)
    inputs = getattr(getattr(learner, "backbone", None) if inner is None else inner, "inputs", None)
    if not inputs or len(inputs) != 1:
        return
    expected, shape = tuple(inputs[0].shape[1:]), support_x.shape[1:]
    if not _shape_matches(shape, expected):
        raise BadArgumentError(f"--adapt {path}: support_x examples have shape {shape}, but the learner takes "
                               f"inputs of shape {expected}.")


def _shape_matches(shape, expected):
    """Whether an example shape fits a model's input shape (`None`: any size)."""
    return len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape, strict=True))


def _last_line(error):
    """What a (TensorFlow) error says went wrong, without the traceback around it."""
    text = str(error).strip()
    raised = re.findall(r"^\s*\w*(?:Error|Exception): (.+)$", text, flags=re.M)
    if raised:
        return raised[-1].strip()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line[:1].isspace() and not line.startswith("[[")]
    return lines[-1] if lines else type(error).__name__


def read_calibration_data(path):
    """The `--calibration-data` array: a `.npy` file, or an `.npz` file's `x` (else its first array)."""
    arrays = read_arrays(path, "--calibration-data")
    if not arrays:
        raise BadArgumentError(f"--calibration-data {path}: the .npz file holds no arrays.")
    data = arrays["x"] if "x" in arrays else next(iter(arrays.values()))
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_) or data.ndim < 1 or len(data) == 0:
        raise BadArgumentError(f"--calibration-data {path}: expected a numeric array of inputs [n, ...], got shape "
                               f"{data.shape} and dtype {data.dtype}.")
    return data.astype(np.float32)


def calibration_data(args, input_shape, data=None):
    if data is not None:
        if not _shape_matches(data.shape[1:], tuple(input_shape)):
            raise BadArgumentError(f"--calibration-data {args.calibration_data}: examples of shape {data.shape[1:]}, "
                                   f"but the model takes inputs of shape {tuple(input_shape)}.")
        return data
    if tuple(input_shape) != (28, 28, 1):
        raise BadArgumentError(f"int8 quantization of inputs of shape {tuple(input_shape)} needs --calibration-data.")
    from keras_meta.datasets import omniglot
    from keras_meta.lite import representative_images

    train = omniglot.load("small1")
    return representative_images(train.images, train.labels, num_episodes=args.calibration_episodes)


def export_command(args):
    import tensorflow as tf

    import keras_meta  # noqa: F401  (registers the learners for loading)
    from keras_meta import lite
    from keras_meta.learners import MAML, PrototypicalNetwork
    from keras_meta.learners.base import MetaLearner

    if os.path.isdir(args.output):
        raise BadArgumentError(f"the output {args.output} is a folder; name the .tflite file to write.")
    support = read_support(args.adapt) if args.adapt else None
    quantize = None if args.quantize == "none" else args.quantize
    data = read_calibration_data(args.calibration_data) if args.calibration_data and quantize == "int8" else None
    try:
        model = load_model(args.model)
    except (OSError, ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        message = message if args.model in message else f"cannot load {args.model}: {message}"
        raise BadArgumentError(message[:500] + (" ..." if len(message) > 500 else "")) from None
    if support is not None:
        if not isinstance(model, MetaLearner):
            print(f"keras-meta export: --adapt needs a learner; {args.model} holds a {type(model).__name__}.",
                  file=sys.stderr)
            return 1
        check_support_shape(model, support[0], args.adapt)
        try:
            model = model.adapt(*support)
        except (ValueError, tf.errors.InvalidArgumentError) as error:
            raise BadArgumentError(f"--adapt {args.adapt}: {_last_line(error)}") from None
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
    data = calibration_data(args, shape, data) if quantize == "int8" else None
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
    except ValueError as error:
        raise BadArgumentError(str(error)) from None
    try:
        signatures = {name: sig["inputs"] for name, sig in lite.LiteModel(args.output).signatures.items()}
    except ImportError as error:  # the file is written; only its check in the interpreter is missing
        print(f"keras-meta export: {error} The file was written but not loaded in the interpreter.", file=sys.stderr)
        signatures = None
    print(json.dumps({"output": os.path.abspath(args.output), "kind": kind, "quantize": args.quantize,
                      "size_bytes": os.path.getsize(args.output), "signatures": signatures}))
    return 0


def main(argv=None):
    """Entry point of the `keras-meta` command; returns the exit status.

    A bad argument (a value out of range, a missing or corrupt file) prints
    one line and exits with status 2.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli = parser()
    args = cli.parse_args(argv)
    try:
        if args.command == "export":
            return export_command(args)
    except BadArgumentError as error:
        ArgumentParser(prog=f"{cli.prog} {args.command}").error(str(error))
    return 2


if __name__ == "__main__":
    sys.exit(main())
