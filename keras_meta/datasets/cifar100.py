"""CIFAR-100 (Krizhevsky 2009) from the official python archive: what `cifar_fs` and `fc100` split.

`load_all()` downloads `cifar-100-python.tar.gz` once (SHA-256 checked, into
`~/.keras/cifar100/` or `data_dir/cifar100/`), extracts it and returns all
60000 images, its train and test sets together, as
`Cifar100(images, fine_names, coarse_names)`: uint8 `[60000, 32, 32, 3]`
images and, for each image, its class (one of 100 fine names such as
`"maple_tree"`) and its superclass (one of 20 coarse names such as
`"trees"`). Offline, copy the archive into that folder by hand.

Example:

>>> import numpy as np
>>> from keras_meta.datasets import cifar100
>>> cifar100.to_hwc(np.zeros((2, 3072), np.uint8)).shape
(2, 32, 32, 3)
>>> data = cifar100.load_all()  # doctest: +SKIP
>>> data.images.shape, data.fine_names[0], data.coarse_names[0]  # doctest: +SKIP
((60000, 32, 32, 3), 'cattle', 'large_omnivores_and_herbivores')
"""

import collections
import os

import numpy as np

from keras_meta.datasets import files

DATASET = "cifar100"
FNAME = "cifar-100-python.tar.gz"
ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
SHA256 = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"
FOLDER = "cifar-100-python"
PARTS = ("train", "test")

Cifar100 = collections.namedtuple("Cifar100", ["images", "fine_names", "coarse_names"])


def to_hwc(rows):
    """CIFAR rows `[N, 3072]` (each the red, green then blue 32x32 planes) as uint8 images `[N, 32, 32, 3]`.

    >>> row = np.repeat(np.array([10, 20, 30], np.uint8), 1024)  # a flat colour: red, green, blue planes
    >>> to_hwc(row[None])[0, 5, 7].tolist()
    [10, 20, 30]
    """
    rows = np.asarray(rows, np.uint8)
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def archive_path(data_dir=None):
    """Local path of `cifar-100-python.tar.gz`: the cached copy, or downloaded now.

    >>> archive_path("/data")  # doctest: +SKIP
    '/data/cifar100/cifar-100-python.tar.gz'
    """
    return files.download(FNAME, ORIGIN, SHA256, DATASET, data_dir)


def extracted_folder(data_dir=None):
    """The folder that holds the `train`, `test` and `meta` pickles, downloading and extracting as needed.

    >>> sorted(os.listdir(extracted_folder("/data")))  # doctest: +SKIP
    ['file.txt~', 'meta', 'test', 'train']
    """
    return files.extracted(archive_path(data_dir), FOLDER, [*PARTS, "meta"], "CIFAR-100", ORIGIN)


def load_all(data_dir=None):
    """All 60000 CIFAR-100 images (train then test) as `Cifar100(images, fine_names, coarse_names)`.

    `images` is uint8 `[N, 32, 32, 3]`; `fine_names[i]` and `coarse_names[i]`
    are the class and superclass names of image `i` (NumPy string arrays).

    >>> data = load_all()  # doctest: +SKIP
    >>> data.images.shape, sorted(set(data.fine_names))[:2], len(set(data.coarse_names))  # doctest: +SKIP
    ((60000, 32, 32, 3), ['apple', 'aquarium_fish'], 20)
    """
    folder = extracted_folder(data_dir)
    meta = _unpickle(os.path.join(folder, "meta"), ("fine_label_names", "coarse_label_names"))
    fine_table = np.array([files.text(name) for name in meta["fine_label_names"]])
    coarse_table = np.array([files.text(name) for name in meta["coarse_label_names"]])
    rows, fine, coarse = [], [], []
    for part in PARTS:
        path = os.path.join(folder, part)
        content = _unpickle(path, ("data", "fine_labels", "coarse_labels"))
        data = np.asarray(content["data"])
        fine_labels = np.asarray(content["fine_labels"], np.int64)
        coarse_labels = np.asarray(content["coarse_labels"], np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or not len(data) == len(fine_labels) == len(coarse_labels):
            raise ValueError(
                f"{path} is not a CIFAR-100 pickle: expected 'data' [N, 3072] and N fine and coarse labels, got "
                f"data {data.shape}, {len(fine_labels)} fine and {len(coarse_labels)} coarse labels."
            )
        for labels, table, kind in ((fine_labels, fine_table, "fine"), (coarse_labels, coarse_table, "coarse")):
            if len(labels) and (labels.min() < 0 or labels.max() >= len(table)):
                raise ValueError(
                    f"{path} has {kind} labels outside 0..{len(table) - 1} (the names in meta): the files are "
                    "corrupted or do not belong together."
                )
        rows.append(data)
        fine.append(fine_table[fine_labels])
        coarse.append(coarse_table[coarse_labels])
    return Cifar100(to_hwc(np.concatenate(rows)), np.concatenate(fine), np.concatenate(coarse))


def _unpickle(path, keys):
    """The dict in a CIFAR-100 pickle, keys as `str` (the archive's Python 2 pickles hold byte-string keys)."""
    content = files.unpickle(path)
    if isinstance(content, dict):
        content = {files.text(key): value for key, value in content.items()}
    missing = [key for key in keys if not isinstance(content, dict) or key not in content]
    if missing:
        raise ValueError(f"{path} is not a CIFAR-100 pickle: it lacks {missing}.")
    return content
