"""keras_meta.plots: what each figure draws, checked against independent computations."""

import importlib
import sys

import keras
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import keras_meta
from keras_meta import plots
from keras_meta.data import EpisodeSampler

WAYS, SHOTS, QUERIES = 3, 2, 4


def image_data(classes=6, per_class=8, shape=(6, 6, 1), seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, *shape))
    y = np.repeat(np.arange(classes), per_class)
    x = (centres[y] + 0.5 * rng.normal(size=(len(y), *shape))).astype("float32")
    return x, y


def episode(shape=(6, 6, 1), batch=2, seed=0):
    x, y = image_data(shape=shape)
    sampler = EpisodeSampler(x, y, ways=WAYS, shots=SHOTS, queries=QUERIES, seed=seed)
    inputs, query_y = next(iter(sampler.dataset(batch_size=batch)))
    return {k: v.numpy() for k, v in inputs.items()}, query_y.numpy()


def maml(input_shape=(6, 6, 1), outputs=WAYS, loss=None, steps=1, rate=0.5):
    keras.utils.set_random_seed(0)
    model = keras_meta.models.mlp(input_shape, hidden_units=(8,), num_outputs=outputs)
    learner = keras_meta.learners.MAML(model, inner_learning_rate=rate, inner_steps=steps)
    learner.compile(optimizer="adam", loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return learner


def protonet(input_shape=(6, 6, 1), size=2):
    keras.utils.set_random_seed(0)
    return keras_meta.learners.PrototypicalNetwork(keras_meta.models.mlp(input_shape, hidden_units=(size,),
                                                                         activation=None))


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


# -- plot_episode --------------------------------------------------------------


def test_plot_episode_draws_every_support_and_query_image_with_its_label():
    inputs, query_y = episode()
    fig = plots.plot_episode(inputs, query_y, task=1)
    assert isinstance(fig, Figure)
    axes = image_axes(fig)
    assert len(axes) == WAYS * (SHOTS + QUERIES)
    titles = [ax.get_title() for ax in axes]
    assert titles[:WAYS * SHOTS] == [f"y={label}" for label in inputs["support_y"][1]]
    assert titles[WAYS * SHOTS:] == [f"y={label}" for label in query_y[1]]
    np.testing.assert_array_equal(axes[0].images[0].get_array(), inputs["support_x"][1, 0, ..., 0])


def test_plot_episode_marks_exactly_the_wrong_predictions():
    inputs, query_y = episode(batch=1)
    learner = maml()
    predictions = np.argmax(np.asarray(learner(inputs, training=False))[0], axis=-1)
    wrong = predictions != query_y[0]
    assert 0 < wrong.sum() < len(wrong), "the test needs both right and wrong predictions"
    fig = plots.plot_episode(inputs, query_y, learner=learner)
    queries = image_axes(fig)[WAYS * SHOTS:]
    marked = [to_rgba(ax.title.get_color()) == to_rgba("red") for ax in queries]
    assert marked == wrong.tolist()
    expected = [f"y={y} pred={p}" for y, p in zip(query_y[0], predictions, strict=True)]
    assert [ax.get_title() for ax in queries] == expected
    framed = [to_rgba(ax.spines["left"].get_edgecolor()) == to_rgba("red") for ax in queries]
    assert framed == wrong.tolist()


def test_plot_episode_rgb_padding_and_max_images():
    inputs, query_y = episode(shape=(5, 5, 3), batch=1)
    inputs["support_y"][0, -1] = -1  # a padded slot is not drawn
    fig = plots.plot_episode(inputs, query_y, max_images=4)
    axes = image_axes(fig)
    assert len(axes) == 8
    assert axes[0].images[0].get_array().shape == (5, 5, 3)
    fig = plots.plot_episode(inputs)
    assert len(image_axes(fig)) == WAYS * SHOTS - 1 + WAYS * QUERIES
    assert image_axes(fig)[-1].get_title() == f"#{WAYS * QUERIES - 1}"


def test_plot_episode_rejects_what_it_cannot_draw():
    inputs, query_y = episode()
    flat = {k: (v.reshape(*v.shape[:2], -1) if k != "support_y" else v) for k, v in inputs.items()}
    with pytest.raises(ValueError, match="images"):
        plots.plot_episode(flat)
    with pytest.raises(ValueError, match="`task` must be an integer index of the episode's 2 task"):
        plots.plot_episode(inputs, task=2)
    with pytest.raises(ValueError, match="episode dict"):
        plots.plot_episode(inputs["support_x"])
    with pytest.raises(ValueError, match="query_y"):
        plots.plot_episode(inputs, query_y[:, :3])
    with pytest.raises(ValueError, match="max_images"):
        plots.plot_episode(inputs, max_images=0)


# -- plot_history --------------------------------------------------------------


def test_plot_history_one_axes_per_family_with_bands():
    history = keras.callbacks.History()
    history.history = {
        "loss": [1.0, 0.8, 0.6, 0.5], "sparse_categorical_accuracy": [0.3, 0.4, 0.5, 0.6],
        "val_5way_1shot_accuracy": [0.4, 0.5, 0.55, 0.6], "val_5way_1shot_ci95": [0.05, 0.04, 0.04, 0.03],
        "val_5way_5shot_accuracy": [0.5, 0.6, 0.7, 0.75], "val_5way_5shot_ci95": [0.03, 0.03, 0.02, 0.02],
        "val_loss": [1.1, 0.9], "val_sparse_categorical_accuracy": [0.35, 0.45],
    }
    fig = plots.plot_history(history)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "sparse_categorical_accuracy", "few-shot accuracy"]
    loss, accuracy, few_shot = fig.axes
    assert [line.get_label() for line in loss.lines] == ["training", "validation"]
    np.testing.assert_allclose(loss.lines[1].get_xdata(), [2, 4])  # validated every 2nd epoch
    np.testing.assert_allclose(loss.lines[1].get_ydata(), [1.1, 0.9])
    assert [line.get_label() for line in few_shot.lines] == ["5way_1shot", "5way_5shot"]
    bands = [c for c in few_shot.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    top = bands[0].get_paths()[0].vertices[:, 1].max()
    assert top == pytest.approx(0.6 + 0.03)
    assert not [c for c in loss.collections if isinstance(c, PolyCollection)]
    assert plots.plot_history(history.history).axes[0].get_title() == "loss"  # the dict works too


def test_plot_history_of_a_real_fit():
    x, y = image_data()
    learner = protonet()
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = EpisodeSampler(x, y, ways=WAYS, shots=SHOTS, queries=QUERIES, seed=0).dataset(batch_size=2)
    evaluation = keras_meta.callbacks.FewShotEvaluation(x, y, ways=WAYS, shots=1, queries=2, num_episodes=4)
    history = learner.fit(train, epochs=2, steps_per_epoch=2, callbacks=[evaluation], verbose=0)
    fig = plots.plot_history(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "few-shot accuracy"]
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), history.history["val_3way_1shot_accuracy"])


def test_plot_history_rejects_empty_or_wrong_input():
    with pytest.raises(ValueError, match="keras History"):
        plots.plot_history({})
    with pytest.raises(ValueError, match="keras History"):
        plots.plot_history([1.0, 2.0])
    with pytest.raises(ValueError, match="list of numbers"):
        plots.plot_history({"loss": ["a"]})


# -- adaptation ----------------------------------------------------------------


def test_plot_adaptation_matches_adapted_models():
    inputs, query_y = episode(batch=1)
    learner = maml(steps=2)
    fig = plots.plot_adaptation(learner, inputs, query_y, steps=3)
    assert learner.eval_inner_steps == 2  # put back
    loss_ax, accuracy_ax = fig.axes
    assert (loss_ax.get_title(), accuracy_ax.get_title()) == ("query loss", "query accuracy")
    np.testing.assert_array_equal(loss_ax.lines[0].get_xdata(), [0, 1, 2, 3])
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses, accuracies = [], []
    for steps in range(4):
        adapted = learner.adapt(inputs["support_x"][0], inputs["support_y"][0], steps=steps)
        logits = np.asarray(adapted(inputs["query_x"][0]))
        losses.append(float(cross_entropy(query_y[0], logits)))
        accuracies.append(np.mean(np.argmax(logits, -1) == query_y[0]))
    np.testing.assert_allclose(loss_ax.lines[0].get_ydata(), losses, rtol=1e-4)
    np.testing.assert_allclose(accuracy_ax.lines[0].get_ydata(), accuracies)
    assert losses[3] < losses[0]


def test_plot_adaptation_regression_has_only_a_loss_axes():
    learner = maml(input_shape=(1,), outputs=1, loss="mse")
    inputs, targets = next(iter(keras_meta.datasets.sine.SinusoidTasks(shots=5, queries=5, seed=0).dataset(2)))
    fig = plots.plot_adaptation(learner, inputs, targets.numpy(), steps=1)
    assert [ax.get_title() for ax in fig.axes] == ["query loss"]
    zero_shot = np.asarray(learner.model(inputs["query_x"].numpy().reshape(-1, 1))).reshape(targets.shape)
    assert fig.axes[0].lines[0].get_ydata()[0] == pytest.approx(np.mean((zero_shot - targets.numpy()) ** 2),
                                                                rel=1e-5)


def test_gradient_plots_reject_other_learners():
    inputs, query_y = episode()
    for call in (lambda: plots.plot_adaptation(protonet(), inputs, query_y),
                 lambda: plots.plot_parameter_change(protonet(), inputs["support_x"][0], inputs["support_y"][0]),
                 lambda: plots.plot_regression_adaptation(protonet(), [0.0], [0.0], (0, 1))):
        with pytest.raises(ValueError, match="gradient-based learner"):
            call()
    with pytest.raises(ValueError, match="`steps` must be a non-negative integer"):
        plots.plot_adaptation(maml(), inputs, query_y, steps=-1)


def test_plot_accuracy_vs_shots_draws_evaluate_few_shot():
    x, y = image_data()
    learner = protonet()
    fig = plots.plot_accuracy_vs_shots(learner, x, y, ways=WAYS, shots=(1, 3), queries=2, num_episodes=6)
    line = fig.axes[0].containers[0].lines[0]  # the data line of the error bars
    np.testing.assert_array_equal(line.get_xdata(), [1, 3])
    expected = [keras_meta.evaluation.evaluate_few_shot(learner, x, y, WAYS, shots=k, queries=2, num_episodes=6,
                                                        seed=0, verbose=0).accuracy for k in (1, 3)]
    np.testing.assert_allclose(line.get_ydata(), expected)
    with pytest.raises(ValueError, match="shots"):
        plots.plot_accuracy_vs_shots(learner, x, y, ways=WAYS, shots=(0,))


def test_plot_parameter_change_bars_are_relative_weight_changes():
    inputs, _ = episode(batch=1)
    learner = maml()
    support_x, support_y = inputs["support_x"][0], inputs["support_y"][0]
    fig = plots.plot_parameter_change(learner, support_x, support_y, steps=2)
    bars = fig.axes[0].patches
    adapted = learner.adapt(support_x, support_y, steps=2)
    expected = []
    old, new = learner.model.get_weights(), adapted.get_weights()  # kernel, bias of each Dense layer
    for layer in range(2):
        delta = np.concatenate([(new[i] - old[i]).ravel() for i in (2 * layer, 2 * layer + 1)])
        weight = np.concatenate([old[i].ravel() for i in (2 * layer, 2 * layer + 1)])
        expected.append(np.linalg.norm(delta) / np.linalg.norm(weight))
    np.testing.assert_allclose([bar.get_height() for bar in bars], expected, rtol=1e-5)
    assert min(expected) > 0
    names = [layer.name for layer in learner.model.layers if layer.trainable_weights]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
    assert len(names) == 2 and names[1] == "outputs"
    assert "2 inner step" in fig.axes[0].get_title()


def test_plot_regression_adaptation_curves():
    learner = maml(input_shape=(1,), outputs=1, loss="mse", rate=0.01)
    rng = np.random.default_rng(0)
    support_x = rng.uniform(-5, 5, size=5).astype("float32")
    support_y = 2 * np.sin(support_x - 1)
    fig = plots.plot_regression_adaptation(learner, support_x, support_y, (-5, 5),
                                           true_function=lambda x: 2 * np.sin(x - 1), steps=(0, 1, 5))
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["true function", "after 0 steps", "after 1 step",
                                                       "after 5 steps"]
    grid = ax.lines[0].get_xdata()
    assert len(grid) == 200 and grid[0] == -5 and grid[-1] == 5
    np.testing.assert_allclose(ax.lines[0].get_ydata(), 2 * np.sin(grid - 1), rtol=1e-6)
    unadapted = np.asarray(learner.model(grid[:, None].astype("float32")))[:, 0]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), unadapted, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ax.lines[3].get_ydata(), unadapted)
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets(), np.stack([support_x, support_y], 1), rtol=1e-6)
    with pytest.raises(ValueError, match="float regression targets"):
        plots.plot_regression_adaptation(learner, support_x, np.arange(5), (-5, 5))
    with pytest.raises(ValueError, match="x_range"):
        plots.plot_regression_adaptation(learner, support_x, support_y, (5, -5))


# -- plot_embeddings -----------------------------------------------------------


def test_plot_embeddings_points_and_prototypes():
    inputs, query_y = episode()
    learner = protonet(size=2)  # 2-d embeddings: the projection keeps every distance
    fig = plots.plot_embeddings(learner, inputs, query_y, task=1)
    support, query, prototypes = fig.axes[0].collections
    assert [len(c.get_offsets()) for c in (support, query, prototypes)] == [WAYS * SHOTS, WAYS * QUERIES, WAYS]
    embed = lambda x: np.asarray(learner.backbone(x), np.float64)  # noqa: E731
    raw_support, raw_query = embed(inputs["support_x"][1]), embed(inputs["query_x"][1])
    raw_prototypes = np.stack([raw_support[inputs["support_y"][1] == c].mean(0) for c in range(WAYS)])
    raw = np.concatenate([raw_support, raw_query, raw_prototypes])
    drawn = np.concatenate([np.asarray(c.get_offsets()) for c in (support, query, prototypes)])

    def distances(points):
        return np.linalg.norm(points[:, None] - points[None], axis=-1)

    np.testing.assert_allclose(distances(drawn), distances(raw), atol=1e-4)
    assert len({tuple(c) for c in prototypes.get_facecolors()}) == WAYS


def test_plot_embeddings_rejects_other_learners_and_bad_task():
    inputs, query_y = episode()
    with pytest.raises(ValueError, match="embedding learner"):
        plots.plot_embeddings(maml(), inputs, query_y)
    with pytest.raises(ValueError, match="`task`"):
        plots.plot_embeddings(protonet(), inputs, query_y, task=5)


# -- matplotlib is optional ----------------------------------------------------


def test_missing_matplotlib_names_the_extra(monkeypatch):
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    importlib.reload(plots)  # importing the module needs no matplotlib
    with pytest.raises(ImportError, match=r'pip install "keras-meta\[plots\]"'):
        plots.plot_history({"loss": [1.0]})
    with pytest.raises(ImportError, match=r'pip install "keras-meta\[plots\]"'):
        plots.plot_accuracy_vs_shots(protonet(), *image_data(), ways=WAYS)
