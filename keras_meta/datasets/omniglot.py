"""Omniglot (Lake et al. 2015): 1623 handwritten characters from 50 alphabets.

`load(split)` returns `(images, labels, alphabets)`: float32 images
`[N, H, W, 1]` with ink 1.0 and background 0.0, integer character labels, and
`alphabets[label]`, the alphabet of each character. The splits are Lake's:
`"background"` (30 alphabets) and `"evaluation"` (20 alphabets), downloaded on
first use, and the minimal background splits `"small1"` and `"small2"` (5
alphabets each), which ship with keras-meta (MIT licence beside them).

`load_vinyals(split)` gives the split of Vinyals et al. (2016, Matching
Networks) that most few-shot papers report on: 1200 training characters
(`"trainval"`: Snell et al.'s 1028 `"train"` + 172 `"val"`) and 423 `"test"`
characters, drawn from both of Lake's archives, with each rotation of a
character by 0, 90, 180 and 270 degrees a class of its own (4800 / 1692
classes). The rotations are not stored: build the sampler with
`EpisodeSampler(..., rotations=VINYALS_ROTATIONS)`. The character lists ship
with keras-meta (`splits/omniglot_vinyals/`, from Snell et al.'s
`prototypical-networks`, identical to torchmeta's); `vinyals_characters(split)`
returns them, `names[label]` for the labels `load_vinyals` returns.

Example:

>>> from keras_meta.datasets import omniglot
>>> images, labels, alphabets = omniglot.load("small1")
>>> images.shape, images.dtype
((2720, 28, 28, 1), dtype('float32'))
>>> len(omniglot.vinyals_characters("trainval")), len(omniglot.vinyals_characters("test"))
(1200, 423)
>>> from keras_meta.data import EpisodeSampler
>>> train = omniglot.load_vinyals("trainval")  # doctest: +SKIP
>>> sampler = EpisodeSampler(*train[:2], ways=60, shots=1, queries=5,
...                          rotations=omniglot.VINYALS_ROTATIONS)  # doctest: +SKIP
>>> sampler.num_classes  # doctest: +SKIP
4800
"""

import collections
import importlib.resources

import numpy as np
import tensorflow as tf

from keras_meta.data import sources
from keras_meta.datasets import files, image_sets

ORIGIN = "https://github.com/brendenlake/omniglot/raw/master/python/"
SPLITS = {
    "background": ("images_background.zip", "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640"),
    "evaluation": ("images_evaluation.zip", "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee"),
    "small1": ("images_background_small1.zip", "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"),
    "small2": ("images_background_small2.zip", "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"),
}
BUNDLED = ("small1", "small2")
VINYALS_SPLITS = ("train", "val", "trainval", "test")
VINYALS_ROTATIONS = (0, 90, 180, 270)

Omniglot = collections.namedtuple("Omniglot", ["images", "labels", "alphabets"])


def decode(png_bytes, image_size=28):
    """Decodes one Omniglot PNG to float32 `[image_size, image_size, 1]`, ink 1.0.

    The one preprocessing step `load` uses; apply it to your own character
    images to match. `image_size=None` keeps the original 105x105. Works
    eagerly and inside `tf.data`/`tf.function`.

    >>> decode(open("0108_01.png", "rb").read()).shape  # doctest: +SKIP
    TensorShape([28, 28, 1])
    """
    size = None if image_size is None else sources.check_image_size(image_size)
    image = tf.io.decode_png(png_bytes, channels=1)
    ink = 1.0 - tf.image.convert_image_dtype(image, tf.float32)
    if size is None:
        return ink
    return tf.image.resize(ink, size, method="area", antialias=True)


def check_split(split, argument="split"):
    """`split` if it names an Omniglot split, else a `ValueError` listing the names."""
    if not isinstance(split, str) or split not in SPLITS:
        where = "" if argument == "split" else f" in `{argument}`"
        raise ValueError(f"Unknown Omniglot split {split!r}{where}; choose one of {sorted(SPLITS)}.")
    return split


def check_splits(splits, argument="splits"):
    """A tuple of split names from one name or a sequence of them; unknown names raise `ValueError`."""
    if isinstance(splits, str):
        splits = (splits,)
    try:
        splits = tuple(splits)
    except TypeError:
        raise ValueError(
            f"`{argument}` must be a split name or a sequence of them, out of {sorted(SPLITS)}; got {splits!r}."
        ) from None
    if not splits:
        raise ValueError(f"`{argument}` is empty: name at least one split out of {sorted(SPLITS)}.")
    return tuple(check_split(split, argument) for split in splits)


def archive_path(split, data_dir=None):
    """Local path of a split's zip: bundled (small1, small2), cached, or downloaded now."""
    fname, sha256 = SPLITS[check_split(split)]
    if split in BUNDLED:
        return str(importlib.resources.files("keras_meta.datasets") / "omniglot_data" / fname)
    return files.download(
        fname, ORIGIN + fname, sha256, "omniglot", data_dir=data_dir,
        alternatives=f"Or use a bundled split: {BUNDLED}.",
    )


def load(split, image_size=28, data_dir=None):
    """Loads an Omniglot split as `Omniglot(images, labels, alphabets)`.

    Args:
        split: `"background"`, `"evaluation"`, `"small1"` or `"small2"`.
        image_size: side of the square output images, or a `(height, width)`
            pair (`None`: the original 105x105).
        data_dir: cache folder for downloaded splits (default `$KERAS_HOME`,
            else `~/.keras`); the bundled splits never need it.
    """
    return _load_named(split, image_size, data_dir)[0]


def _check_image_size(image_size):
    return None if image_size is None else sources.check_image_size(image_size)


def _load_named(split, image_size, data_dir):
    """`(Omniglot, character_names)`, names such as `"Greek/character01"`."""
    size = _check_image_size(image_size)
    path = archive_path(split, data_dir)
    contents, labels, class_names, file_names = sources.read_class_files(path)
    images = sources.decode_all(contents, lambda data: decode(data, size), files=file_names, path=path)
    alphabets = np.array([name.split("/")[0] for name in class_names])
    return Omniglot(images, labels, alphabets), class_names


def unseen_alphabet_split(train_splits=("small1",), test_split="small2", image_size=28, data_dir=None):
    """Training data and a test set of alphabets that training never saw.

    Loads and merges `train_splits` (one split name or a sequence of them),
    then keeps from `test_split` only the characters of alphabets absent from
    training (for `small1` -> `small2`: Japanese (katakana), Sanskrit and
    Tagalog). Returns `(train, test)` `Omniglot` tuples with labels renumbered
    from 0; `test` is `None` when every alphabet of `test_split` was seen in
    training.
    """
    train_splits = check_splits(train_splits, "train_splits")
    test_split = check_split(test_split, "test_split")
    _check_image_size(image_size)
    train = _merge([_load_named(split, image_size, data_dir) for split in train_splits])
    test = load(test_split, image_size, data_dir)
    unseen = np.flatnonzero(~np.isin(test.alphabets, train.alphabets))
    if unseen.size == 0:
        return train, None
    keep = np.isin(test.labels, unseen)
    remap = np.full(len(test.alphabets), -1)
    remap[unseen] = np.arange(unseen.size)
    return train, Omniglot(test.images[keep], remap[test.labels[keep]], test.alphabets[unseen])


def _merge(named_parts):
    """Concatenates splits into one; a character found in several splits is kept once."""
    images, labels, alphabets, seen = [], [], [], set()
    for part, names in named_parts:
        new = [i for i, name in enumerate(names) if name not in seen]
        seen.update(names)
        remap = np.full(len(names), -1)
        remap[new] = np.arange(len(alphabets), len(alphabets) + len(new))
        keep = remap[part.labels] >= 0
        images.append(part.images[keep])
        labels.append(remap[part.labels[keep]])
        alphabets.extend(part.alphabets[new])
    return Omniglot(np.concatenate(images), np.concatenate(labels), np.array(alphabets))


def vinyals_characters(split):
    """The characters of a split of Vinyals et al. (2016), as `"Alphabet/characterNN"` names.

    `split` is `"train"` (1028 characters), `"val"` (172), `"trainval"` (the
    1200 of `"train"` then `"val"`) or `"test"` (423). `load_vinyals(split)`
    labels character `names[label]` with `label`.

    >>> names = vinyals_characters("test")
    >>> len(names), names[0]
    (423, 'Gurmukhi/character42')
    >>> vinyals_characters("trainval") == vinyals_characters("train") + vinyals_characters("val")
    True
    """
    image_sets.check_split("Omniglot Vinyals", split, VINYALS_SPLITS)
    if split == "trainval":
        return vinyals_characters("train") + vinyals_characters("val")
    return image_sets.split_classes("omniglot_vinyals", split)


def load_vinyals(split, image_size=28, data_dir=None):
    """Loads a split of Vinyals et al.'s (2016) Omniglot split as `Omniglot(images, labels, alphabets)`.

    The standard few-shot Omniglot benchmark (Matching Networks, Prototypical
    Networks, MAML): characters of Lake's background and evaluation sets
    together, split into 1200 training characters (`"trainval"`, which Snell
    et al. divide into 1028 `"train"` and 172 `"val"`) and 423 `"test"`
    characters. Both archives are read (downloaded on first use, as `load`
    does). Label `i` is character `vinyals_characters(split)[i]`;
    `alphabets[label]` its alphabet.

    The benchmark's classes are the characters rotated by 0, 90, 180 and 270
    degrees (4800 training / 1692 test classes). They are made at sampling
    time, not stored: pass `rotations=VINYALS_ROTATIONS` to `EpisodeSampler`,
    which rotates counter-clockwise (`np.rot90`), as PIL's `Image.rotate` does
    for the `rot090` classes of Snell et al.'s lists. (Since all four
    rotations are classes, the set of classes does not depend on the
    direction anyway.)

    Args:
        split: `"train"`, `"val"`, `"trainval"` or `"test"`.
        image_size: side of the square output images, or a `(height, width)`
            pair (`None`: the original 105x105). The benchmark uses 28.
        data_dir: cache folder for the downloaded archives (default
            `$KERAS_HOME`, else `~/.keras`).

    Raises:
        ValueError: for an unknown split, or archives that lack characters of
            the split (not Lake's archives, or incomplete ones).

    >>> test = load_vinyals("test")  # doctest: +SKIP
    >>> test.images.shape, len(test.alphabets), test.alphabets[test.labels[0]]  # doctest: +SKIP
    ((8460, 28, 28, 1), 423, 'Gurmukhi')
    """
    characters = vinyals_characters(split)
    size = _check_image_size(image_size)
    index = {name: label for label, name in enumerate(characters)}
    images, labels, found = [], [], set()
    for archive in ("background", "evaluation"):
        path = archive_path(archive, data_dir)
        contents, archive_labels, names, file_names = sources.read_class_files(path)
        keep = [i for i, label in enumerate(archive_labels) if names[label] in index and names[label] not in found]
        found.update(names[archive_labels[i]] for i in keep)
        if keep:
            images.append(sources.decode_all(
                [contents[i] for i in keep], lambda data: decode(data, size),
                files=[file_names[i] for i in keep], path=path,
            ))
            labels.append(np.array([index[names[archive_labels[i]]] for i in keep], np.int64))
    missing = [name for name in characters if name not in found]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(characters)} characters of the Omniglot Vinyals {split!r} split are "
            f"missing from images_background.zip and images_evaluation.zip, e.g. {missing[:5]}: these "
            "archives are not Lake's Omniglot archives, or are incomplete. Delete them from the cache folder "
            "to download them again."
        )
    images, labels = np.concatenate(images), np.concatenate(labels)
    order = np.argsort(labels, kind="stable")
    alphabets = np.array([name.split("/")[0] for name in characters])
    return Omniglot(images[order], labels[order], alphabets)
