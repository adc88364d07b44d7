"""mini-ImageNet and tiered-ImageNet loaders, on tiny files written in each real on-disk format."""

import csv
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

from keras_meta.data import EpisodeSampler
from keras_meta.datasets import image_sets, mini_imagenet, tiered_imagenet

PER_CLASS = 3


def _colour(i):
    """A distinct, JPEG-friendly colour for image `i`."""
    return np.array([(40 + 37 * i) % 200 + 30, (90 + 53 * i) % 200 + 30, (20 + 71 * i) % 200 + 30], np.uint8)


def _two_tone(i, height, width):
    """Image `i`: its colour on the right half, black on the left half (so resizing keeps a visible pattern)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, width // 2:] = _colour(i)
    return image


def _pattern(i, size=84):
    """A pseudo-random uint8 image unique to `i`."""
    return np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)


# -- split lists ---------------------------------------------------------------


def test_shipped_mini_imagenet_split():
    splits = [mini_imagenet.classes(split) for split in mini_imagenet.SPLITS]
    assert [len(names) for names in splits] == [64, 16, 20]
    every = [name for names in splits for name in names]
    assert len(set(every)) == 100  # disjoint splits, no repeats
    assert all(len(name) == 9 and name[0] == "n" and name[1:].isdigit() for name in every)
    # Ravi & Larochelle's CSV order: first and last class of each split.
    assert (splits[0][0], splits[0][-1]) == ("n01532829", "n13133613")
    assert (splits[1][0], splits[2][0]) == ("n01855672", "n01930112")
    assert splits[1] == image_sets.split_classes("mini_imagenet", "val")


def test_shipped_tiered_imagenet_split():
    splits = [tiered_imagenet.classes(split) for split in tiered_imagenet.SPLITS]
    assert [len(names) for names in splits] == [351, 97, 160]
    assert len({name for names in splits for name in names}) == 608
    categories = [tiered_imagenet.super_categories(split) for split in tiered_imagenet.SPLITS]
    assert [len(c) for c in categories] == [351, 97, 160]
    assert [len(set(c)) for c in categories] == [20, 6, 8]
    assert not set(categories[0]) & set(categories[1]) and not set(categories[1]) & set(categories[2])
    assert not set(categories[0]) & set(categories[2])
    assert splits[0][0] == "n01530575" and tiered_imagenet.describe("n01530575").startswith("brambling")
    assert tiered_imagenet.describe(categories[1][0]) == "sporting dog, gun dog"
    with pytest.raises(ValueError, match="neither a tiered-ImageNet class"):
        tiered_imagenet.describe("n00000000")


# -- mini-ImageNet -------------------------------------------------------------


def _mini_csv_layout(root, split="val", names=None, height=10, width=12):
    """Ravi & Larochelle's layout: `<split>.csv` + `images/` of JPEGs, PER_CLASS images per class."""
    folder = os.path.join(root, "mini_imagenet")
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    names = names or mini_imagenet.classes(split)
    rows, i = [], 0
    for name in names:
        for k in range(PER_CLASS):
            filename = f"{name}{k + 1:08d}.jpg"
            data = tf.io.encode_jpeg(_two_tone(i, height, width), quality=100).numpy()
            with open(os.path.join(folder, "images", filename), "wb") as f:
                f.write(data)
            rows.append((filename, name))
            i += 1
    with open(os.path.join(folder, f"{split}.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "label"])
        writer.writerows(rows)
    return folder


def _mini_pickle_images(names):
    """`(images, class of each image)`: PER_CLASS pattern images per class, classes interleaved."""
    image_classes = [names[j % len(names)] for j in range(PER_CLASS * len(names))]
    images = np.stack([_pattern(j) for j in range(len(image_classes))])
    return images, image_classes


def _mini_cache_pickle(root, split="val", names=None):
    """The learn2learn / Ren et al. layout: `mini-imagenet-cache-<split>.pkl`."""
    folder = os.path.join(root, "mini_imagenet")
    os.makedirs(folder, exist_ok=True)
    images, image_classes = _mini_pickle_images(names or mini_imagenet.classes(split))
    class_dict = {}
    for j, name in enumerate(image_classes):
        class_dict.setdefault(name, []).append(j)
    class_dict = dict(reversed(list(class_dict.items())))  # the file's class order is not the split's
    with open(os.path.join(folder, f"mini-imagenet-cache-{split}.pkl"), "wb") as f:
        pickle.dump({"image_data": images, "class_dict": class_dict}, f, protocol=2)
    return images, image_classes


def test_mini_imagenet_csv_layout(tmp_path):
    _mini_csv_layout(tmp_path)
    names = mini_imagenet.classes("val")
    images, labels, class_names = mini_imagenet.load("val", data_dir=str(tmp_path))
    assert class_names == names
    assert images.shape == (16 * PER_CLASS, 84, 84, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.dtype == np.int64 and labels.tolist() == np.repeat(np.arange(16), PER_CLASS).tolist()
    # The 10x12 JPEGs were resized to 84x84: black left, the image's colour right.
    for i in (0, 7, 47):
        assert images[i, :, :30].max() < 0.08
        np.testing.assert_allclose(images[i, 40, 60:], np.tile(_colour(i) / 255, (24, 1)), atol=0.05)
    small = mini_imagenet.load("val", image_size=(20, 16), dtype="uint8", data_dir=str(tmp_path))
    assert small.images.shape == (48, 20, 16, 3) and small.images.dtype == np.uint8
    np.testing.assert_array_equal(small.labels, labels)


def test_mini_imagenet_cache_pickle_layout(tmp_path):
    stored, image_classes = _mini_cache_pickle(tmp_path)
    names = mini_imagenet.classes("val")
    raw = mini_imagenet.load("val", dtype="uint8", data_dir=str(tmp_path))
    assert raw.class_names == names and raw.images.dtype == np.uint8
    np.testing.assert_array_equal(raw.images, stored)  # pixels round-trip exactly at 84x84
    assert [names[label] for label in raw.labels] == image_classes
    assert np.bincount(raw.labels).tolist() == [PER_CLASS] * 16
    scaled = mini_imagenet.load("val", data_dir=str(tmp_path))
    assert scaled.images.dtype == np.float32
    np.testing.assert_allclose(scaled.images, stored / np.float32(255), atol=1e-7)
    resized = mini_imagenet.load("val", image_size=42, dtype="uint8", data_dir=str(tmp_path))
    assert resized.images.shape == (48, 42, 42, 3)
    np.testing.assert_allclose(resized.images.mean(axis=(1, 2)), stored.mean(axis=(1, 2)), atol=2)


def test_mini_imagenet_metaoptnet_layout(tmp_path):
    folder = tmp_path / "mini_imagenet"
    folder.mkdir()
    names = mini_imagenet.classes("val")
    images, image_classes = _mini_pickle_images(names)
    catname2label = {name: 64 + k for k, name in enumerate(names)}  # numbered after the 64 training classes
    data = {"data": images, "labels": [catname2label[n] for n in image_classes], "catname2label": catname2label}
    with open(folder / "miniImageNet_category_split_val.pickle", "wb") as f:
        pickle.dump(data, f, protocol=2)
    loaded = mini_imagenet.load("val", dtype="uint8", data_dir=str(tmp_path))
    np.testing.assert_array_equal(loaded.images, images)
    assert [loaded.class_names[label] for label in loaded.labels] == image_classes
    assert loaded.class_names == names


def test_mini_imagenet_missing_files_say_what_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        mini_imagenet.load("test", data_dir=str(tmp_path))
    message = str(error.value)
    assert os.path.join(str(tmp_path), "mini_imagenet") in message
    assert "test.csv" in message and "images" in message
    assert "mini-imagenet-cache" in message and "meta-learning-lstm" in message


def test_mini_imagenet_missing_images(tmp_path):
    folder = _mini_csv_layout(tmp_path)
    os.remove(os.path.join(folder, "images", os.listdir(os.path.join(folder, "images"))[0]))
    # A ValueError, not FileNotFoundError (which benchmarks/standard.py reads as "dataset absent, skip").
    with pytest.raises(ValueError, match="1 of the 48 images .*the files are incomplete"):
        mini_imagenet.load("val", data_dir=str(tmp_path))


def test_mini_imagenet_images_in_no_class_are_reported(tmp_path):
    _mini_cache_pickle(tmp_path)
    path = tmp_path / "mini_imagenet" / "mini-imagenet-cache-val.pkl"
    with open(path, "rb") as f:
        data = pickle.load(f)
    data["class_dict"] = {name: indices[1:] for name, indices in data["class_dict"].items()}  # 16 left out
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(ValueError, match="16 of the 48 images are in no class of class_dict"):
        mini_imagenet.load("val", data_dir=str(tmp_path))


def test_mini_imagenet_chunked_resizing_gives_the_same_images(tmp_path, monkeypatch):
    stored, _ = _mini_cache_pickle(tmp_path)
    whole = mini_imagenet.load("val", image_size=(30, 40), dtype="uint8", data_dir=str(tmp_path))
    monkeypatch.setattr(mini_imagenet, "CHUNK", 5)
    chunked = mini_imagenet.load("val", image_size=(30, 40), dtype="uint8", data_dir=str(tmp_path))
    np.testing.assert_array_equal(chunked.images, whole.images)
    # Stored pixels resize exactly as the same pixels decoded from a file do.
    decoded = image_sets.image_decoder((30, 40), dtype="uint8")(tf.io.encode_png(stored[7]))
    np.testing.assert_array_equal(whole.images[7], decoded.numpy())
    np.testing.assert_array_equal(image_sets.resized_uint8(stored[7], (30, 40)).numpy(), decoded.numpy())


def test_converted_makes_one_float_copy_and_labelled_none_when_all_are_kept():
    import tracemalloc

    images = np.full((64, 32, 32, 3), 255, np.uint8)
    tracemalloc.start()
    try:
        scaled = image_sets.converted(images, "float32")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert scaled.dtype == np.float32 and scaled.max() == 1.0
    assert peak < 1.5 * scaled.nbytes  # not two float32 copies at once
    kept = image_sets.labelled(images, ["a", "b"] * 32, ["b", "a"], "uint8")
    assert kept.images is images
    assert kept.labels.tolist() == [1, 0] * 32


def test_mini_imagenet_rejects_files_of_another_split(tmp_path):
    names = mini_imagenet.classes("val")
    _mini_csv_layout(tmp_path, names=names[:-1] + [mini_imagenet.classes("train")[0]])
    with pytest.raises(ValueError, match="not the standard split") as error:
        mini_imagenet.load("val", data_dir=str(tmp_path))
    assert "n01532829" in str(error.value) and names[-1] in str(error.value)

    _mini_cache_pickle(tmp_path / "other", names=names[:-1])  # one class short
    with pytest.raises(ValueError, match="1 class\\(es\\) of the split missing"):
        mini_imagenet.load("val", data_dir=str(tmp_path / "other"))


def test_mini_imagenet_rejects_bad_files(tmp_path):
    folder = tmp_path / "mini_imagenet"
    folder.mkdir()
    (folder / "val.csv").write_text("image,class\nx.jpg,n01855672\n")
    (folder / "images").mkdir()
    with pytest.raises(ValueError, match="header `filename,label`"):
        mini_imagenet.load("val", data_dir=str(tmp_path))
    (folder / "val.csv").unlink()
    (folder / "mini-imagenet-cache-val.pkl").write_bytes(pickle.dumps({"images": 1}))
    with pytest.raises(ValueError, match="not a mini-imagenet-cache pickle"):
        mini_imagenet.load("val", data_dir=str(tmp_path))


@pytest.mark.parametrize("loader", [mini_imagenet.load, tiered_imagenet.load])
def test_bad_arguments(loader, tmp_path):
    with pytest.raises(ValueError, match="Unknown .* split 'validation'"):
        loader("validation", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`dtype`"):
        loader("val", dtype="float64", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`image_size`"):
        loader("val", image_size=0, data_dir=str(tmp_path))


# -- tiered-ImageNet -----------------------------------------------------------


def _tiered_files(root, split="val", names=None, by="description", as_arrays=True):
    """Ren et al.'s layout: `<split>_images_png.pkl` (cv2.imencode arrays) + `<split>_labels.pkl`.

    The file numbers its classes in its own order (as Ren et al.'s script,
    which listed class folders) and names them by description or WordNet id.
    Returns each image's pixels and class.
    """
    folder = os.path.join(root, "tiered_imagenet")
    os.makedirs(folder, exist_ok=True)
    names = names or tiered_imagenet.classes(split)
    file_order = list(reversed(names))
    categories = sorted(set(tiered_imagenet.super_categories(split)))
    category_of = dict(zip(tiered_imagenet.classes(split), tiered_imagenet.super_categories(split), strict=True))
    pixels, image_classes, encoded, specific, general = [], [], [], [], []
    for j in range(PER_CLASS * len(names)):
        number = (j * 7) % len(names)  # classes interleaved
        name = file_order[number]
        image = _pattern(1000 + j)
        png = tf.io.encode_png(image).numpy()
        encoded.append(np.frombuffer(png, np.uint8).reshape(-1, 1) if as_arrays else png)
        pixels.append(image)
        image_classes.append(name)
        specific.append(number)
        general.append(categories.index(category_of.get(name, categories[0])))
    if by == "description":
        specific_str = [tiered_imagenet.describe(name) if name in category_of else name for name in file_order]
    else:
        specific_str = [name.encode() for name in file_order]
    labels = {
        "label_specific": np.array(specific, np.int32),
        "label_general": np.array(general, np.int32),
        "label_specific_str": specific_str,
        "label_general_str": {k: tiered_imagenet.describe(c) for k, c in enumerate(categories)},
    }
    with open(os.path.join(folder, f"{split}_images_png.pkl"), "wb") as f:
        pickle.dump(encoded, f, protocol=2)
    with open(os.path.join(folder, f"{split}_labels.pkl"), "wb") as f:
        pickle.dump(labels, f, protocol=2)
    return np.stack(pixels), image_classes


@pytest.fixture(scope="module")
def tiered_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiered")
    pixels, image_classes = _tiered_files(root)
    return str(root), pixels, image_classes


def test_tiered_imagenet_encoded(tiered_val):
    root, pixels, image_classes = tiered_val
    names = tiered_imagenet.classes("val")
    images, labels, class_names = tiered_imagenet.load("val", data_dir=root)
    assert class_names == names
    assert images.ndim == 1 and images.dtype == object and len(images) == 97 * PER_CLASS
    assert all(isinstance(png, bytes) and png.startswith(b"\x89PNG") for png in images)
    assert [names[label] for label in labels] == image_classes
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [PER_CLASS] * 97
    np.testing.assert_array_equal(tf.io.decode_png(images[5]).numpy(), pixels[5])


def test_tiered_imagenet_decoded(tiered_val):
    root, pixels, _ = tiered_val
    raw = tiered_imagenet.load("val", dtype="uint8", data_dir=root, decoded=True)
    assert raw.images.shape == (97 * PER_CLASS, 84, 84, 3) and raw.images.dtype == np.uint8
    np.testing.assert_array_equal(raw.images, pixels)
    scaled = tiered_imagenet.load("val", data_dir=root, decoded=True)
    assert scaled.images.dtype == np.float32 and 0.0 <= scaled.images.min() and scaled.images.max() <= 1.0
    np.testing.assert_allclose(scaled.images, pixels / np.float32(255), atol=1e-6)
    small = tiered_imagenet.load("val", image_size=32, data_dir=root, decoded=True)
    assert small.images.shape == (97 * PER_CLASS, 32, 32, 3)
    np.testing.assert_array_equal(small.labels, raw.labels)


def test_tiered_imagenet_encoded_episodes_equal_decoded_ones(tiered_val):
    root, _, _ = tiered_val
    encoded = tiered_imagenet.load("val", data_dir=root)
    decoded = tiered_imagenet.load("val", data_dir=root, decoded=True)
    lazy = EpisodeSampler(
        encoded.images, encoded.labels, 5, 1, 2, seed=3, decode=image_sets.image_decoder(84, dtype="float32"))
    eager = EpisodeSampler(decoded.images, decoded.labels, 5, 1, 2, seed=3)
    helper = tiered_imagenet.sampler("val", 5, 1, 2, data_dir=root, seed=3)
    assert helper.class_names == tiered_imagenet.classes("val")
    batches = [list(s.dataset(batch_size=2).take(2).as_numpy_iterator()) for s in (lazy, eager, helper)]
    for (inputs, labels), (want_inputs, want_labels), (helper_inputs, _) in zip(*batches, strict=True):
        assert inputs["support_x"].shape == (2, 5, 84, 84, 3) and inputs["support_x"].dtype == np.float32
        for key in want_inputs:
            np.testing.assert_allclose(inputs[key], want_inputs[key], atol=1e-6)
            np.testing.assert_allclose(helper_inputs[key], want_inputs[key], atol=1e-6)
        np.testing.assert_array_equal(labels, want_labels)


def test_tiered_imagenet_reads_wnid_names_and_byte_strings(tmp_path):
    pixels, image_classes = _tiered_files(tmp_path, by="wnid", as_arrays=False)
    images, labels, class_names = tiered_imagenet.load("val", data_dir=str(tmp_path))
    assert [class_names[label] for label in labels] == image_classes
    np.testing.assert_array_equal(tf.io.decode_png(images[-1]).numpy(), pixels[-1])


def test_tiered_imagenet_missing_files_say_what_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        tiered_imagenet.load("train", data_dir=str(tmp_path))
    message = str(error.value)
    assert os.path.join(str(tmp_path), "tiered_imagenet") in message
    assert "train_images_png.pkl" in message and "train_labels.pkl" in message
    assert "few-shot-ssl-public" in message


def test_tiered_imagenet_rejects_files_of_another_split(tmp_path):
    names = tiered_imagenet.classes("val")
    _tiered_files(tmp_path, names=names[:-1] + [tiered_imagenet.classes("test")[0]])
    with pytest.raises(ValueError, match="not the standard split") as error:
        tiered_imagenet.load("val", data_dir=str(tmp_path))
    assert tiered_imagenet.classes("test")[0] in str(error.value) and names[-1] in str(error.value)


def test_tiered_imagenet_rejects_mismatched_files(tmp_path):
    _tiered_files(tmp_path)
    folder = tmp_path / "tiered_imagenet"
    with open(folder / "val_images_png.pkl", "rb") as f:
        encoded = pickle.load(f)
    with open(folder / "val_images_png.pkl", "wb") as f:
        pickle.dump(encoded[:-1], f)
    with pytest.raises(ValueError, match="do not belong together"):
        tiered_imagenet.load("val", data_dir=str(tmp_path))
    with open(folder / "val_labels.pkl", "wb") as f:
        pickle.dump({"labels": [0]}, f)
    with pytest.raises(ValueError, match="not a tiered-ImageNet labels file"):
        tiered_imagenet.load("val", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="`decoded` must be True or False"):
        tiered_imagenet.load("val", data_dir=str(tmp_path), decoded="yes")


def test_tiered_imagenet_label_names_keyed_by_anything_but_numbers_are_reported(tmp_path):
    _tiered_files(tmp_path)
    path = tmp_path / "tiered_imagenet" / "val_labels.pkl"
    with open(path, "rb") as f:
        labels = pickle.load(f)
    labels["label_specific_str"] = {str(k): name for k, name in enumerate(labels["label_specific_str"])}
    with open(path, "wb") as f:
        pickle.dump(labels, f)
    with pytest.raises(ValueError, match=r"val_labels.pkl: label_specific_str must map class numbers .*'0'"):
        tiered_imagenet.load("val", data_dir=str(tmp_path))


@pytest.mark.parametrize("kwargs", [dict(image_size=32), dict(dtype="uint8"), dict(image_size=84, dtype="float32")])
def test_tiered_imagenet_decoding_arguments_need_decoded(tiered_val, kwargs):
    root = tiered_val[0]
    with pytest.raises(ValueError, match="only apply with `decoded=True`"):
        tiered_imagenet.load("val", data_dir=root, **kwargs)
    assert tiered_imagenet.load("val", data_dir=root, decoded=True, **kwargs).images.ndim == 4
    with pytest.raises(ValueError, match="`dtype` must be"):
        tiered_imagenet.load("val", dtype="float16", data_dir=root)


def test_tiered_imagenet_reading_releases_each_pickled_image(tmp_path, monkeypatch):
    pixels = [_pattern(j, 8) for j in range(4)]
    pickled = [np.frombuffer(tf.io.encode_png(p).numpy(), np.uint8).reshape(-1, 1) for p in pixels]
    expected = [item.tobytes() for item in pickled]
    monkeypatch.setattr(tiered_imagenet.files, "unpickle", lambda path: pickled)
    encoded = tiered_imagenet._read_images("val_images_png.pkl")
    assert encoded.tolist() == expected
    assert pickled == [None] * 4  # each array released once copied: one copy of the images at a time
