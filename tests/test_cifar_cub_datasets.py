"""CIFAR-100, CIFAR-FS, FC100 and CUB-200-2011 loaders, on tiny archives in the real formats (no network)."""

import errno
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from keras_meta.datasets import cifar100, cifar_fs, cub, fc100, files, image_sets

# The real CIFAR-100 hierarchy: superclass -> its 5 classes (names as in the archive's meta).
HIERARCHY = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
FINE = sorted(name for members in HIERARCHY.values() for name in members)  # label order of the real meta
COARSE = sorted(HIERARCHY)
COARSE_OF = {name: group for group, members in HIERARCHY.items() for name in members}
PER_PART = {"train": 2, "test": 1}  # fixture images per class in each pickle

# SHA-256 of the 200 CUB class folder names joined by newlines, from a public copy of classes.txt.
CUB_NAMES_SHA256 = "839cf39f663841e7115295328a3bce89f6b483aaa372205d0f0f324dd13d00cd"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_cifar_archive(path, drop=(), with_meta=True):
    """A `cifar-100-python.tar.gz` in the official layout; returns `{class: [HWC images, train then test]}`."""
    rng = np.random.default_rng(0)
    expected = {name: [] for name in FINE if name not in drop}
    with tarfile.open(path, "w:gz") as tar:
        for part, count in PER_PART.items():
            labels = [label for label, name in enumerate(FINE) if name not in drop for _ in range(count)]
            images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
            if part == "train":  # a known image: each pixel's value depends on its row, column and channel
                images[0] = (np.arange(32)[:, None, None] * 7 + np.arange(32)[None, :, None] * 3
                             + np.array([0, 100, 200])) % 256
            for label, image in zip(labels, images, strict=True):
                expected[FINE[label]].append(image)
            content = {
                b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),  # CHW rows, as CIFAR stores them
                b"fine_labels": labels,
                b"coarse_labels": [COARSE.index(COARSE_OF[FINE[label]]) for label in labels],
                b"filenames": [f"image_{i}.png".encode() for i in range(len(labels))],
                b"batch_label": f"{part} batch".encode(),
            }
            add_bytes(tar, f"cifar-100-python/{part}", pickle.dumps(content, protocol=2))
        if with_meta:
            meta = {b"fine_label_names": [n.encode() for n in FINE],
                    b"coarse_label_names": [n.encode() for n in COARSE]}
            add_bytes(tar, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))
    return {name: np.stack(images) for name, images in expected.items()}


@pytest.fixture(scope="module")
def cifar_archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar_fixture") / cifar100.FNAME
    return path, write_cifar_archive(path)


@pytest.fixture(scope="module")
def cifar_cache(tmp_path_factory, cifar_archive):
    """A data_dir that already holds the fixture archive (extracted on first use, then reused)."""
    data_dir = tmp_path_factory.mktemp("cifar_cache")
    (data_dir / "cifar100").mkdir()
    (data_dir / "cifar100" / cifar100.FNAME).write_bytes(cifar_archive[0].read_bytes())
    return str(data_dir)


@pytest.fixture
def cifar(monkeypatch, cifar_archive, cifar_cache):
    """`(data_dir, expected images per class)`, the fixture archive accepted as the real one."""
    monkeypatch.setattr(cifar100, "SHA256", sha256(cifar_archive[0]))
    monkeypatch.setattr(cifar100, "ORIGIN", "http://127.0.0.1:9/not-used.tar.gz")
    return cifar_cache, cifar_archive[1]


def no_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("downloaded before checking the arguments")

    monkeypatch.setattr(files, "download", fail)


# --- The shipped split lists ---------------------------------------------------------------------------------------


def test_cifar_fs_lists_are_64_16_20_disjoint_cifar100_classes():
    splits = {split: image_sets.split_classes("cifar_fs", split) for split in ("train", "val", "test")}
    assert {split: len(names) for split, names in splits.items()} == {"train": 64, "val": 16, "test": 20}
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == FINE  # disjoint, and all real names
    # Spot checks against the R2D2 lists (bertinetto/r2d2, torchmeta assets/cifar100/cifar-fs).
    assert {"baby", "whale", "worm", "wardrobe"} <= set(splits["test"])
    assert {"otter", "sea", "tractor", "cattle"} <= set(splits["val"])
    assert cifar_fs.classes("test") == splits["test"]


def test_fc100_lists_are_tadam_superclasses():
    splits = {split: fc100.superclasses(split) for split in ("train", "val", "test")}
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == COARSE
    # TADAM's split by CIFAR-100 coarse label index (Oreshkin et al. 2018, supplementary material).
    tadam = {"train": {1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19}, "val": {8, 11, 13, 16}, "test": {0, 7, 12, 14}}
    assert {split: {COARSE.index(name) for name in names} for split, names in splits.items()} == tadam


def test_cub_lists_follow_chen_et_al_rule():
    splits = {split: cub.classes(split) for split in ("train", "val", "test")}
    assert {split: len(names) for split, names in splits.items()} == {"train": 100, "val": 50, "test": 50}
    names = sorted(splits["train"] + splits["val"] + splits["test"])
    assert len(set(names)) == 200
    assert [name[:4] for name in names] == [f"{i:03d}." for i in range(1, 201)]
    assert hashlib.sha256("\n".join(names).encode()).hexdigest() == CUB_NAMES_SHA256
    for split, members in splits.items():
        assert members == [name for i, name in enumerate(names) if cub.split_of(i) == split]
    assert splits["train"][0] == "001.Black_footed_Albatross"
    assert splits["val"][0] == "002.Laysan_Albatross"
    assert splits["test"][-1] == "200.Common_Yellowthroat"


# --- CIFAR-100 ------------------------------------------------------------------------------------------------------


def test_cifar100_downloads_through_the_real_path_and_round_trips_pixels(tmp_path, monkeypatch, cifar_archive):
    path, expected = cifar_archive
    monkeypatch.setattr(cifar100, "ORIGIN", path.as_uri())  # file://... through keras.utils.get_file
    monkeypatch.setattr(cifar100, "SHA256", sha256(path))
    data = cifar100.load_all(data_dir=str(tmp_path))
    assert os.path.isfile(tmp_path / "cifar100" / cifar100.FNAME)
    total = len(FINE) * sum(PER_PART.values())
    assert data.images.shape == (total, 32, 32, 3) and data.images.dtype == np.uint8
    assert len(data.fine_names) == len(data.coarse_names) == total
    assert sorted(set(data.fine_names.tolist())) == FINE
    assert all(COARSE_OF[fine] == coarse for fine, coarse in zip(data.fine_names, data.coarse_names, strict=True))
    # The first train image (class "apple") has known pixels: same values, rows, columns and channels.
    known = expected["apple"][0]
    assert known[1, 0, 0] == 7 and known[0, 1, 0] == 3 and known[0, 0, 1] == 100
    np.testing.assert_array_equal(data.images[0], known)
    assert data.fine_names[0] == "apple" and data.coarse_names[0] == "fruit_and_vegetables"
    for name in ("apple", "whale", "tractor"):
        np.testing.assert_array_equal(data.images[data.fine_names == name], expected[name])


def test_checksum_failure_removes_the_file(tmp_path, monkeypatch, cifar_archive):
    monkeypatch.setattr(cifar100, "ORIGIN", cifar_archive[0].as_uri())
    monkeypatch.setattr(cifar100, "SHA256", "0" * 64)
    with pytest.raises(ValueError, match="expected SHA-256 0{64}.*removed"):
        cifar100.load_all(data_dir=str(tmp_path))
    assert not os.path.exists(tmp_path / "cifar100" / cifar100.FNAME)


@pytest.mark.parametrize("loader, module, call", [
    ("cifar_fs", cifar100, lambda data_dir: cifar_fs.load("train", data_dir=data_dir)),
    ("fc100", cifar100, lambda data_dir: fc100.load("val", data_dir=data_dir)),
    ("cub", cub, lambda data_dir: cub.load("test", data_dir=data_dir)),
])
def test_offline_error_names_the_folder(tmp_path, monkeypatch, loader, module, call):
    monkeypatch.setattr(module, "ORIGIN", "http://127.0.0.1:9/x.tar.gz")
    with pytest.raises(OSError, match="offline") as error:
        call(str(tmp_path))
    folder = str(tmp_path / module.DATASET)
    assert f"copy {module.FNAME} into {folder}" in str(error.value)
    assert not os.path.exists(os.path.join(folder, module.FNAME))


# --- CIFAR-FS and FC100 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split, count", [("train", 64), ("val", 16), ("test", 20)])
def test_cifar_fs_load(cifar, split, count):
    data_dir, expected = cifar
    per_class = sum(PER_PART.values())
    images, labels, class_names = cifar_fs.load(split, dtype="uint8", data_dir=data_dir)
    assert class_names == image_sets.split_classes("cifar_fs", split) and len(class_names) == count
    assert images.shape == (count * per_class, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [per_class] * count
    for label, name in enumerate(class_names):
        np.testing.assert_array_equal(images[labels == label], expected[name])
    as_float = cifar_fs.load(split, data_dir=data_dir)
    assert as_float.images.dtype == np.float32 and 0.0 <= as_float.images.min() and as_float.images.max() <= 1.0
    np.testing.assert_allclose(as_float.images, images / np.float32(255), atol=1e-7)
    np.testing.assert_array_equal(as_float.labels, labels)


def test_fc100_load(cifar):
    data_dir, expected = cifar
    loaded = {split: fc100.load(split, dtype="uint8", data_dir=data_dir) for split in ("train", "val", "test")}
    assert {split: len(data.class_names) for split, data in loaded.items()} == {"train": 60, "val": 20, "test": 20}
    seen = []
    for split, (images, labels, class_names) in loaded.items():
        groups = fc100.superclasses(split)
        # Labels run superclass by superclass: label // 5 indexes the split's superclass list.
        assert [groups[label // 5] for label in range(len(class_names))] == [COARSE_OF[n] for n in class_names]
        assert np.bincount(labels).tolist() == [sum(PER_PART.values())] * len(class_names)
        for label, name in enumerate(class_names):
            np.testing.assert_array_equal(images[labels == label], expected[name])
        seen += class_names
    assert sorted(seen) == FINE
    images = fc100.load("test", data_dir=data_dir).images
    assert images.dtype == np.float32 and images.max() <= 1.0 and images.max() > 0.9


def test_missing_classes_are_reported(tmp_path, monkeypatch):
    archive = tmp_path / "cifar100" / cifar100.FNAME
    archive.parent.mkdir()
    write_cifar_archive(archive, drop=("whale",))
    monkeypatch.setattr(cifar100, "SHA256", sha256(archive))
    with pytest.raises(ValueError, match=r"1 class\(es\) of the split have no image.*'whale'"):
        cifar_fs.load("test", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"superclass 'aquatic_mammals' has 4 class\(es\)"):
        fc100.load("test", data_dir=str(tmp_path))
    assert len(cifar_fs.load("val", data_dir=str(tmp_path)).class_names) == 16  # the other splits still load


def test_archive_without_meta_is_reported(tmp_path, monkeypatch):
    archive = tmp_path / "cifar100" / cifar100.FNAME
    archive.parent.mkdir()
    write_cifar_archive(archive, with_meta=False)
    monkeypatch.setattr(cifar100, "SHA256", sha256(archive))
    with pytest.raises(FileNotFoundError, match=r"meta not found in .*incomplete"):
        cifar_fs.load("train", data_dir=str(tmp_path))


def test_truncated_archive_is_reported(tmp_path, monkeypatch, cifar_archive):
    archive = tmp_path / "cifar100" / cifar100.FNAME
    archive.parent.mkdir()
    archive.write_bytes(cifar_archive[0].read_bytes()[:5000])
    monkeypatch.setattr(cifar100, "SHA256", sha256(archive))
    with pytest.raises(ValueError, match="corrupted or incomplete"):
        fc100.load("train", data_dir=str(tmp_path))
    assert not any(name.endswith("_extracted") for name in os.listdir(archive.parent))


@pytest.mark.parametrize("module", [cifar100, cub])
def test_an_archive_that_cannot_be_written_out_is_not_called_corrupted(cifar, cub_dir, monkeypatch, module):
    def disk_full(archive):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "extract", disk_full)
    data_dir = cifar[0] if module is cifar100 else cub_dir
    with pytest.raises(OSError, match="No space left on device") as error:
        module.extracted_folder(data_dir)
    assert "Delete" not in str(error.value) and "corrupted" not in str(error.value)


def test_read_only_data_dir_with_the_archive_placed_by_hand(tmp_path, monkeypatch, cifar_archive):
    archive = tmp_path / "cifar100" / cifar100.FNAME
    archive.parent.mkdir()
    archive.write_bytes(cifar_archive[0].read_bytes())
    monkeypatch.setattr(cifar100, "SHA256", sha256(archive))
    monkeypatch.setattr(cifar100, "ORIGIN", "http://127.0.0.1:9/not-used.tar.gz")
    real, root = os.access, str(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: (  # a read-only mount (tests run as root)
        False if mode & os.W_OK and os.path.abspath(os.fspath(path)).startswith(root) else real(path, mode, *a, **k)))
    extracted = str(tmp_path / "cifar100" / "cifar-100-python_extracted")
    with pytest.raises(OSError, match=f"not writable: cannot extract {cifar100.FNAME} into {extracted}.*writable"):
        cifar_fs.load("test", data_dir=str(tmp_path))
    with tarfile.open(archive) as tarred:  # what the message says to do: extract it by hand
        tarred.extractall(extracted, filter="data")
    assert len(cifar_fs.load("test", data_dir=str(tmp_path)).class_names) == 20


@pytest.mark.parametrize("call, message", [
    (lambda: cifar_fs.load("validation"), r"Unknown CIFAR-FS split 'validation'; choose one of \['train', 'val'"),
    (lambda: fc100.load("novel"), r"Unknown FC100 split 'novel'"),
    (lambda: cub.load("base"), r"Unknown CUB split 'base'"),
    (lambda: cifar_fs.load("train", dtype="float16"), r"`dtype` must be 'float32'"),
    (lambda: fc100.load("train", dtype=np.uint8), r"`dtype` must be 'float32'"),
    (lambda: cub.load("train", dtype="int"), r"`dtype` must be 'float32'"),
    (lambda: cub.load("train", image_size=0), r"`image_size` must be a positive int"),
    (lambda: cub.load("train", image_size=84.0), r"`image_size` must be a positive int"),
])
def test_bad_arguments_raise_before_downloading(monkeypatch, call, message):
    no_download(monkeypatch)
    with pytest.raises(ValueError, match=message):
        call()


# --- CUB-200-2011 ---------------------------------------------------------------------------------------------------


def cub_color(index):
    return np.array([index, 255 - index, (7 * index) % 256], np.uint8)


def write_cub_archive(path, skip_class=None, missing_file=False, corrupt_file=False):
    """A `CUB_200_2011.tgz` in the official layout: 2 JPEGs per class, a flat colour each, one of them grey."""
    names = sorted(cub.classes("train") + cub.classes("val") + cub.classes("test"))
    images, labels = [], []
    with tarfile.open(path, "w:gz") as tar:
        for index, name in enumerate(names):
            if name == skip_class:
                continue
            wide = np.broadcast_to(cub_color(index), (6, 10, 3))
            grey = np.full((9, 5, 1), index, np.uint8)
            for number, pixels in enumerate((wide, grey)):
                relative = f"{name}/{name[4:]}_{number:04d}_{index}.jpg"
                images.append(relative)
                labels.append(index + 1)
                if missing_file and index == 3 and number == 1:
                    continue  # listed in images.txt, absent from images/
                jpeg = tf.io.encode_jpeg(np.ascontiguousarray(pixels), quality=100).numpy()
                if corrupt_file and index == 3 and number == 0:
                    jpeg = jpeg[:20]  # a truncated download of one photo
                add_bytes(tar, f"CUB_200_2011/images/{relative}", jpeg)
        add_bytes(tar, "CUB_200_2011/classes.txt",
                  "".join(f"{i} {name}\n" for i, name in enumerate(names, 1)).encode())
        add_bytes(tar, "CUB_200_2011/images.txt",
                  "".join(f"{i} {image}\n" for i, image in enumerate(images, 1)).encode())
        add_bytes(tar, "CUB_200_2011/image_class_labels.txt",
                  "".join(f"{i} {label}\n" for i, label in enumerate(labels, 1)).encode())
    return names


@pytest.fixture(scope="module")
def cub_fixture(tmp_path_factory):
    path = tmp_path_factory.mktemp("cub_fixture") / cub.FNAME
    return path, write_cub_archive(path)


@pytest.fixture(scope="module")
def cub_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cub_cache"))


@pytest.fixture
def cub_dir(monkeypatch, cub_fixture, cub_cache):
    """A data_dir the fixture archive is "downloaded" into from a file:// origin (once; then it is cached)."""
    path, _ = cub_fixture
    monkeypatch.setattr(cub, "ORIGIN", path.as_uri())
    monkeypatch.setattr(cub, "SHA256", sha256(path))
    return cub_cache


@pytest.mark.parametrize("split, count", [("train", 100), ("val", 50), ("test", 50)])
def test_cub_load(cub_dir, cub_fixture, split, count):
    names = cub_fixture[1]
    images, labels, class_names = cub.load(split, image_size=16, dtype="uint8", data_dir=cub_dir)
    assert os.path.isfile(os.path.join(cub_dir, "cub", cub.FNAME))
    assert class_names == cub.classes(split) and len(class_names) == count
    assert images.shape == (2 * count, 16, 16, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [2] * count
    for label, name in enumerate(class_names):
        index = names.index(name)
        assert cub.split_of(index) == split
        colour, grey = images[labels == label]
        assert np.abs(colour.astype(int) - cub_color(index)).max() <= 3
        assert np.abs(grey.astype(int) - index).max() <= 3  # a greyscale JPEG comes back as 3 equal channels
    as_float = cub.load(split, image_size=(12, 20), data_dir=cub_dir)
    assert as_float.images.shape == (2 * count, 12, 20, 3) and as_float.images.dtype == np.float32
    assert 0.0 <= as_float.images.min() and as_float.images.max() <= 1.0


def test_cub_missing_class_is_reported(tmp_path, monkeypatch):
    archive = tmp_path / "cub" / cub.FNAME
    archive.parent.mkdir()
    write_cub_archive(archive, skip_class="004.Groove_billed_Ani")
    monkeypatch.setattr(cub, "SHA256", sha256(archive))
    with pytest.raises(ValueError, match=r"1 class\(es\) of the split have no image.*004.Groove_billed_Ani"):
        cub.load("test", image_size=8, data_dir=str(tmp_path))
    assert len(cub.load("val", image_size=8, data_dir=str(tmp_path)).class_names) == 50


def test_cub_missing_image_file_is_named(tmp_path, monkeypatch):
    archive = tmp_path / "cub" / cub.FNAME
    archive.parent.mkdir()
    write_cub_archive(archive, missing_file=True)
    monkeypatch.setattr(cub, "SHA256", sha256(archive))
    with pytest.raises(FileNotFoundError, match=r"004.Groove_billed_Ani/Groove_billed_Ani_0001_3.jpg .*incomplete"):
        cub.load("test", image_size=8, data_dir=str(tmp_path))


def test_cub_checksum_failure_removes_the_file(tmp_path, monkeypatch, cub_fixture):
    monkeypatch.setattr(cub, "ORIGIN", cub_fixture[0].as_uri())
    monkeypatch.setattr(cub, "SHA256", "f" * 64)
    with pytest.raises(ValueError, match="does not have the expected SHA-256"):
        cub.load("val", data_dir=str(tmp_path))
    assert not os.path.exists(tmp_path / "cub" / cub.FNAME)


def test_cub_chunks_give_the_same_images(cub_dir, monkeypatch):
    whole = cub.load("val", image_size=16, dtype="uint8", data_dir=cub_dir)
    monkeypatch.setattr(cub, "CHUNK", 7)  # 100 images in 15 chunks, with a progress bar
    chunked = cub.load("val", image_size=16, dtype="uint8", data_dir=cub_dir)
    np.testing.assert_array_equal(chunked.images, whole.images)
    np.testing.assert_array_equal(chunked.labels, whole.labels)


def test_cub_corrupt_image_is_named(tmp_path, monkeypatch):
    archive = tmp_path / "cub" / cub.FNAME
    archive.parent.mkdir()
    write_cub_archive(archive, corrupt_file=True)
    monkeypatch.setattr(cub, "SHA256", sha256(archive))
    with pytest.raises(ValueError, match=r"Cannot decode '004.Groove_billed_Ani/Groove_billed_Ani_0000_3.jpg'"):
        cub.load("test", image_size=8, data_dir=str(tmp_path))
