"""FC100 (Oreshkin et al. 2018, TADAM): few-shot CIFAR-100 split by superclass.

CIFAR-100 groups its 100 classes into 20 superclasses of 5. FC100 gives 12
superclasses (60 classes) to training, 4 (20 classes) to validation and 4
(20 classes) to test, so that test classes share no superclass with training
ones; every class keeps all its 600 images (CIFAR-100's train and test sets
merged), 32x32 RGB. The superclass lists ship with keras-meta in
`splits/fc100/{train,val,test}.txt` (TADAM's split, as in torchmeta); the
classes of each split are read from the archive's coarse labels. Labels run
superclass by superclass (in the order of the shipped list), classes sorted
within each, so `label // 5` is the superclass's index in `superclasses(split)`.
The images come from the official CIFAR-100 archive, downloaded once by
`keras_meta.datasets.cifar100` into `~/.keras/cifar100/` (or `data_dir/cifar100/`).

Example:

>>> from keras_meta.datasets import fc100
>>> fc100.superclasses("test")
['aquatic_mammals', 'insects', 'medium_mammals', 'people']
>>> images, labels, class_names = fc100.load("test")  # doctest: +SKIP
>>> images.shape, len(class_names)  # doctest: +SKIP
((12000, 32, 32, 3), 20)
"""

import numpy as np

from keras_meta.datasets import cifar100, image_sets

SPLITS = ("train", "val", "test")
CLASSES_PER_SUPERCLASS = 5


def superclasses(split):
    """The CIFAR-100 superclass (coarse) names of an FC100 split."""
    return image_sets.split_classes("fc100", image_sets.check_split("FC100", split, SPLITS))


def load(split, dtype="float32", data_dir=None):
    """An FC100 split as an `ImageSet`: `[N, 32, 32, 3]` images, labels `0..C-1`, CIFAR-100 class names.

    Args:
        split: `"train"` (12 superclasses, 60 classes), `"val"` (4, 20) or
            `"test"` (4, 20); 600 images per class.
        dtype: `"float32"` (pixels in [0, 1]) or `"uint8"` (the stored pixels).
        data_dir: the folder that holds (or will hold) `cifar100/cifar-100-python.tar.gz`;
            default `$KERAS_HOME`, else `~/.keras`.
    """
    groups = superclasses(split)
    image_sets.check_dtype(dtype)
    data = cifar100.load_all(data_dir)
    return image_sets.labelled(data.images, data.fine_names, split_classes(data, groups), dtype)


def split_classes(data, groups):
    """The fine classes of the superclasses `groups` in `data` (a `cifar100.Cifar100`), in label order.

    Raises `ValueError` when a superclass has no image or not its 5 classes:
    the archive is incomplete or not CIFAR-100.
    """
    order = []
    for group in groups:
        members = sorted(set(np.asarray(data.fine_names)[np.asarray(data.coarse_names) == group].tolist()))
        if len(members) != CLASSES_PER_SUPERCLASS:
            raise ValueError(
                f"CIFAR-100 superclass {group!r} has {len(members)} class(es) with images in these files "
                f"({members}), not {CLASSES_PER_SUPERCLASS}: the files are not the CIFAR-100 archive FC100 "
                "was made from (or are incomplete)."
            )
        order.extend(members)
    return order
