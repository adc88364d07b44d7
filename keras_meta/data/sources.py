"""Reading labelled examples into memory: arrays, `tf.data` datasets, image folders.

Example:

>>> from keras_meta.data import load_image_folder
>>> x, y, class_names = load_image_folder("alphabets.zip", image_size=(28, 28))  # doctest: +SKIP
"""

import os
import re
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from keras_meta.data.checks import integer_argument

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_TF_MESSAGE = re.compile(r"^\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", re.S)


def check_examples(x, y):
    """Validates `(x, y)` and returns them as NumPy arrays (labels as int64)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0:
        raise ValueError("`x` must be an array of examples [num_examples, ...], got a scalar.")
    if x.shape[0] == 0:
        raise ValueError("No examples: `x` is empty. Pass at least one example per class.")
    if y.ndim != 1:
        raise ValueError(f"`y` must be a 1-D array of class labels, got shape {y.shape}.")
    if len(x) != len(y):
        raise ValueError(f"`x` has {len(x)} examples but `y` has {len(y)} labels; they must match.")
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise ValueError(
            f"Labels must be integers, got dtype {y.dtype}. Map them to integers first, "
            "e.g. `names, y = np.unique(y, return_inverse=True)`."
        )
    return x, y.astype(np.int64)


def check_image_size(image_size):
    """`(height, width)` from a positive int (square images) or a pair of positive ints."""

    def positive(value):
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value > 0

    if positive(image_size):
        return int(image_size), int(image_size)
    if isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(positive(v) for v in image_size):
        return int(image_size[0]), int(image_size[1])
    raise ValueError(
        f"`image_size` must be a positive int (square images) or a (height, width) pair of positive ints, "
        f"got {image_size!r}."
    )


def arrays_from_dataset(dataset, batch_size=1024, max_examples=1_000_000):
    """Reads a `tf.data.Dataset` of `(x, y)` pairs (batched or not) into NumPy arrays.

    A dataset of unknown size (after `.filter()`, say) is read up to
    `max_examples` examples; one that holds more raises, as it may be infinite.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"Expected a `tf.data.Dataset` of `(x, y)` pairs, got {type(dataset).__name__}. For arrays, "
            "use `EpisodeSampler(x, y, ...)`."
        )
    batch_size = integer_argument("batch_size", batch_size)
    max_examples = integer_argument("max_examples", max_examples)
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            "The dataset must yield `(x, y)` pairs, e.g. `tfds.load(..., as_supervised=True)`; "
            f"its elements are {spec}."
        )
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "The dataset is infinite (`.repeat()`?): make it finite with `.take(n)`, or drop the `.repeat()`, "
            "and pass a dataset of `(x, y)` pairs."
        )
    if spec[1].shape.rank == 0:
        dataset = dataset.batch(batch_size)
    xs, ys, count = [], [], 0
    try:
        for x, y in dataset.as_numpy_iterator():
            xs.append(x)
            ys.append(y)
            count += len(y)
            if cardinality == tf.data.UNKNOWN_CARDINALITY and count > max_examples:
                raise ValueError(
                    f"The dataset's size is unknown and may be infinite (`.repeat()` before `.filter()`?): it "
                    f"yielded more than max_examples={max_examples} examples. Make it finite with `.take(n)`, or "
                    "raise `max_examples`."
                )
    except tf.errors.InvalidArgumentError as error:
        if "batch" not in str(error).lower():
            raise
        raise ValueError(
            f"The dataset's examples differ in shape ({_tf_message(error)}); resize them to one shape first, "
            "e.g. `dataset.map(lambda x, y: (tf.image.resize(x, (28, 28)), y))`."
        ) from None
    if not xs:
        raise ValueError("The dataset is empty: it yielded no `(x, y)` pairs.")
    try:
        return np.concatenate(xs), np.concatenate(ys)
    except ValueError as error:
        raise ValueError(
            f"The dataset's batches differ in example shape ({error}); resize the examples to one shape first, "
            "e.g. `dataset.map(lambda x, y: (tf.image.resize(x, (28, 28)), y))`."
        ) from None


def read_class_folders(path):
    """Lists a folder or `.zip` of class sub-folders of images.

    Returns `(contents, labels, class_names)`: the encoded bytes of every image,
    its integer label, and for each label the class folder relative to `path`
    (for example `"Greek/character01"`). Classes are sorted by folder name.
    """
    return read_class_files(path)[:3]


def read_class_files(path):
    """`read_class_folders` plus each image's file, relative to `path` (to name it in errors)."""
    path = os.fspath(path)
    by_class = {}
    if os.path.isdir(path):
        for folder, _, files in sorted(os.walk(path)):
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                    with open(os.path.join(folder, name), "rb") as f:
                        relative = os.path.relpath(os.path.join(folder, name), path).replace(os.sep, "/")
                        by_class.setdefault(os.path.dirname(relative), []).append((relative, f.read()))
    elif os.path.isfile(path):
        by_class = _read_zip(path)
    else:
        raise FileNotFoundError(
            f"{path!r} is neither a folder nor a .zip file of class sub-folders: no such file or folder."
        )
    if not by_class:
        raise ValueError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {path!r}: it must hold one "
            "sub-folder of images per class."
        )
    tops = {folder.split("/")[0] for folder in by_class}
    # A zip of one folder (`data.zip` holding `data/...`): class names are relative to that folder.
    root = tops.pop() if not os.path.isdir(path) and len(tops) == 1 and "" not in by_class else ""
    if root in by_class:
        example = by_class[root][0][0]
        raise ValueError(
            f"{path!r} has images at its top level (e.g. {example!r}), outside any class folder: images must be "
            f"in one sub-folder per class (e.g. {root + '/' if root else ''}cat/1.png, "
            f"{root + '/' if root else ''}dog/1.png). Move them into class folders, or remove them."
        )
    class_names = sorted(by_class)
    files = [file for name in class_names for file, _ in by_class[name]]
    contents = [data for name in class_names for _, data in by_class[name]]
    labels = np.repeat(np.arange(len(class_names)), [len(by_class[n]) for n in class_names])
    names = [name[len(root) + 1:] if root else name for name in class_names]
    return contents, labels, names, files


def _read_zip(path):
    """`{folder: [(member, bytes)]}` of the images in a zip file; a corrupt zip raises `ValueError`."""
    with open(path, "rb") as f:
        magic = f.read(4)
    member = None
    try:
        with zipfile.ZipFile(path) as archive:
            by_class = {}
            for member in sorted(archive.namelist()):
                hidden = member.startswith("__MACOSX/") or os.path.basename(member).startswith(".")
                if member.lower().endswith(IMAGE_EXTENSIONS) and not hidden:
                    by_class.setdefault(os.path.dirname(member), []).append((member, archive.read(member)))
            return by_class
    except RuntimeError as error:  # zipfile: "File ... is encrypted, password required for extraction"
        raise ValueError(f"{path!r}: cannot read {member!r}: {error}. Use an unencrypted zip.") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
        if member is None and not path.lower().endswith(".zip") and magic[:2] != b"PK":
            raise ValueError(
                f"{path!r} is neither a folder nor a .zip file: pass a folder or a .zip file of one sub-folder "
                "of images per class."
            ) from None
        where = f" (member {member!r})" if member is not None else ""
        raise ValueError(
            f"{path!r} is a corrupt zip file{where}: {error}. It may be truncated (an interrupted download or "
            "copy); download or create it again."
        ) from None


def _tf_message(error):
    """A TensorFlow error's message without the graph node and op decorations."""
    return _TF_MESSAGE.sub("", getattr(error, "message", str(error))).strip()


def decode_all(contents, decode_fn, batch_size=256, files=None, path=None):
    """Decodes a list of encoded images with `decode_fn` in parallel `tf.data`.

    An image that does not decode raises `ValueError` naming it: `files[i]`
    (inside `path`) names `contents[i]`.
    """
    if not contents:
        raise ValueError("No images to decode.")
    indexed = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(contents), dtype=tf.int64), tf.constant(contents, tf.string)))
    batches = list(
        indexed.map(lambda i, data: (i, decode_fn(data)), num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
        .batch(batch_size)
        .as_numpy_iterator()
    )
    decoded = np.concatenate([indices for indices, _ in batches]) if batches else np.zeros(0, np.int64)
    if len(decoded) < len(contents):
        bad = np.setdiff1d(np.arange(len(contents)), decoded)
        try:
            decode_fn(tf.constant(contents[bad[0]]))
            reason = "it does not decode"
        except (tf.errors.OpError, ValueError) as error:
            reason = _tf_message(error).rstrip(".")
        name = files[bad[0]] if files is not None else f"image {bad[0]}"
        where = f" in {path!r}" if path is not None else ""
        more = f" ({bad.size - 1} more image(s) fail too)" if bad.size > 1 else ""
        raise ValueError(
            f"Cannot decode {name!r}{where}: {reason}{more}. Replace or remove the file; images must be "
            f"{', '.join(IMAGE_EXTENSIONS)} files."
        )
    return np.concatenate([images for _, images in batches])


def load_image_folder(path, image_size=(28, 28), color_mode="grayscale"):
    """Loads a folder or `.zip` of class sub-folders into `(x, y, class_names)`.

    Images are decoded, resized to `image_size` (an int for square images, or
    `(height, width)`) and scaled to `[0, 1]` float32; `color_mode` is
    `"grayscale"` (1 channel) or `"rgb"` (3 channels).
    """
    image_size = check_image_size(image_size)
    channels = {"grayscale": 1, "rgb": 3}.get(color_mode)
    if channels is None:
        raise ValueError(f"`color_mode` must be 'grayscale' or 'rgb', got {color_mode!r}.")
    contents, labels, class_names, files = read_class_files(path)

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), image_size)

    return decode_all(contents, decode, files=files, path=os.fspath(path)), labels, class_names


def image_decoder(image_size, channels=3, dtype="float32", from_files=False):
    """A `decode` function for `EpisodeSampler(encoded, labels, ..., decode=...)`.

    It turns one encoded image (PNG/JPEG/BMP/GIF bytes, or a file path when
    `from_files=True`) into `[height, width, channels]`, resized with
    antialiasing, as float32 in [0, 1] or uint8 (`dtype`).

    >>> import numpy as np, tensorflow as tf
    >>> png = tf.io.encode_png(np.zeros((40, 30, 3), np.uint8))
    >>> image_decoder(16)(png).shape
    TensorShape([16, 16, 3])
    """
    size = check_image_size(image_size)
    if dtype not in ("float32", "uint8"):
        raise ValueError(f"`dtype` must be 'float32' (pixels in [0, 1]) or 'uint8', got {dtype!r}.")

    def decode(encoded):
        data = tf.io.read_file(encoded) if from_files else encoded
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        resized = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), size, antialias=True)
        resized = tf.clip_by_value(resized, 0.0, 1.0)
        if dtype == "uint8":
            return tf.cast(tf.round(resized * 255.0), tf.uint8)
        return resized

    return decode
