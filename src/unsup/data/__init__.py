"""Data: readers, named datasets, few-label splits and batched augmentation."""

from .augment import AugmentConfig, augment, to_float
from .datasets import ImageDataset, has_unlabeled_split, load
from .splits import few_label_indices, parse_label_budgets

__all__ = ["AugmentConfig", "ImageDataset", "augment", "few_label_indices", "has_unlabeled_split", "load", "parse_label_budgets", "to_float"]
