"""Datasets (readers for public IQA layouts and a generic CSV) and content-disjoint splits."""
from iqa.data.datasets import FORMATS, Dataset, DatasetError, Record, detect_format, load_dataset
from iqa.data.splits import SplitSet, load_splits, make_splits, save_splits

__all__ = ["FORMATS", "Dataset", "DatasetError", "Record", "detect_format", "load_dataset",
           "SplitSet", "load_splits", "make_splits", "save_splits"]
