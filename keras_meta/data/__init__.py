"""Episodes: N-way K-shot tasks from any labelled data, as `tf.data` pipelines."""

from keras_meta.data import episode_format
from keras_meta.data.episode_format import QUERY_X, SUPPORT_X, SUPPORT_Y
from keras_meta.data.episodes import EpisodeSampler
from keras_meta.data.sources import image_decoder, load_image_folder, read_class_folders
from keras_meta.data.tasks import TaskDistribution

__all__ = [
    "EpisodeSampler",
    "episode_format",
    "TaskDistribution",
    "image_decoder",
    "load_image_folder",
    "read_class_folders",
    "SUPPORT_X",
    "SUPPORT_Y",
    "QUERY_X",
]
