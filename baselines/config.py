"""Small validated configuration dataclasses shared by every optimizer of the registry.

Each optimizer declares a frozen dataclass of its hyper-parameters (with documented defaults);
:func:`make_config` builds it from keyword arguments, rejecting unknown names with a ``ValueError``
that lists the valid ones, and each dataclass validates its values in ``__post_init__`` through the
``check_*`` helpers below (``ValueError`` naming the argument and the allowed range).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def make_config(cls: type[C], optimizer: str, kwargs: dict[str, Any]) -> C:
    """``cls(**kwargs)`` after checking that every key is a field of ``cls``."""
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown argument(s) {unknown} for optimizer {optimizer!r}; valid arguments: {sorted(valid)}"
        )
    return cls(**kwargs)


def check_nonneg(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0.0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0.0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def check_unit_interval(name: str, value: float, *, closed_right: bool = False) -> None:
    """``0 <= value < 1`` (or ``<= 1`` with ``closed_right``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and 0.0 <= value and (value <= 1.0 if closed_right else value < 1.0)
    if not ok:
        upper = "1]" if closed_right else "1)"
        raise ValueError(f"{name} must lie in [0, {upper}, got {value!r}")


def check_int(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_bool(name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
