import os
import re
import struct
import zipfile
import zlib

import keras
import numpy as np
import pytest

from keras_meta.data import EpisodeSampler
from keras_meta.datasets import files, omniglot


@pytest.fixture(scope="module")
def small1():
    return omniglot.load("small1")


def test_small1_contents(small1):
    images, labels, alphabets = small1
    assert images.shape == (2720, 28, 28, 1) and images.dtype == np.float32
    assert labels.min() == 0 and labels.max() == len(alphabets) - 1 == 135
    assert np.bincount(labels).tolist() == [20] * 136
    assert sorted(set(alphabets)) == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    # Ink is 1, paper 0: strokes cover a small part of each image.
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert 0.02 < images.mean() < 0.2
    assert images[:, 0, 0, 0].max() < 0.05  # corners are paper


def test_decode_matches_loader(small1):
    path = omniglot.archive_path("small1")
    with zipfile.ZipFile(path) as archive:
        name = sorted(n for n in archive.namelist() if n.endswith(".png"))[0]
        data = archive.read(name)
    np.testing.assert_allclose(omniglot.decode(data).numpy(), small1.images[0], atol=1e-6)
    full = omniglot.decode(data, image_size=None).numpy()
    assert full.shape == (105, 105, 1) and set(np.unique(full)) <= {0.0, 1.0}
    assert omniglot.decode(data, image_size=14).shape == (14, 14, 1)


def test_unseen_alphabet_split():
    train, test = omniglot.unseen_alphabet_split(("small1",), "small2")
    assert sorted(set(test.alphabets)) == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    assert not set(test.alphabets) & set(train.alphabets)
    assert np.array_equal(np.unique(test.labels), np.arange(len(test.alphabets)))
    assert len(test.images) == 20 * len(test.alphabets)


def test_merging_splits_keeps_shared_characters_once():
    train, test = omniglot.unseen_alphabet_split(("small1", "small2"), "small2")
    assert test is None
    # small1 and small2 share their Greek and Latin characters (same drawings).
    assert np.bincount(train.labels).max() == 20
    flat = train.images.reshape(len(train.images), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)


def test_bundled_splits_never_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a bundled split tried to download")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    assert omniglot.load("small2", data_dir=str(tmp_path)).images.shape == (3120, 28, 28, 1)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="Unknown Omniglot split"):
        omniglot.load("background_small3")


def test_offline_download_gives_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(OSError, match="offline.*images_evaluation.zip"):
        omniglot.load("evaluation", data_dir=str(tmp_path))


def test_unseen_alphabet_split_takes_one_split_name():
    train, test = omniglot.unseen_alphabet_split(train_splits="small1", test_split="small2", image_size=14)
    assert sorted(set(test.alphabets)) == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    assert train.images.shape == (2720, 14, 14, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train_splits=("small1", "small3")), r"Unknown Omniglot split 'small3' in `train_splits`; choose one of "
                                                  r"\['background', 'evaluation', 'small1', 'small2'\]"),
        (dict(train_splits="smal1"), r"Unknown Omniglot split 'smal1' in `train_splits`; choose one of \["),
        (dict(train_splits=()), r"`train_splits` is empty"),
        (dict(train_splits=3), r"`train_splits` must be a split name or a sequence of them"),
        (dict(test_split=("small2",)), r"Unknown Omniglot split \('small2',\) in `test_split`"),
        (dict(image_size=0), r"`image_size` must be a positive int .*got 0"),
    ],
)
def test_unseen_alphabet_split_bad_arguments_raise_before_loading(kwargs, message, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded data before checking the arguments")

    monkeypatch.setattr(omniglot.sources, "read_class_files", no_loading)
    with pytest.raises(ValueError, match=message):
        omniglot.unseen_alphabet_split(**kwargs)


@pytest.mark.parametrize("image_size", [0, -28, (28, -1), 28.0, "28"])
def test_bad_image_size_raises(image_size, monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(ValueError, match=r"`image_size` must be a positive int"):
        omniglot.load("evaluation", image_size=image_size)
    with pytest.raises(ValueError, match=r"`image_size` must be a positive int"):
        omniglot.decode(b"", image_size=image_size)


def test_unknown_split_of_another_type_raises():
    with pytest.raises(ValueError, match=r"Unknown Omniglot split \['small1'\]"):
        omniglot.load(["small1"])


def test_corrupt_cached_image_is_named(tmp_path, monkeypatch):
    with zipfile.ZipFile(omniglot.archive_path("small1")) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))[:2]
        content = {name: archive.read(name) for name in names}
    broken = tmp_path / "images_evaluation.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr(names[0], content[names[0]])
        archive.writestr(names[1], content[names[1]][:40])
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: str(broken))
    with pytest.raises(ValueError, match=f"Cannot decode '{names[1]}' in '{broken}'"):
        omniglot.load("evaluation")


# -- Vinyals et al.'s split ---------------------------------------------------------------------

# Lake's 30 background alphabets; the other 20 are the evaluation set.
BACKGROUND_ALPHABETS = {
    "Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian", "Armenian", "Asomtavruli_(Georgian)", "Balinese",
    "Bengali", "Blackfoot_(Canadian_Aboriginal_Syllabics)", "Braille", "Burmese_(Myanmar)", "Cyrillic",
    "Early_Aramaic", "Futurama", "Grantha", "Greek", "Gujarati", "Hebrew",
    "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Japanese_(hiragana)", "Japanese_(katakana)", "Korean", "Latin",
    "Malay_(Jawi_-_Arabic)", "Mkhedruli_(Georgian)", "N_Ko", "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Sanskrit",
    "Syriac_(Estrangelo)", "Tagalog", "Tifinagh",
}
VINYALS = {split: omniglot.vinyals_characters(split) for split in omniglot.VINYALS_SPLITS}
ALL_CHARACTERS = VINYALS["train"] + VINYALS["val"] + VINYALS["test"]


def _png(pixels):
    """A grayscale 8-bit PNG of a uint8 array [H, W]."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = pixels.shape
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels.astype(np.uint8))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _identity_png(character, drawing):
    """A 4x4 drawing whose paper encodes the character's index in ALL_CHARACTERS and the drawing number."""
    pixels = np.full((4, 4), 255, np.uint8)
    index = ALL_CHARACTERS.index(character)
    pixels[0, 0], pixels[0, 1], pixels[0, 2] = index % 256, index // 256, drawing
    return _png(pixels)


def _identity(image):
    """(character, drawing) from an image made by `_identity_png`, decoded at its size (ink = 1 - paper)."""
    values = np.rint((1.0 - image[0, :3, 0]) * 255).astype(int)
    return ALL_CHARACTERS[values[0] + 256 * values[1]], values[2]


def _write_archives(folder, characters, drawings=2):
    """Lake's layout: images_background.zip / images_evaluation.zip of ROOT/Alphabet/characterNN/*.png."""
    folder.mkdir(parents=True, exist_ok=True)
    for root in ("images_background", "images_evaluation"):
        with zipfile.ZipFile(folder / f"{root}.zip", "w") as archive:
            for character in characters:
                if (character.split("/")[0] in BACKGROUND_ALPHABETS) == (root == "images_background"):
                    for drawing in range(1, drawings + 1):
                        name = f"{root}/{character}/0000_{drawing:02d}.png"
                        archive.writestr(name, _identity_png(character, drawing))


def _serve_from(monkeypatch, data_dir):
    """`keras.utils.get_file` that finds the archives already in DATA_DIR/omniglot and never downloads."""
    def get_file(fname, origin, cache_subdir, cache_dir, **kwargs):
        path = data_dir / "omniglot" / fname
        assert os.path.join(cache_dir, cache_subdir, fname) == str(path)
        assert path.is_file(), f"would download {origin}"
        return str(path)

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    # The fixture archives have their own SHA-256: a cached file that fails the check is set aside.
    fixture_hashes = {
        split: (fname, files.sha256_of(data_dir / "omniglot" / fname))
        for split, (fname, _) in omniglot.SPLITS.items() if (data_dir / "omniglot" / fname).is_file()
    }
    monkeypatch.setattr(omniglot, "SPLITS", {**omniglot.SPLITS, **fixture_hashes})


@pytest.fixture(scope="module")
def lake_archives(tmp_path_factory):
    """Every one of the 1623 characters, two tiny drawings each, in Lake's two archives."""
    data_dir = tmp_path_factory.mktemp("data")
    _write_archives(data_dir / "omniglot", ALL_CHARACTERS)
    return data_dir


def test_vinyals_lists_are_the_standard_split():
    train, val, trainval, test = (VINYALS[s] for s in ("train", "val", "trainval", "test"))
    assert (len(train), len(val), len(trainval), len(test)) == (1028, 172, 1200, 423)
    assert trainval == train + val
    assert len(set(ALL_CHARACTERS)) == len(ALL_CHARACTERS) == 1623  # disjoint, and all of Omniglot
    assert all(re.fullmatch(r"[A-Za-z_()\-]+/character\d\d", name) for name in ALL_CHARACTERS)
    alphabets = {name.split("/")[0] for name in ALL_CHARACTERS}
    assert len(alphabets) == 50 and BACKGROUND_ALPHABETS <= alphabets
    # Lake's background set has 964 characters, the evaluation set 659.
    assert sum(name.split("/")[0] in BACKGROUND_ALPHABETS for name in ALL_CHARACTERS) == 964
    # val is background-only, test evaluation-only (Gurmukhi is shared: 1-41 train, 42-45 test).
    assert all(name.split("/")[0] in BACKGROUND_ALPHABETS for name in val)
    assert not any(name.split("/")[0] in BACKGROUND_ALPHABETS for name in test)
    assert {name.split("/")[0] for name in train} & {name.split("/")[0] for name in test} == {"Gurmukhi"}


def test_vinyals_lists_name_the_bundled_characters():
    # The bundled background subsets hold real archive names: all of them are training characters.
    _, small1 = omniglot._load_named("small1", 8, None)
    _, small2 = omniglot._load_named("small2", 8, None)
    assert set(small1) | set(small2) <= set(VINYALS["trainval"])


@pytest.mark.parametrize("split", omniglot.VINYALS_SPLITS)
def test_load_vinyals_split(split, lake_archives, monkeypatch):
    _serve_from(monkeypatch, lake_archives)
    images, labels, alphabets = omniglot.load_vinyals(split, image_size=None, data_dir=str(lake_archives))
    characters = VINYALS[split]
    assert images.shape == (2 * len(characters), 4, 4, 1) and images.dtype == np.float32
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [2] * len(characters)
    assert alphabets.tolist() == [name.split("/")[0] for name in characters]
    # Every image is a drawing of the character its label names, and each drawing is there once.
    drawn = [_identity(image) for image in images]
    assert [character for character, _ in drawn] == [characters[label] for label in labels]
    assert len(set(drawn)) == len(drawn)


def test_load_vinyals_resizes(lake_archives, monkeypatch):
    _serve_from(monkeypatch, lake_archives)
    test = omniglot.load_vinyals("test", image_size=(6, 5), data_dir=str(lake_archives))
    assert test.images.shape == (2 * 423, 6, 5, 1)


def test_vinyals_rotations_make_four_classes_counter_clockwise():
    # rot090 in Snell et al.'s lists is PIL's Image.rotate(90): counter-clockwise, like np.rot90.
    image = np.zeros((3, 3, 1), np.float32)
    image[0, 2] = 1.0  # top right
    x, y = np.stack([image] * 2), np.zeros(2, np.int64)
    sampler = EpisodeSampler(x, y, ways=1, shots=1, queries=1, rotations=(90,), seed=0)
    inputs, _ = sampler.sample_task([0, 0])
    np.testing.assert_array_equal(inputs["support_x"][0], np.rot90(image))
    assert np.rot90(image)[0, 0, 0] == 1.0  # top right went to top left
    sampler = EpisodeSampler(x, y, ways=4, shots=1, queries=1, rotations=omniglot.VINYALS_ROTATIONS)
    assert sampler.num_classes == 4


def test_load_vinyals_archives_missing_characters_raise(tmp_path, monkeypatch):
    # A few real characters of each split, as if the archives were incomplete.
    present = VINYALS["train"][:3] + VINYALS["val"][:2] + VINYALS["test"][:2]
    _write_archives(tmp_path / "omniglot", present)
    _serve_from(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=r"170 of the 172 characters of the Omniglot Vinyals 'val' split are "
                                         r"missing .*e\.g\. \['Hebrew/character03'"):
        omniglot.load_vinyals("val", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"421 of the 423 characters .*'test' split are missing"):
        omniglot.load_vinyals("test", data_dir=str(tmp_path))


@pytest.mark.parametrize("split", ["background", "training", None, ("train",)])
def test_load_vinyals_unknown_split_raises_before_loading(split, monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(ValueError, match=r"Unknown Omniglot Vinyals split .*; choose one of "
                                         r"\['train', 'val', 'trainval', 'test'\]"):
        omniglot.load_vinyals(split)


def test_load_vinyals_bad_image_size_raises_before_loading(monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(ValueError, match=r"`image_size` must be a positive int"):
        omniglot.load_vinyals("test", image_size=0)


def test_load_vinyals_offline_gives_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(OSError, match="offline.*images_background.zip"):
        omniglot.load_vinyals("train", data_dir=str(tmp_path))
