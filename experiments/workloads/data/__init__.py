"""Datasets of the suite behind one function, ``build_data(config)``; ``register_dataset`` and import
paths (``"my_pkg.data:build_data"``) add more (see experiments/workloads/data/registry.py)."""

from experiments.workloads.data.base import DataSource
from experiments.workloads.data.errors import DatasetMissingError
from experiments.workloads.data.registry import available_datasets, build_data, dataset_builder, register_dataset

__all__ = ["DataSource", "DatasetMissingError", "available_datasets", "build_data", "dataset_builder",
           "register_dataset"]
