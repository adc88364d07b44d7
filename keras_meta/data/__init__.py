"""Episodes: N-way K-shot tasks from any labelled data, as `tf.data` pipelines."""

from keras_meta.data.episodes import QUERY_X, SUPPORT_X, SUPPORT_Y, EpisodeSampler
from keras_meta.data.sources import load_image_folder, read_class_folders
from keras_meta.data.tasks import TaskDistribution

__all__ = [
    "EpisodeSampler",
    "TaskDistribution",
    "load_image_folder",
    "read_class_folders",
    "SUPPORT_X",
    "SUPPORT_Y",
    "QUERY_X",
]
