"""Fixtures shared by the test modules (pytest finds them here without imports)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures_results import make_tree


@pytest.fixture(scope="module")
def results_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic results tree of :mod:`tests.support.fixtures_results`, written once per test module (so a
    module may add files to it without affecting the others)."""
    return make_tree(tmp_path_factory)


@pytest.fixture(scope="module")
def cached_mnist1d() -> Iterator[None]:
    """MNIST-1D generated once per test module that asks for it (each generation takes seconds)."""
    from experiments.workloads.data import registry as data_registry

    original = data_registry.load_mnist1d
    data_registry.load_mnist1d = functools.cache(original)
    yield
    data_registry.load_mnist1d = original
