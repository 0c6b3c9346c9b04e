"""Data for dagnet: built-in data sets, user files, batching, splits, standardisation and augmentation.

Every data set is map-style and yields dicts of tensors named after a spec's
inputs and targets, e.g. {"image": (1, 8, 8) float, "label": () long}.
"""

from dagnet.data.base import ArrayDataset, DataError, Field, collate, preprocessing_of, split_dataset
from dagnet.data.checks import check_example_shapes, check_labels
from dagnet.data.datasets import (BUILTIN, SOURCES, DataSplit, check_source, data_source, digits, load_dataset,
                                  photos, prepare_data)
from dagnet.data.files import ImageFolder, load_arrays
from dagnet.data.synthetic import SHAPE_CLASSES, gestures, shapes
from dagnet.data.transforms import AugmentConfig, Augmented, Standardized, channel_stats

__all__ = [
    "BUILTIN",
    "SHAPE_CLASSES",
    "SOURCES",
    "ArrayDataset",
    "AugmentConfig",
    "Augmented",
    "DataError",
    "DataSplit",
    "Field",
    "ImageFolder",
    "Standardized",
    "channel_stats",
    "check_source",
    "check_example_shapes",
    "check_labels",
    "collate",
    "data_source",
    "digits",
    "gestures",
    "load_arrays",
    "load_dataset",
    "photos",
    "prepare_data",
    "preprocessing_of",
    "shapes",
    "split_dataset",
]
