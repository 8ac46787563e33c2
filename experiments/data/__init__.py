"""Datasets of the suite behind one function, ``build_data(config)``."""

from experiments.data.base import DataSource
from experiments.data.errors import DatasetMissingError
from experiments.data.registry import available_datasets, build_data

__all__ = ["DataSource", "DatasetMissingError", "available_datasets", "build_data"]
