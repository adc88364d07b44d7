import numpy as np

from keras_meta import ops


def test_distances_against_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 5, 3))
    expected = np.array([[[np.sum((a - b) ** 2) for b in yb] for a in xb] for xb, yb in zip(x, y, strict=True)])
    np.testing.assert_allclose(ops.pairwise_squared_euclidean(x, y).numpy(), expected, rtol=1e-10)
    cos = np.array([[[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in yb] for a in xb]
                    for xb, yb in zip(x, y, strict=True)])
    np.testing.assert_allclose(ops.pairwise_cosine_similarity(x, y).numpy(), cos, rtol=1e-10)
    self_sim = ops.pairwise_cosine_similarity(x[0]).numpy()
    np.testing.assert_allclose(np.diag(self_sim), 1.0, rtol=1e-10)


def test_prototypes_against_numpy_and_ignore_padding():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(7, 4)).astype("float32")
    labels = np.array([2, 0, 2, -1, 0, 2, -1])
    prototypes, counts = ops.class_prototypes(emb, labels, 4)
    expected = np.stack([emb[labels == c].mean(0) if (labels == c).any() else np.zeros(4) for c in range(4)])
    np.testing.assert_allclose(prototypes.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(counts.numpy(), [2, 0, 3, 0])
