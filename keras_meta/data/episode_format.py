"""The episode format: what samplers yield and every learner, op and converter reads.

An episode batch is `(inputs, query_labels)` or, with padding,
`(inputs, query_labels, sample_weight)`::

    inputs = {SUPPORT_X: [B, S, ...], SUPPORT_Y: [B, S] int32, QUERY_X: [B, Q, ...]}
    query_labels: [B, Q] int32, classes numbered 0..N-1 within each task

Episodes of different sizes in one batch (variable ways or shots) are padded
to the largest: a padded support slot has the label `PADDING_LABEL`; a padded
query slot has label 0 and sample weight 0. A class with no support example
in a task gets the logit `MASKED_LOGIT`, so it is never predicted and adds
nothing to a softmax.

Example:

>>> import numpy as np
>>> from keras_meta.data.episode_format import MASKED_LOGIT, PADDING_LABEL, QUERY_X, SUPPORT_X, SUPPORT_Y
>>> inputs = {SUPPORT_X: np.zeros((1, 3, 2)), SUPPORT_Y: np.array([[0, 1, PADDING_LABEL]]),
...           QUERY_X: np.zeros((1, 4, 2))}
>>> sorted(inputs), float(np.exp(MASKED_LOGIT))
(['query_x', 'support_x', 'support_y'], 0.0)
"""

SUPPORT_X = "support_x"
"""The key of the support examples `[B, S, ...]` in an episode's inputs."""
SUPPORT_Y = "support_y"
"""The key of the support labels `[B, S]` (int32, `0..N-1` within each task) in an episode's inputs."""
QUERY_X = "query_x"
"""The key of the query examples `[B, Q, ...]` in an episode's inputs."""
PADDING_LABEL = -1
"""The label of a padded support slot."""
MASKED_LOGIT = -1e9
"""The logit of a class with no support example in a task."""
