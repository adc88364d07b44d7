"""What the image-dataset loaders return, and the class splits that ship with keras-meta.

Every loader of `keras_meta.datasets` (`mini_imagenet`, `tiered_imagenet`,
`cifar_fs`, `fc100`, `cub`, `tfds_images`) returns an `ImageSet`:

- `images`: `[N, H, W, C]`, float32 in [0, 1] (`dtype="float32"`, the
  default) or the stored uint8 pixels (`dtype="uint8"`, four times less
  memory: put `keras.layers.Rescaling(1 / 255)` first in the model, or pass
  `rescale=1 / 255` to a `keras_meta.models` backbone);
- `labels`: int64 class labels `0..C-1` within the split;
- `class_names`: `class_names[label]`, the dataset's own name of each class
  (a WordNet id, a CIFAR-100 class name, a bird species).

`EpisodeSampler(images, labels, ways, shots, queries)` draws episodes from it.
Data too big to hold decoded (tiered-ImageNet) stays encoded: `EpisodeSampler(
encoded, labels, ..., decode=image_decoder(84))` decodes only the drawn images.

Example:

>>> import numpy as np
>>> from keras_meta.datasets import image_sets
>>> len(image_sets.split_classes("cifar_fs", "test"))
20
>>> float(image_sets.converted(np.full((1, 2, 2, 3), 255, np.uint8), "float32").max())
1.0
"""

import collections
import importlib.resources

import numpy as np
import tensorflow as tf

from keras_meta.data.sources import image_decoder  # noqa: F401  (re-exported beside the loaders)

ImageSet = collections.namedtuple("ImageSet", ["images", "labels", "class_names"])
"""One class split of an image dataset: `images`, integer `labels` and `class_names[label]`."""
DTYPES = ("float32", "uint8")


def check_dtype(dtype):
    """`dtype` if it is `"float32"` or `"uint8"`, else a `ValueError`.

    >>> check_dtype("uint8")
    'uint8'
    >>> check_dtype("float64")
    Traceback (most recent call last):
    ...
    ValueError: `dtype` must be 'float32' (pixels in [0, 1]) or 'uint8' (the stored pixels), got 'float64'.
    """
    if dtype not in DTYPES:
        raise ValueError(
            f"`dtype` must be 'float32' (pixels in [0, 1]) or 'uint8' (the stored pixels), got {dtype!r}."
        )
    return dtype


def converted(images, dtype):
    """uint8 `images` as `dtype`: unchanged for `"uint8"`, divided by 255 into float32 for `"float32"`.

    The float32 array is the only copy made (scaled in place).
    """
    images = np.asarray(images)
    if check_dtype(dtype) == "uint8":
        return images.astype(np.uint8, copy=False)
    out = images.astype(np.float32)
    out *= np.float32(1 / 255)
    return out


def resized_uint8(images, size):
    """uint8 `images` (one `[H, W, C]` or a batch `[N, H, W, C]`) resized to `size`, as a uint8 tensor.

    Antialiased bilinear, computed as `image_decoder(size, dtype="uint8")`
    does, so pixels stored decoded and pixels decoded from files resize alike.
    Works eagerly and inside `tf.data`.

    >>> resized_uint8(np.full((2, 10, 6, 3), 200, np.uint8), (4, 4)).numpy()[0, 0, 0].tolist()
    [200, 200, 200]
    """
    pixels = tf.image.convert_image_dtype(tf.convert_to_tensor(images, tf.uint8), tf.float32)
    resized = tf.clip_by_value(tf.image.resize(pixels, size, antialias=True), 0.0, 1.0)
    return tf.cast(tf.round(resized * 255.0), tf.uint8)


def check_split(dataset, split, splits):
    """`split` if it is one of `splits`, else a `ValueError` naming the dataset and the choices.

    >>> check_split("CUB", "val", ("train", "val", "test"))
    'val'
    >>> check_split("CUB", "base", ("train", "val", "test"))
    Traceback (most recent call last):
    ...
    ValueError: Unknown CUB split 'base'; choose one of ['train', 'val', 'test'].
    """
    if not isinstance(split, str) or split not in splits:
        raise ValueError(f"Unknown {dataset} split {split!r}; choose one of {list(splits)}.")
    return split


def split_classes(dataset, split):
    """The class names of a standard split that ships with keras-meta, one per line of `splits/<dataset>/<split>.txt`.

    >>> split_classes("fc100", "test")
    ['aquatic_mammals', 'insects', 'medium_mammals', 'people']
    """
    resource = importlib.resources.files("keras_meta.datasets") / "splits" / dataset / f"{split}.txt"
    if not resource.is_file():
        raise ValueError(f"keras-meta ships no class list for {dataset} split {split!r}.")
    return [line.strip() for line in resource.read_text().splitlines() if line.strip()]


def labelled(images, names, class_order, dtype):
    """`ImageSet` of the examples whose class is in `class_order`, labels in that order.

    `images[i]` belongs to class `names[i]`; examples of other classes are
    dropped. A class of `class_order` with no example raises `ValueError`
    (the files on disk are not the ones the split was made from). When every
    example is kept, `images` is not copied (nor converted, for `"uint8"`).

    >>> data = labelled(np.zeros((3, 2, 2, 1), np.uint8), ["cat", "dog", "cow"], ["dog", "cat"], "uint8")
    >>> data.images.shape, data.labels.tolist(), data.class_names
    ((2, 2, 2, 1), [1, 0], ['dog', 'cat'])
    """
    names = np.asarray(names)
    index = {name: label for label, name in enumerate(class_order)}
    keep = np.fromiter((name in index for name in names), bool, len(names))
    labels = np.fromiter((index[name] for name in names[keep]), np.int64, int(keep.sum()))
    missing = sorted(set(class_order) - set(names[keep].tolist()))
    if missing:
        raise ValueError(
            f"{len(missing)} class(es) of the split have no image in these files, e.g. {missing[:5]}: "
            "the files are not the dataset this split was made from (or are incomplete)."
        )
    images = np.asarray(images)
    return ImageSet(converted(images if keep.all() else images[keep], dtype), labels, list(class_order))

