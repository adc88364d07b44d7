import itertools

import numpy as np
import pytest
import tensorflow as tf

from keras_meta.data import EpisodeSampler


def first_batch(sampler, **kwargs):
    batch = next(iter(sampler.dataset(**kwargs)))
    return tf.nest.map_structure(lambda t: t.numpy(), batch)


def test_shapes_and_dtypes(labelled_ids):
    x, y = labelled_ids
    sampler = EpisodeSampler(x, y, ways=5, shots=2, queries=3, seed=1)
    inputs, labels = first_batch(sampler, batch_size=4)
    assert inputs["support_x"].shape == (4, 10, 4, 4, 1)
    assert inputs["support_y"].shape == (4, 10) and inputs["support_y"].dtype == np.int32
    assert inputs["query_x"].shape == (4, 15, 4, 4, 1)
    assert labels.shape == (4, 15) and labels.dtype == np.int32


def test_labels_remapped_and_consistent_with_classes(labelled_ids):
    x, y = labelled_ids
    sampler = EpisodeSampler(x, y, ways=4, shots=3, queries=2, seed=2)
    inputs, labels = first_batch(sampler, batch_size=8)
    for task in range(8):
        support_ids = inputs["support_x"][task, :, 0, 0, 0].astype(int)
        query_ids = inputs["query_x"][task, :, 0, 0, 0].astype(int)
        support_y, query_y = inputs["support_y"][task], labels[task]
        assert sorted(np.bincount(support_y).tolist()) == [3] * 4
        assert sorted(np.bincount(query_y).tolist()) == [2] * 4
        # Every task label stands for one original class, the same in support and query.
        for label in range(4):
            support_classes = set((support_ids[support_y == label] // 10).tolist())
            query_classes = set((query_ids[query_y == label] // 10).tolist())
            assert len(support_classes) == 1 and support_classes == query_classes
        assert len(set((support_ids // 10).tolist())) == 4
        assert not set(support_ids) & set(query_ids), "support and query overlap"
        assert len(set(support_ids)) == len(support_ids) and len(set(query_ids)) == len(query_ids)


def test_class_order_and_positions_are_random(labelled_ids):
    x, y = labelled_ids
    sampler = EpisodeSampler(x, y, ways=5, shots=1, queries=1, seed=3)
    inputs, labels = first_batch(sampler, batch_size=32)
    class_of_label0 = {int(inputs["support_x"][t, inputs["support_y"][t] == 0, 0, 0, 0][0]) // 10 for t in range(32)}
    assert len(class_of_label0) > 3
    assert len({tuple(row) for row in labels}) > 1


def test_class_split_is_honoured(labelled_ids):
    x, y = labelled_ids
    allowed = [1, 4, 6, 7, 9]
    sampler = EpisodeSampler(x, y, ways=3, shots=1, queries=2, classes=allowed, seed=4)
    inputs, _ = first_batch(sampler, batch_size=64)
    seen = set((np.concatenate([inputs["support_x"], inputs["query_x"]], 1)[..., 0, 0, 0].ravel() // 10).astype(int))
    assert seen <= set(allowed) and len(seen) == len(allowed)


def test_seed_makes_stream_reproducible(labelled_ids):
    x, y = labelled_ids
    a = first_batch(EpisodeSampler(x, y, ways=3, shots=2, queries=2, seed=7), batch_size=4)
    b = first_batch(EpisodeSampler(x, y, ways=3, shots=2, queries=2, seed=7), batch_size=4)
    c = first_batch(EpisodeSampler(x, y, ways=3, shots=2, queries=2, seed=8), batch_size=4)
    np.testing.assert_array_equal(a[0]["support_x"], b[0]["support_x"])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0]["support_x"], c[0]["support_x"])


def test_fixed_episode_set_repeats_and_keeps_every_episode(labelled_ids):
    x, y = labelled_ids
    sampler = EpisodeSampler(x, y, ways=3, shots=1, queries=2)
    episodes = sampler.dataset(batch_size=4, num_episodes=10)
    first = [b[0]["query_x"].numpy() for b in episodes]
    second = [b[0]["query_x"].numpy() for b in episodes]
    assert [len(b) for b in first] == [4, 4, 2]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_rotations_make_new_classes():
    # 2 classes of asymmetric 3x3 images; rotations turn them into 8 classes.
    base = np.zeros((2, 3, 3, 1), "float32")
    base[0, 0, 0], base[1, 0, 1] = 1, 1
    x = np.repeat(base, 4, axis=0)
    y = np.repeat([0, 1], 4)
    sampler = EpisodeSampler(x, y, ways=8, shots=1, queries=1, rotations=(0, 90, 180, 270), seed=0)
    assert sampler.num_classes == 8
    inputs, labels = first_batch(sampler, batch_size=1)
    support = inputs["support_x"][0, ..., 0]
    expected = {np.rot90(b[..., 0], k).tobytes() for b in base for k in range(4)}
    assert {image.tobytes() for image in support} == expected
    for label in range(8):
        query = inputs["query_x"][0, labels[0] == label, ..., 0]
        np.testing.assert_array_equal(query[0], support[inputs["support_y"][0] == label][0])


def test_flips_and_rotations_make_eight_classes_of_each():
    # 2 classes of 3x3 images with no symmetry: 4 rotations x 2 mirror images each.
    base = np.zeros((2, 3, 3, 1), "float32")
    base[0, 0, :2, 0], base[1, 1:, 0, 0] = (1, 2), (3, 4)
    x, y = np.repeat(base, 3, axis=0), np.repeat([0, 1], 3)
    sampler = EpisodeSampler(x, y, ways=16, shots=1, queries=1, rotations=(0, 90, 180, 270), flips=True, seed=0)
    assert sampler.num_classes == 16
    inputs, labels = first_batch(sampler, batch_size=1)
    support = inputs["support_x"][0, ..., 0]
    expected = {np.rot90(m, k).tobytes() for b in base for m in (b[..., 0], b[:, ::-1, 0]) for k in range(4)}
    assert len(expected) == 16 and {image.tobytes() for image in support} == expected
    for label in range(16):
        query = inputs["query_x"][0, labels[0] == label, ..., 0]
        np.testing.assert_array_equal(query[0], support[inputs["support_y"][0] == label][0])


def test_flips_mirror_each_chosen_rotation():
    base = np.zeros((1, 3, 3), "float32")
    base[0, 0, :2] = (1, 2)
    sampler = EpisodeSampler(np.repeat(base, 2, axis=0), np.zeros(2, int), ways=4, shots=1, queries=1,
                             rotations=(0, 90), flips=True, seed=0)
    support = first_batch(sampler, batch_size=1)[0]["support_x"][0]
    expected = {m.tobytes() for k in (0, 1) for m in (np.rot90(base[0], k), np.rot90(base[0], k)[:, ::-1])}
    assert {image.tobytes() for image in support} == expected


def test_flips_alone_mirror_non_square_images():
    x = np.arange(4 * 2 * 3, dtype="float32").reshape(4, 2, 3)
    sampler = EpisodeSampler(x, np.array([0, 0, 1, 1]), ways=4, shots=1, queries=1, flips=True, seed=0)
    inputs, labels = first_batch(sampler, batch_size=1)
    images = {image.tobytes() for image in np.concatenate([inputs["support_x"][0], inputs["query_x"][0]])}
    assert images == {m.tobytes() for image in x for m in (image, image[:, ::-1])}
    for label in range(4):  # support and query of a class are both mirrored, or neither
        support = inputs["support_x"][0][inputs["support_y"][0] == label][0]
        query = inputs["query_x"][0][labels[0] == label][0]
        assert any((image == support).all() for image in x) == any((image == query).all() for image in x)


def test_a_single_rotation_rotates():
    x = np.stack([np.arange(4, dtype="float32").reshape(2, 2) + 4 * i for i in range(4)])
    sampler = EpisodeSampler(x, np.array([0, 0, 1, 1]), ways=2, shots=1, queries=1, rotations=(180,), seed=0)
    inputs, _ = first_batch(sampler, batch_size=1)
    expected = {np.rot90(image, 2).tobytes() for image in x}
    assert {image.tobytes() for image in inputs["support_x"][0]} <= expected


def test_variable_ways_and_shots_are_padded(labelled_ids):
    x, y = labelled_ids
    sampler = EpisodeSampler(x, y, ways=(2, 5), shots=(1, 4), queries=2, seed=5)
    assert sampler.variable
    inputs, labels, weights = first_batch(sampler, batch_size=64)
    assert inputs["support_x"].shape[:2] == (64, 20) and labels.shape == (64, 10)
    ways_seen, shots_seen = set(), set()
    for task in range(64):
        support_y = inputs["support_y"][task]
        ways = support_y.max() + 1
        ways_seen.add(int(ways))
        counts = np.bincount(support_y[support_y >= 0], minlength=ways)
        assert (counts >= 1).all() and (counts <= 4).all()
        shots_seen.update(counts.tolist())
        active = labels[task][weights[task] > 0]
        assert sorted(np.bincount(active).tolist()) == [2] * ways
        assert weights[task].sum() == 2 * ways
    assert ways_seen == {2, 3, 4, 5} and shots_seen == {1, 2, 3, 4}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ways=13, shots=1, queries=1), "only 12 classes"),
        (dict(ways=5, shots=6, queries=5), "examples per class"),
        (dict(ways=0, shots=1, queries=1), "positive integer"),
        (dict(ways=(4, 2), shots=1, queries=1), "min must not exceed max"),
        (dict(ways=2, shots=1, queries=1, classes=[0, 99]), "no example has"),
        (dict(ways=2, shots=1, queries=1, classes=[]), "empty"),
        (dict(ways=2, shots=1, queries=1, rotations=(45,)), "rotations"),
        (dict(ways=2, shots=1, queries=1, flips="yes"), "flips"),
        (dict(ways=25, shots=1, queries=1, flips=True), r"12 classes x 1 rotations, each also mirrored"),
    ],
)
def test_bad_options_raise(labelled_ids, kwargs, message):
    x, y = labelled_ids
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(x, y, **kwargs)


def test_bad_arrays_raise():
    x = np.zeros((6, 2), "float32")
    with pytest.raises(ValueError, match="6 examples but `y` has 5"):
        EpisodeSampler(x, np.arange(5), ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match="must be integers"):
        EpisodeSampler(x, np.linspace(0, 1, 6), ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match="empty"):
        EpisodeSampler(np.zeros((0, 2)), np.zeros(0, int), ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match=r"`flips` need images \[N, H, W\]"):
        EpisodeSampler(x, np.repeat([0, 1], 3), ways=2, shots=1, queries=1, flips=True)
    with pytest.raises(ValueError, match="square images"):
        EpisodeSampler(np.zeros((6, 2, 3)), np.repeat([0, 1], 3), ways=2, shots=1, queries=1, rotations=(0, 90))


def test_bad_dataset_arguments_raise(labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match="batch_size"):
        sampler.dataset(batch_size=0)
    with pytest.raises(ValueError, match="num_episodes"):
        sampler.dataset(num_episodes=-3)


def first_batches(dataset, count):
    return [batch[0]["support_x"].numpy() for batch in itertools.islice(dataset, count)]


def test_episode_stream_resumes_and_splits_without_repeating_a_task(labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=3, shots=1, queries=2, seed=4)
    dataset = sampler.dataset(batch_size=4)
    stream = dataset.episode_stream
    stream_batches = first_batches(dataset, 4)
    np.testing.assert_array_equal(first_batches(stream.dataset(), 4), stream_batches)
    np.testing.assert_array_equal(first_batches(stream.dataset(start=2), 2), stream_batches[2:])
    tasks = np.concatenate(stream_batches)  # each example's pixels hold its index: a task's support set names it
    assert len({task.tobytes() for task in tasks}) == len(tasks) == 16
    # Two workers of one replica each: worker i takes tasks 2i, 2i+1 of every global batch, and nothing else.
    workers = [first_batches(stream.dataset(start=1, pipeline=i, num_pipelines=2, per_replica_batch_size=2), 2)
               for i in range(2)]
    for step in range(2):
        np.testing.assert_array_equal(np.concatenate([workers[0][step], workers[1][step]]), stream_batches[1 + step])
    # Two replicas on one worker: consecutive per-replica batches of 2.
    replicas = first_batches(stream.dataset(per_replica_batch_size=2), 4)
    np.testing.assert_array_equal(np.concatenate(replicas[:2]), stream_batches[0])


class Replicas:
    """Stands in for a tf.distribute strategy with this many replicas."""

    def __init__(self, count):
        self.num_replicas_in_sync = count


def test_episode_stream_rejects_uneven_splits(labelled_ids):
    stream = EpisodeSampler(*labelled_ids, ways=3, shots=1, queries=2).dataset(batch_size=4).episode_stream
    with pytest.raises(ValueError, match="multiple of the 3 replicas"):
        stream.distribute(Replicas(3))
    with pytest.raises(ValueError, match="split evenly over 3 workers"):
        stream.dataset(pipeline=0, num_pipelines=3)
    with pytest.raises(ValueError, match="`start` must be a non-negative integer"):
        stream.dataset(start=-1)
    assert stream.distribute(Replicas(1)).element_spec == stream.dataset().element_spec


def encoded_images(count, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (count, 6, 6, 3), dtype=np.uint8)
    return images, np.array([tf.io.encode_png(image).numpy() for image in images], dtype=object)


@pytest.mark.parametrize("from_files", [False, True])
def test_encoded_examples_decode_to_the_same_episodes_as_decoded_ones(tmp_path, from_files):
    from keras_meta.data.sources import image_decoder

    images, encoded = encoded_images(40)
    labels = np.repeat(np.arange(10), 4)
    if from_files:
        paths = []
        for index, data in enumerate(encoded):
            paths.append(str(tmp_path / f"{index}.png"))
            (tmp_path / f"{index}.png").write_bytes(data)
        encoded = np.array(paths)
    options = dict(ways=3, shots=1, queries=2, seed=4, rotations=(0, 90), flips=True)
    decoded = EpisodeSampler(images, labels, **options)
    lazy = EpisodeSampler(encoded, labels, decode=image_decoder(6, dtype="uint8", from_files=from_files), **options)
    expected, got = first_batch(decoded, batch_size=3), first_batch(lazy, batch_size=3)
    for key in ("support_x", "support_y", "query_x"):
        np.testing.assert_array_equal(got[0][key], expected[0][key])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[0]["support_x"].dtype == np.uint8


def test_decode_is_checked_before_sampling():
    from keras_meta.data.sources import image_decoder

    images, encoded = encoded_images(8)
    labels = np.repeat(np.arange(4), 2)
    with pytest.raises(ValueError, match="1-D array of encoded examples"):
        EpisodeSampler(images, labels, ways=2, shots=1, queries=1, decode=image_decoder(6))
    with pytest.raises(ValueError, match="must be a function"):
        EpisodeSampler(encoded, labels, ways=2, shots=1, queries=1, decode="png")
    with pytest.raises(ValueError, match="failed on the first example"):
        EpisodeSampler(np.array([b"not an image"] * 8, dtype=object), labels, ways=2, shots=1, queries=1,
                       decode=image_decoder(6))
    with pytest.raises(ValueError, match="one fixed shape"):
        EpisodeSampler(encoded, labels, ways=2, shots=1, queries=1,
                       decode=lambda data: tf.io.decode_png(data, channels=3))


def test_encoded_examples_keep_their_trailing_zero_bytes():
    """Raw buffers decoded with `tf.io.decode_raw`: a list of bytes stays whole; fixed-width arrays are refused."""
    buffers = [bytes([index, 0, 0, 0]) for index in range(1, 9)]  # each ends in zero bytes
    labels = np.repeat(np.arange(4), 2)

    def decode(data):
        return tf.reshape(tf.io.decode_raw(data, tf.uint8), [4])

    sampler = EpisodeSampler(buffers, labels, ways=2, shots=1, queries=1, seed=0, decode=decode)
    inputs, _ = first_batch(sampler, batch_size=2)
    assert inputs["support_x"].shape == (2, 2, 4)
    assert (inputs["support_x"][..., 1:] == 0).all() and (inputs["support_x"][..., 0] > 0).all()
    with pytest.raises(ValueError, match="trailing zero bytes"):
        EpisodeSampler(np.array(buffers), labels, ways=2, shots=1, queries=1, decode=decode)
