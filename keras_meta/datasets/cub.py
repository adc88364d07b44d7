"""CUB-200-2011 (Wah et al. 2011): 11788 photos of 200 bird species, in the few-shot split of Chen et al. 2019.

`load(split)` downloads `CUB_200_2011.tgz` once (1.1 GB, SHA-256 checked;
the SHA-256 is the one TensorFlow Datasets records for this file, in its
`url_checksums/caltech_birds2011.txt`) into `~/.keras/cub/` (or
`data_dir/cub/`), extracts it, and reads the images of the split's classes
through the archive's `images.txt`, `image_class_labels.txt` and
`classes.txt`. Offline, copy the archive into that folder by hand.

The split is the one of "A Closer Look at Few-shot Classification" (Chen et
al., ICLR 2019, `filelists/CUB/write_CUB_filelist.py`): with the 200 class
folders in sorted order, class `i` is a training (base) class when `i % 2 ==
0`, a validation class when `i % 4 == 1` and a test (novel) class when
`i % 4 == 3`: 100 / 50 / 50 classes. The lists ship with keras-meta in
`splits/cub/{train,val,test}.txt`. Images are decoded as RGB and resized to
`image_size` x `image_size` whatever their aspect (bilinear, antialiased).

Example:

>>> from keras_meta.datasets import cub
>>> len(cub.classes("train")), len(cub.classes("val")), len(cub.classes("test"))
(100, 50, 50)
>>> cub.classes("test")[0]
'004.Groove_billed_Ani'
>>> images, labels, class_names = cub.load("test", image_size=84)  # doctest: +SKIP
>>> images.shape[1:], images.dtype, class_names[labels[0]]  # doctest: +SKIP
((84, 84, 3), dtype('float32'), '004.Groove_billed_Ani')
"""

import os

import keras
import numpy as np

from keras_meta.data import sources
from keras_meta.datasets import files, image_sets

DATASET = "cub"
FNAME = "CUB_200_2011.tgz"
ORIGIN = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
SHA256 = "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081"
FOLDER = "CUB_200_2011"
INDEX_FILES = ("images.txt", "image_class_labels.txt", "classes.txt")
SPLITS = ("train", "val", "test")
CHUNK = 2048  # images decoded per step of the progress bar


def classes(split):
    """The class folder names (such as `"001.Black_footed_Albatross"`) of a split, in label order."""
    return image_sets.split_classes("cub", image_sets.check_split("CUB", split, SPLITS))


def split_of(index):
    """The split of the class at `index` (0-based) in the sorted class folders: Chen et al.'s rule.

    >>> [split_of(i) for i in range(4)]
    ['train', 'val', 'train', 'test']
    """
    if index % 2 == 0:
        return "train"
    return "val" if index % 4 == 1 else "test"


def archive_path(data_dir=None):
    """Local path of `CUB_200_2011.tgz`: the cached copy, or downloaded now."""
    return files.download(FNAME, ORIGIN, SHA256, DATASET, data_dir)


def extracted_folder(data_dir=None):
    """The `CUB_200_2011` folder of the extracted archive, downloading and extracting as needed."""
    return files.extracted(archive_path(data_dir), FOLDER, INDEX_FILES, "CUB-200-2011", ORIGIN)


def decode(jpeg_bytes, image_size=84):
    """One JPEG as uint8 RGB `[height, width, 3]` of `image_size` (an int or a pair), whatever its aspect.

    Grey JPEGs come back with 3 equal channels; the resizing is antialiased
    bilinear (`image_decoder(image_size, dtype="uint8")`).

    >>> import tensorflow as tf
    >>> jpeg = tf.io.encode_jpeg(np.full((30, 40, 3), 128, np.uint8))
    >>> decode(jpeg, image_size=(8, 10)).shape
    TensorShape([8, 10, 3])
    """
    return image_sets.image_decoder(image_size, channels=3, dtype="uint8")(jpeg_bytes)


def load(split, image_size=84, dtype="float32", data_dir=None):
    """A CUB split as an `ImageSet`: `[N, image_size, image_size, 3]` images, labels `0..C-1`, class folder names.

    Args:
        split: `"train"` (100 classes), `"val"` (50) or `"test"` (50).
        image_size: side of the square output images (84 is the usual
            choice; 224 for ResNets at full size), or a `(height, width)` pair.
        dtype: `"float32"` (pixels in [0, 1]) or `"uint8"`.
        data_dir: the folder that holds (or will hold) `cub/CUB_200_2011.tgz`;
            default `$KERAS_HOME`, else `~/.keras`.
    """
    names = classes(split)
    size = sources.check_image_size(image_size)
    image_sets.check_dtype(dtype)
    folder = extracted_folder(data_dir)
    paths, image_classes = _index(folder, names)
    image_folder = os.path.join(folder, "images")
    for path in paths:
        if not os.path.isfile(os.path.join(image_folder, path)):
            raise FileNotFoundError(
                f"CUB-200-2011: {path} (listed in images.txt) is not in {image_folder}: the archive is "
                "incomplete. Delete it and its extracted folder, then load again."
            )
    progress = keras.utils.Progbar(len(paths), unit_name="image") if len(paths) > CHUNK else None
    decoder = image_sets.image_decoder(size, channels=3, dtype="uint8")
    images = np.empty((len(paths), *size, 3), np.uint8)
    for start in range(0, len(paths), CHUNK):  # read and decode a chunk at a time: bounded memory
        part = paths[start:start + CHUNK]
        contents = []
        for path in part:
            with open(os.path.join(image_folder, path), "rb") as f:
                contents.append(f.read())
        images[start:start + len(part)] = sources.decode_all(contents, decoder, files=part, path=image_folder)
        if progress is not None:
            progress.add(len(part))
    return image_sets.labelled(images, image_classes, names, dtype)


def _index(folder, names):
    """`(paths, class_names)` of the images of the classes `names`, in `images.txt` order."""
    class_name = dict(_pairs(folder, "classes.txt"))
    label = dict(_pairs(folder, "image_class_labels.txt"))
    wanted = set(names)
    paths, image_classes = [], []
    for image_id, path in _pairs(folder, "images.txt"):
        if image_id not in label or label[image_id] not in class_name:
            raise ValueError(
                f"CUB-200-2011: image {image_id} ({path}) has no class in image_class_labels.txt and "
                f"classes.txt of {folder}: the files are corrupted or do not belong together."
            )
        name = class_name[label[image_id]]
        if name in wanted:
            paths.append(path)
            image_classes.append(name)
    missing = sorted(wanted - set(image_classes))
    if missing:
        raise ValueError(
            f"CUB-200-2011: {len(missing)} class(es) of the split have no image in {folder}, e.g. {missing[:5]}: "
            "the archive is incomplete or not CUB_200_2011.tgz. Delete it and its extracted folder, then load again."
        )
    return paths, image_classes


def _pairs(folder, name):
    """The `(first, rest)` pairs of the lines of `folder/name` (`"<id> <value>"`)."""
    path = os.path.join(folder, name)
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise ValueError(f"{path}, line {number}: expected '<id> <value>', got {line.strip()!r}.")
            pairs.append((fields[0], fields[1].strip()))
    return pairs
