"""Reading labelled examples into memory: arrays, `tf.data` datasets, image folders.

Example:

>>> from keras_meta.data import load_image_folder
>>> x, y, class_names = load_image_folder("alphabets.zip", image_size=(28, 28))  # doctest: +SKIP
"""

import os
import zipfile

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


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


def arrays_from_dataset(dataset, batch_size=1024):
    """Reads a `tf.data.Dataset` of `(x, y)` pairs (batched or not) into NumPy arrays."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            "The dataset must yield `(x, y)` pairs, e.g. `tfds.load(..., as_supervised=True)`; "
            f"its elements are {spec}."
        )
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("The dataset is infinite (`.repeat()`?); pass a finite dataset of `(x, y)` pairs.")
    if spec[1].shape.rank == 0:
        dataset = dataset.batch(batch_size)
    xs, ys = [], []
    for x, y in dataset.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("The dataset is empty: it yielded no `(x, y)` pairs.")
    return np.concatenate(xs), np.concatenate(ys)


def read_class_folders(path):
    """Lists a folder or `.zip` of class sub-folders of images.

    Returns `(contents, labels, class_names)`: the encoded bytes of every image,
    its integer label, and for each label the class folder relative to `path`
    (for example `"Greek/character01"`). Classes are sorted by folder name.
    """
    by_class = {}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                hidden = name.startswith("__MACOSX/") or os.path.basename(name).startswith(".")
                if name.lower().endswith(IMAGE_EXTENSIONS) and not hidden:
                    by_class.setdefault(os.path.dirname(name), []).append(archive.read(name))
        tops = {name.split("/")[0] for name in by_class}
        root = tops.pop() if len(tops) == 1 and "" not in by_class else ""
    elif os.path.isdir(path):
        for folder, _, files in sorted(os.walk(path)):
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    with open(os.path.join(folder, name), "rb") as f:
                        by_class.setdefault(folder, []).append(f.read())
        root = path
    else:
        raise FileNotFoundError(f"{path!r} is neither a folder nor a .zip file of class sub-folders.")
    if not by_class:
        raise ValueError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {path!r}: it must hold one "
            "sub-folder of images per class."
        )
    class_names = sorted(by_class)
    contents = [data for name in class_names for data in by_class[name]]
    labels = np.repeat(np.arange(len(class_names)), [len(by_class[n]) for n in class_names])
    names = [os.path.relpath(n, root).replace(os.sep, "/") if root else n for n in class_names]
    return contents, labels, names


def decode_all(contents, decode_fn, batch_size=256):
    """Decodes a list of encoded images with `decode_fn` in parallel `tf.data`."""
    images = (
        tf.data.Dataset.from_tensor_slices(tf.constant(contents, tf.string))
        .map(decode_fn, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
    )
    return np.concatenate(list(images.as_numpy_iterator()))


def load_image_folder(path, image_size=(28, 28), color_mode="grayscale"):
    """Loads a folder or `.zip` of class sub-folders into `(x, y, class_names)`.

    Images are decoded, resized to `image_size` (an int for square images, or
    `(height, width)`) and scaled to `[0, 1]` float32; `color_mode` is
    `"grayscale"` (1 channel) or `"rgb"` (3 channels).
    """
    image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    channels = {"grayscale": 1, "rgb": 3}.get(color_mode)
    if channels is None:
        raise ValueError(f"`color_mode` must be 'grayscale' or 'rgb', got {color_mode!r}.")
    contents, labels, class_names = read_class_folders(path)

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), image_size)

    return decode_all(contents, decode), labels, class_names
