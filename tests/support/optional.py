"""Test parameters for optimizer names whose optional library may be missing (the peers'): skipped, not failed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from baselines.registry import installed_optimizers


def optimizer_params(names: Iterable[str]) -> list[Any]:
    """``names`` as pytest parameters, those that do not build here (their library missing) marked skip."""
    installed = set(installed_optimizers())
    return [pytest.param(name, marks=pytest.mark.skipif(name not in installed,
                                                        reason=f"{name}: its optional library is not installed"))
            for name in names]
