"""A run's record against the code that would skip or resume it.

A run id hashes the settings a run sets (:mod:`experiments.runner.spec`), not the registry's defaults. After a
default changes (e.g. mL-BFGS's ``blocks``), a run recorded under the old default keeps its id: the suite would
skip it as done, or resume its checkpoint under the new setting, and a table would mix two configurations under
one name. The runner therefore compares the manifest's ``optimizer_config`` with what the code builds now and
refuses a difference (:func:`experiments.runner.training.skip_finished`); the suite reports it, or with
``--retrain-stale`` sets the run's files aside and retrains it (:mod:`experiments.suite.execution`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from experiments.runner.atomic import read_json
from experiments.runner.spec import RunSpec

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # a callable default prints differently in every process


def _without_addresses(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_addresses(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_addresses(v) for v in value]
    return _ADDRESS.sub("", value) if isinstance(value, str) else value


def _as_json(value: Any) -> Any:
    """``value`` as JSON reads it back, with memory addresses dropped from text (also from manifests that
    recorded a callable's ``str``)."""
    return _without_addresses(json.loads(json.dumps(value, sort_keys=True, default=str)))


def config_drift(spec: RunSpec, manifest_path: str | Path) -> dict[str, tuple[Any, Any]]:
    """The optimizer settings the run's manifest records that this code would build otherwise, as
    ``{name: (recorded, now)}``; empty without a manifest or a recorded config. Settings added since the run
    (absent from its record) are not drift: a new setting's default keeps the old behaviour. Empty too when the
    optimizer's optional library is missing (building it reports that)."""
    path = Path(manifest_path)
    if not path.is_file():
        return {}
    recorded = _as_json((read_json(path) or {}).get("optimizer_config") or {})
    try:
        now = _as_json(spec.optimizer_config())
    except ModuleNotFoundError:  # an optional library missing: the run cannot be built, let alone checked
        return {}
    return {k: (recorded[k], now[k]) for k in sorted(recorded.keys() & now.keys()) if recorded[k] != now[k]}


def drift_message(run_id: str, drift: dict[str, tuple[Any, Any]]) -> str:
    """The error for a run whose record and code disagree, naming each setting."""
    what = ", ".join(f"{k}: recorded {old!r}, now {new!r}" for k, (old, new) in drift.items())
    return (f"{run_id}: its manifest records optimizer settings this code no longer builds for the same run id "
            f"({what}); retrain it with --force (its files are replaced) or set the recorded value explicitly")
