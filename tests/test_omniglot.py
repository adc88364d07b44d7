import zipfile

import keras
import numpy as np
import pytest

from keras_meta.datasets import omniglot


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
