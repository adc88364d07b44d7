"""Figures of episodes, training curves and adaptation, as matplotlib `Figure` objects.

Needs matplotlib (`pip install "keras-meta[plots]"`). The figures are built
without pyplot, so they work without a display: save one with
`fig.savefig("name.png")`, or show it in a notebook by leaving it as the
cell's last expression.

Example:

>>> from keras_meta import plots
>>> fig = plots.plot_history(history)  # doctest: +SKIP
>>> fig.savefig("history.png")  # doctest: +SKIP
"""

import numpy as np
import tensorflow as tf

from keras_meta.data.checks import integer_argument
from keras_meta.data.episode_format import QUERY_X, SUPPORT_X, SUPPORT_Y
from keras_meta.learners.base import unpack_episode

EXTRA = 'pip install "keras-meta[plots]"'
WRONG_COLOR = "red"
RIGHT_COLOR = "black"


def _new_figure(figsize):
    """A headless `matplotlib.figure.Figure` (no pyplot state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"keras_meta.plots needs matplotlib: install it with `{EXTRA}`.") from None
    return Figure(figsize=figsize, layout="constrained")


# -- checks --------------------------------------------------------------------


def _episode_arrays(inputs, task, query_y=None):
    """`(support_x, support_y, query_x, query_y)` of task `task` of an episode dict, as numpy arrays."""
    support_x, support_y, query_x = (np.asarray(value) for value in unpack_episode(inputs))
    tasks = len(support_x)
    if isinstance(task, bool) or not isinstance(task, (int, np.integer)) or not -tasks <= task < tasks:
        raise ValueError(f"`task` must be an integer index of the episode's {tasks} task(s), got {task!r}.")
    labels = None
    if query_y is not None:
        labels = np.asarray(query_y)
        if labels.shape[:2] != query_x.shape[:2]:
            raise ValueError(
                f"`query_y` must hold the query labels [tasks, queries] = {list(query_x.shape[:2])}, "
                f"got shape {list(labels.shape)}."
            )
        labels = labels[task]
    return support_x[task], support_y[task], query_x[task], labels


def _one_task(inputs, task):
    """The episode dict of one task, batched as one: `[1, S, ...]`."""
    return {key: tf.convert_to_tensor(inputs[key])[task][None] for key in (SUPPORT_X, SUPPORT_Y, QUERY_X)}


def _gradient_learner(learner, function):
    from keras_meta.learners.gradient_based import GradientMetaLearner

    if not isinstance(learner, GradientMetaLearner):
        raise ValueError(
            f"`{function}` takes a gradient-based learner (MAML, ANIL, Meta-SGD, Reptile, iMAML: a "
            f"GradientMetaLearner), got {type(learner).__name__}, which does not adapt weights by inner steps."
        )


def _step_count(name, value):
    return integer_argument(name, value, minimum=0, unit=" number of inner steps")


def _class_logits(predictions, what):
    predictions = np.asarray(predictions)
    if predictions.ndim != 3 or predictions.shape[-1] < 2:
        raise ValueError(
            f"{what} needs a classifier's query logits [tasks, queries, ways], but the learner returned shape "
            f"{list(predictions.shape)}; for regression learners use plot_regression_adaptation."
        )
    return predictions


# -- episodes ------------------------------------------------------------------


def _image(value, name):
    """`(image, cmap)` of one example `[H, W]`, `[H, W, 1]` or `[H, W, 3]`."""
    if value.ndim == 3 and value.shape[-1] == 1:
        value = value[..., 0]
    if value.ndim == 2:
        return value, "gray"
    if value.ndim == 3 and value.shape[-1] == 3:
        return value, None
    raise ValueError(
        f"plot_episode shows images [H, W], [H, W, 1] (grayscale) or [H, W, 3] (RGB), but the examples of "
        f"`{name}` have shape {list(value.shape)}; for other inputs use plot_embeddings."
    )


def plot_episode(inputs, query_y=None, learner=None, task=0, max_images=20):
    """The support and query images of one task of an episode, titled with their labels.

    Given a `learner`, each query's title also shows the learner's prediction;
    wrong predictions (which need `query_y`) get a red title and frame.

    Args:
        inputs: an episode dict (`support_x [B, S, H, W(, C)]`, `support_y`,
            `query_x`), e.g. the first element of a batch of
            `sampler.dataset(batch_size)`.
        query_y: the query labels `[B, Q]` (optional).
        learner: a few-shot classifier (optional).
        task: which task of the batch to show.
        max_images: at most this many support and this many query images.

    Example:

    >>> inputs, query_y = next(iter(sampler.dataset(batch_size=1)))  # doctest: +SKIP
    >>> fig = plot_episode(inputs, query_y, learner=learner)  # doctest: +SKIP
    """
    support_x, support_y, query_x, labels = _episode_arrays(inputs, task, query_y)
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise ValueError(f"`max_images` must be a positive integer, got {max_images!r}.")
    _image(support_x[0], SUPPORT_X)
    _image(query_x[0], QUERY_X)
    if support_x.shape[1:] != query_x.shape[1:]:
        raise ValueError(f"The support images {list(support_x.shape[1:])} and query images "
                         f"{list(query_x.shape[1:])} of the episode differ in shape; they must match.")
    predictions = None
    if learner is not None:
        logits = _class_logits(learner(_one_task(inputs, task), training=False), "plot_episode with a learner")
        predictions = np.argmax(logits[0], axis=-1)
    shown = np.flatnonzero(support_y >= 0)[:max_images]  # -1: a padded slot
    support = [(support_x[i], f"y={int(support_y[i])}", RIGHT_COLOR) for i in shown]
    query = []
    for i in range(min(len(query_x), max_images)):
        parts, color = [], RIGHT_COLOR
        if labels is not None:
            parts.append(f"y={int(labels[i])}")
        if predictions is not None:
            parts.append(f"pred={int(predictions[i])}")
            if labels is not None and predictions[i] != labels[i]:
                color = WRONG_COLOR
        query.append((query_x[i], " ".join(parts) or f"#{i}", color))
    columns = min(10, max(len(support), len(query)))
    rows = [-(-len(support) // columns), -(-len(query) // columns)]
    fig = _new_figure((1.3 * columns, 1.5 * sum(rows) + 0.8))
    images = np.concatenate([support_x, query_x])
    rgb = images.ndim == 4 and images.shape[-1] == 3
    low, high = float(np.min(images)), float(np.max(images))
    if not np.isfinite([low, high]).all():
        raise ValueError("The episode's images hold NaN or infinite values; plot_episode needs finite pixels.")
    sections = fig.subfigures(2, 1, height_ratios=rows)
    titles = ("Support set", "Query set")
    for section, title, examples, count in zip(sections, titles, (support, query), rows, strict=True):
        section.suptitle(title)
        axes = section.subplots(count, columns, squeeze=False)
        for index, ax in enumerate(axes.flat):
            if index >= len(examples):
                ax.remove()
                continue
            value, text, color = examples[index]
            image, cmap = _image(value, SUPPORT_X)
            if rgb:
                ax.imshow(_rgb_in(value, images))
            else:
                ax.imshow(image, cmap=cmap, vmin=low, vmax=high)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(text, color=color, fontsize=8)
            if color == WRONG_COLOR:
                for spine in ax.spines.values():
                    spine.set_edgecolor(WRONG_COLOR)
                    spine.set_linewidth(2)
    return fig


def _rgb_in(value, images):
    """One RGB image, scaled to [0, 1] with the range of the whole episode."""
    if images.dtype == np.uint8:
        return value
    low, high = float(np.min(images)), float(np.max(images))
    return (value - low) / (high - low) if high > low else np.zeros_like(value, dtype=np.float32)


# -- training curves -----------------------------------------------------------


def _history_dict(history):
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise ValueError(
            f"`history` must be what `fit` returns (a keras History) or its `.history` dict of metric name -> "
            f"values per epoch, with at least one metric; got {type(history).__name__}"
            f"{' (empty)' if isinstance(logs, dict) else ''}."
        )
    curves = {}
    for key, values in logs.items():
        try:
            values = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"`history[{key!r}]` must be a list of numbers (one per epoch), got {values!r}.") from None
        if values.size:
            curves[str(key)] = values
    if not curves:
        raise ValueError("`history` holds no values: train for at least one epoch first.")
    return curves


def _families(curves):
    """`{family: [(key, label, ci95 key or None)]}`, in the order of the keys."""
    families = {}
    for key in curves:
        if key.startswith("val_") and key.endswith("_ci95") and key[:-len("_ci95")] + "_accuracy" in curves:
            continue  # drawn as the band of its accuracy
        band = None
        if key.startswith("val_") and key.endswith("_accuracy") and key[:-len("_accuracy")] + "_ci95" in curves:
            family, label, band = "few-shot accuracy", key[len("val_"):-len("_accuracy")], \
                key[:-len("_accuracy")] + "_ci95"
        elif key.startswith("val_"):
            family, label = key[len("val_"):], "validation"
        else:
            family, label = key, "training"
        families.setdefault(family, []).append((key, label, band))
    return families


def plot_history(history):
    """Training and validation curves of a `fit`, one axes per metric.

    `loss` and `val_loss` share an axes, as does each metric and its `val_`
    counterpart; the few-shot validation scores of
    `keras_meta.callbacks.FewShotEvaluation` (`val_<name>_accuracy`) share a
    "few-shot accuracy" axes, with their 95% interval (`val_<name>_ci95`) as
    a shaded band. A key logged on fewer epochs than the others (Keras'
    `validation_freq`) is drawn at evenly spaced epochs ending at the last.

    Example:

    >>> history = learner.fit(train, epochs=5, callbacks=[FewShotEvaluation(x, y, 5, 1)])  # doctest: +SKIP
    >>> fig = plot_history(history)  # doctest: +SKIP
    """
    curves = _history_dict(history)
    families = _families(curves)
    epochs = max(len(values) for values in curves.values())
    columns = min(3, len(families))
    rows = -(-len(families) // columns)
    fig = _new_figure((4.2 * columns, 3.2 * rows))
    from matplotlib.ticker import MaxNLocator  # after _new_figure: it says how to install matplotlib

    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax, (family, members) in zip(axes[:len(families)], families.items(), strict=True):
        for key, label, band in members:
            values = curves[key]
            x = np.arange(1, len(values) + 1) * (epochs / len(values))
            (line,) = ax.plot(x, values, marker="o" if len(values) < 30 else None, label=label)
            if band is not None and len(curves[band]) == len(values):
                ci95 = curves[band]
                ax.fill_between(x, values - ci95, values + ci95, color=line.get_color(), alpha=0.2)
        ax.set_title(family)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    for ax in axes[len(families):]:
        ax.remove()
    return fig


# -- adaptation ----------------------------------------------------------------


def _query_loss(learner):
    """The loss of the query predictions: the compiled loss, else the learner's `inner_loss`."""
    import keras

    loss = getattr(learner, "loss", None)
    if loss is not None and not isinstance(loss, (dict, list, tuple)):
        return keras.losses.get(loss)
    if getattr(learner, "inner_loss", None) is not None:
        return learner.inner_loss
    raise ValueError(
        f"{type(learner).__name__} has no loss to score the queries with: compile it with one `loss=` "
        "(e.g. SparseCategoricalCrossentropy(from_logits=True), or \"mse\")."
    )


def plot_adaptation(learner, inputs, query_y, steps=5):
    """Query loss (and accuracy, for class labels) after 0 (zero-shot) to `steps` inner steps.

    Averaged over the tasks of the episode batch `inputs`; `query_y` are its
    query labels or targets. For gradient-based learners.

    Example:

    >>> inputs, query_y = next(iter(sampler.dataset(batch_size=8)))  # doctest: +SKIP
    >>> fig = plot_adaptation(maml, inputs, query_y, steps=10)  # doctest: +SKIP
    """
    _gradient_learner(learner, "plot_adaptation")
    steps = _step_count("steps", steps)
    _episode_arrays(inputs, 0, query_y)
    if query_y is None:
        raise ValueError("plot_adaptation needs `query_y`, the query labels or targets of `inputs`.")
    loss_fn = _query_loss(learner)
    labels = np.asarray(query_y)
    classes = np.issubdtype(labels.dtype, np.integer)
    episode = {key: tf.convert_to_tensor(inputs[key]) for key in (SUPPORT_X, SUPPORT_Y, QUERY_X)}
    losses, accuracies = [], []
    saved = learner.eval_inner_steps
    try:
        for step in range(steps + 1):
            learner.eval_inner_steps = step
            predictions = np.asarray(learner(episode, training=False))
            losses.append(float(np.mean(loss_fn(labels, predictions))))
            if classes:
                accuracies.append(float(np.mean(np.argmax(_class_logits(predictions, "accuracy"), -1) == labels)))
    finally:
        learner.eval_inner_steps = saved
    panels = [("query loss", losses)] + ([("query accuracy", accuracies)] if classes else [])
    fig = _new_figure((4.2 * len(panels), 3.2))
    for ax, (name, values) in zip(fig.subplots(1, len(panels), squeeze=False).flat, panels, strict=True):
        ax.plot(np.arange(steps + 1), values, marker="o")
        ax.set_title(name)
        ax.set_xlabel("inner steps (0: zero-shot)")
        if steps <= 20:
            ax.set_xticks(np.arange(steps + 1))
    return fig


def plot_accuracy_vs_shots(learner, x, y, ways, shots=(1, 2, 5), queries=15, num_episodes=100, seed=0):
    """Few-shot accuracy and its 95% interval against the number of shots, for any learner.

    Each point is `keras_meta.evaluation.evaluate_few_shot(learner, x, y, ways,
    shots=k, queries, num_episodes, seed)` on held-out data `(x, y)`.

    Example:

    >>> fig = plot_accuracy_vs_shots(learner, test_x, test_y, ways=5, shots=(1, 5))  # doctest: +SKIP
    """
    from keras_meta.evaluation import evaluate_few_shot

    if isinstance(shots, (int, np.integer)):
        shots = (shots,)
    shots = [int(k) for k in shots] if isinstance(shots, (list, tuple, np.ndarray)) else shots
    if not isinstance(shots, list) or not shots or any(isinstance(k, bool) or k < 1 for k in shots):
        raise ValueError(f"`shots` must be a non-empty list of positive integers, got {shots!r}.")
    _new_figure((1, 1))  # matplotlib is there before the evaluations run
    results = [evaluate_few_shot(learner, x, y, ways, shots=k, queries=queries, num_episodes=num_episodes,
                                 seed=seed, verbose=0) for k in shots]
    accuracy = np.array([r.accuracy for r in results])
    ci95 = np.nan_to_num(np.array([r.ci95 for r in results]))
    fig = _new_figure((4.5, 3.2))
    ax = fig.subplots()
    ax.errorbar(shots, accuracy, yerr=ci95, marker="o", capsize=3)
    ax.set_xticks(shots)
    ax.set_xlabel("shots (support examples per class)")
    ax.set_ylabel("query accuracy")
    ax.set_title(f"{ways}-way accuracy ({num_episodes} episodes, 95% interval)")
    return fig


def _layer_name(variable, model):
    path = getattr(variable, "path", variable.name)
    parts = path.split("/")[:-1] or [path]
    if len(parts) > 1 and parts[0] == model.name:
        parts = parts[1:]
    return "/".join(parts)


def plot_parameter_change(learner, support_x, support_y, steps=None):
    """Per layer, how far adaptation to one task moves the weights: `||w_adapted - w|| / ||w||`.

    `w` are all trainable weights of a layer of the learner's model before
    adaptation and `w_adapted` those of `learner.adapt(support_x, support_y,
    steps)`. A layer whose weights are all zero shows the absolute change.
    For gradient-based learners.

    Example:

    >>> fig = plot_parameter_change(maml, support_x, support_y, steps=5)  # doctest: +SKIP
    """
    _gradient_learner(learner, "plot_parameter_change")
    steps = learner.eval_inner_steps if steps is None else _step_count("steps", steps)
    adapted = learner.adapt(support_x, support_y, steps=steps)
    before = [np.asarray(v) for v in learner.model.trainable_variables]
    after = [np.asarray(v) for v in adapted.trainable_variables]
    layers = {}
    for variable, old, new in zip(learner.model.trainable_variables, before, after, strict=True):
        sums = layers.setdefault(_layer_name(variable, learner.model), [0.0, 0.0])
        sums[0] += float(np.sum((new.astype(np.float64) - old) ** 2))
        sums[1] += float(np.sum(old.astype(np.float64) ** 2))
    names, changes = [], []
    for name, (moved, size) in layers.items():
        names.append(name if size > 0 else f"{name} (absolute)")
        changes.append(np.sqrt(moved / size) if size > 0 else np.sqrt(moved))
    fig = _new_figure((max(4.0, 0.9 * len(names) + 1.5), 3.4))
    ax = fig.subplots()
    ax.bar(np.arange(len(names)), changes)
    ax.set_xticks(np.arange(len(names)), names, rotation=45 if len(names) > 4 else 0, ha="right"
                  if len(names) > 4 else "center")
    ax.set_ylabel("||w_adapted - w|| / ||w||")
    ax.set_title(f"Weight change after {steps} inner step(s)")
    return fig


def _regression_support(support_x, support_y):
    support_x, support_y = np.asarray(support_x), np.asarray(support_y)
    if not np.issubdtype(support_y.dtype, np.floating):
        raise ValueError(
            f"plot_regression_adaptation takes float regression targets `support_y`, got dtype {support_y.dtype}; "
            "for classification use plot_adaptation."
        )
    support_x = support_x.reshape(-1, 1) if support_x.ndim == 1 else support_x
    support_y = support_y.reshape(-1, 1) if support_y.ndim == 1 else support_y
    if support_x.ndim != 2 or support_x.shape[1] != 1 or support_y.shape != (len(support_x), 1):
        raise ValueError(
            "plot_regression_adaptation draws functions of one input to one output: give support_x [S] or "
            f"[S, 1] and support_y [S] or [S, 1], got shapes {list(np.shape(support_x))} and "
            f"{list(np.shape(support_y))}."
        )
    return support_x.astype(np.float32), support_y.astype(np.float32)


def plot_regression_adaptation(learner, support_x, support_y, x_range, true_function=None, steps=(0, 1, 10)):
    """A regression task: the true function, the support points and the adapted model after each number of steps.

    Args:
        learner: a gradient-based learner of a model with one input and one output.
        support_x, support_y: one task's support points, `[S]` or `[S, 1]`.
        x_range: `(low, high)`: the curves are drawn at 200 points in it.
        true_function: optional, maps an array of inputs `[n]` to outputs `[n]`.
        steps: the numbers of inner steps to draw the adapted model after
            (0: the meta-learned model itself).

    Example:

    >>> fig = plot_regression_adaptation(maml, support_x, support_y, (-5, 5),
    ...                                  true_function=lambda x: 3 * np.sin(x - 1))  # doctest: +SKIP
    """
    _gradient_learner(learner, "plot_regression_adaptation")
    support_x, support_y = _regression_support(support_x, support_y)
    if not isinstance(x_range, (tuple, list)) or len(x_range) != 2 or not all(
            isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v) for v in x_range) \
            or not x_range[0] < x_range[1]:
        raise ValueError(f"`x_range` must be a (low, high) pair of numbers with low < high, got {x_range!r}.")
    steps = [steps] if isinstance(steps, (int, np.integer)) else steps
    if not isinstance(steps, (list, tuple)) or not steps:
        raise ValueError(f"`steps` must be a non-empty list of numbers of inner steps, got {steps!r}.")
    steps = [_step_count("steps", k) for k in steps]
    if true_function is not None and not callable(true_function):
        raise ValueError(f"`true_function` must be a function of an array of inputs, got {true_function!r}.")
    grid = np.linspace(float(x_range[0]), float(x_range[1]), 200, dtype=np.float32)[:, None]
    fig = _new_figure((6.5, 4.0))
    ax = fig.subplots()
    if true_function is not None:
        truth = np.asarray(true_function(grid[:, 0]), dtype=np.float64).reshape(-1)
        if truth.shape != (len(grid),):
            raise ValueError(
                f"`true_function` must return one output per input: given {len(grid)} inputs it returned shape "
                f"{list(np.shape(true_function(grid[:, 0])))}."
            )
        ax.plot(grid[:, 0], truth, color="black", linestyle="--", label="true function")
    for k in steps:
        predictions = np.asarray(learner.adapt(support_x, support_y, steps=k)(grid, training=False))
        if predictions.shape != (len(grid), 1):
            raise ValueError(
                f"plot_regression_adaptation needs a model with one output, but the learner's model returns "
                f"shape {list(predictions.shape[1:])} per input."
            )
        ax.plot(grid[:, 0], predictions[:, 0], label=f"after {k} step{'' if k == 1 else 's'}")
    ax.scatter(support_x[:, 0], support_y[:, 0], color="red", zorder=3, label=f"{len(support_x)} support points")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=8)
    return fig


# -- embeddings ----------------------------------------------------------------


def plot_embeddings(learner, inputs, query_y=None, task=0):
    """A 2-D projection (PCA) of one task's support and query embeddings, coloured by class.

    Support embeddings are circles, queries triangles (grey without
    `query_y`) and the prototypes (class means of the support embeddings)
    stars. For embedding learners (Prototypical, Matching, R2D2, Meta
    Networks): the embeddings are the backbone's.

    Example:

    >>> inputs, query_y = next(iter(sampler.dataset(batch_size=1)))  # doctest: +SKIP
    >>> fig = plot_embeddings(protonet, inputs, query_y)  # doctest: +SKIP
    """
    from keras_meta.learners.embedding_based import EmbeddingMetaLearner

    if not isinstance(learner, EmbeddingMetaLearner):
        raise ValueError(
            f"plot_embeddings takes an embedding learner (Prototypical, Matching, R2D2, Meta Networks: an "
            f"EmbeddingMetaLearner), got {type(learner).__name__}, which has no embedding backbone."
        )
    support_x, support_y, query_x, labels = _episode_arrays(inputs, task, query_y)
    support, query = learner.embed_episode(tf.convert_to_tensor(support_x[None]), tf.convert_to_tensor(query_x[None]))
    support, query = np.asarray(support[0], np.float64), np.asarray(query[0], np.float64)
    kept = support_y >= 0  # -1: a padded slot
    support, support_y = support[kept], support_y[kept].astype(int)
    classes = np.unique(support_y)
    prototypes = np.stack([support[support_y == c].mean(axis=0) for c in classes])
    points = np.concatenate([support, query])
    centre = points.mean(axis=0)
    _, singular, components = np.linalg.svd(points - centre, full_matrices=False)
    components = components[:2]
    if len(components) < 2:  # one-dimensional embeddings, or a single point
        components = np.concatenate([components, np.zeros((2 - len(components), points.shape[1]))])
    variance = singular**2 / max(float(np.sum(singular**2)), 1e-300)
    variance = np.concatenate([variance, np.zeros(2)])[:2]

    def project(values):
        return (values - centre) @ components.T

    fig = _new_figure((5.5, 4.5))
    ax = fig.subplots()
    colours = [f"C{c % 10}" for c in range(int(classes.max()) + 1)]
    ax.scatter(*project(support).T, c=[colours[c] for c in support_y], marker="o", label="support")
    query_colours = "grey" if labels is None else [colours[int(c)] if 0 <= c < len(colours) else "grey"
                                                  for c in labels]
    ax.scatter(*project(query).T, c=query_colours, marker="^", alpha=0.6, label="query")
    ax.scatter(*project(prototypes).T, c=[colours[c] for c in classes], marker="*", s=300, edgecolors="black",
               label="prototypes")
    ax.set_xlabel(f"PC 1 ({variance[0]:.0%} of variance)")
    ax.set_ylabel(f"PC 2 ({variance[1]:.0%} of variance)")
    ax.set_title(f"Embeddings of task {task} ({len(classes)} classes)")
    for handle in ax.legend(fontsize=8).legend_handles:  # the marker of each kind, not a class colour
        handle.set_facecolor("white")
        handle.set_edgecolor("black")
    return fig


__all__ = ["plot_accuracy_vs_shots", "plot_adaptation", "plot_embeddings", "plot_episode", "plot_history",
           "plot_parameter_change", "plot_regression_adaptation"]
