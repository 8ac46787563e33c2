"""Fixtures shared by the test modules (pytest finds them here without imports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures_results import make_tree


@pytest.fixture(scope="module")
def results_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic results tree of :mod:`tests.fixtures_results`, written once per test module (so a
    module may add files to it without affecting the others)."""
    return make_tree(tmp_path_factory)
