"""The command lines' ``--set key=value`` syntax (``python -m experiments.run`` and ``python -m
experiments.suite``): text to typed overrides, before any workload is read. Applying them to a
workload is :func:`experiments.workloads.config.apply_overrides`."""

from __future__ import annotations

import json
from typing import Any


def parse_value(text: str) -> Any:
    """JSON value if it parses (numbers, true/false/null, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out
