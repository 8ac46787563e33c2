"""Which runs are seeds of one configuration, and the labels that tell configurations apart.

Runs are averaged only when they differ in nothing but the seed. A run's *configuration* is its
resolved setup as the runner records it in the manifest (``experiments/runner/manifest.py``): the workload
config without the keys that only say where data lives or how often state is saved or logged (the
same keys the runner leaves out of the run id, ``experiments/runner/spec.py``), the optimizer name, its
resolved settings (``optimizer_config``) and ``max_iters``. The seed is not part of it.

A figure or table names each configuration by a *label*: the optimizer name, followed by the settings
that tell it apart from the other configurations of the same figure, e.g. ``mlbfgs lr=0.2``:

- a workload setting (``epochs``, ``batch_size``, ``data.train_subset``...) that differs anywhere in
  the figure is named in every label, except the constant schedule of schedule-free optimizers, which the
  protocol implies;
- an optimizer setting (shown without its ``optimizer.`` prefix) is named when it differs between
  configurations of the same optimizer.

A run without a manifest is its own configuration unless its run id says otherwise: runner run ids
are ``<workload>__<optimizer>__s<seed>[__<hash of the configuration>]``, so the id without the seed
part identifies the configuration. Configurations that no setting tells apart get the last part of
that id in brackets.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

#: Workload keys that do not change what is trained (mirrors ``NON_IDENTITY_KEYS`` of the runner's
#: ``experiments/runner/spec.py``, plus the free-text description).
NON_IDENTITY_KEYS: tuple[str, ...] = (
    "data.dir",
    "data.num_workers",
    "checkpoint_interval",
    "eval_batch_size",
    "log_interval",
    "description",
    "name",
)

#: Sections of the recorded workload config that hold every optimizer's defaults, not this run's.
_OTHER_OPTIMIZERS: tuple[str, ...] = ("optimizers", "optimizer_defaults")

OPTIMIZER_PREFIX = "optimizer."

_SEED_PART = re.compile(r"__s\d+(?=__|$)")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (``{"data": {"augment": False}}`` ->
    ``{"data.augment": False}``); lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def manifest_settings(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration of a run (see the module docstring) as flat dotted keys, seed excluded.

    Optimizer settings come from ``optimizer_config`` (the resolved config) or, in older manifests,
    ``optimizer_settings``; they are keyed ``optimizer.<name>``. Missing sections are left out.
    """
    config = manifest.get("config")
    settings: dict[str, Any] = {}
    if isinstance(config, Mapping):
        tree = {k: v for k, v in config.items() if k not in _OTHER_OPTIMIZERS}
        settings = {k: v for k, v in flatten(tree).items() if k not in NON_IDENTITY_KEYS}
    settings["optimizer"] = manifest.get("optimizer")
    resolved = manifest.get("optimizer_config")
    if not isinstance(resolved, Mapping):
        resolved = manifest.get("optimizer_settings")
    if isinstance(resolved, Mapping):
        settings.update({OPTIMIZER_PREFIX + k: v for k, v in flatten(resolved).items()})
    if manifest.get("max_iters") is not None:
        settings["max_iters"] = manifest["max_iters"]
    return settings


def config_of_run_id(run_id: str) -> str:
    """The configuration part of a runner run id: the id without its ``__s<seed>`` part."""
    return _SEED_PART.sub("", run_id, count=1)


def config_key(settings: Mapping[str, Any]) -> str:
    """A short stable key of a configuration: the first 10 hex digits of the SHA-1 of its sorted JSON."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def format_value(value: Any) -> str:
    """A setting's value as written in a label: numbers in ``%g``, lists without spaces."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def _short(key: str) -> str:
    return key[len(OPTIMIZER_PREFIX):] if key.startswith(OPTIMIZER_PREFIX) else key


def _differing(settings: list[dict[str, Any]], keys: list[str]) -> list[str]:
    missing = object()
    return [k for k in keys if len({json.dumps(s.get(k, missing), sort_keys=True, default=repr)
                                    for s in settings}) > 1]


def _implied_by_optimizer(key: str, configs: Mapping[str, tuple[str, Mapping[str, Any]]]) -> bool:
    """Whether ``key`` differs only as the protocol implies: schedule-free optimizers train at a constant lr
    (``experiments/runner/spec.py``), so their ``schedule.kind`` says nothing about the comparison when every
    other configuration shares one schedule."""
    if key != "schedule.kind":
        return False
    from baselines.registry import is_schedule_free

    free, others = set(), set()
    for optimizer, settings in configs.values():
        if key in settings:
            try:
                (free if is_schedule_free(optimizer) else others).add(str(settings[key]))
            except (ValueError, ImportError, AttributeError):  # a name the registry cannot resolve (an old run)
                others.add(str(settings[key]))
    return free <= {"constant"} and len(others) <= 1


def label_configs(configs: Mapping[str, tuple[str, Mapping[str, Any]]]) -> dict[str, str]:
    """Labels of the configurations of one figure.

    ``configs`` maps each configuration key to ``(optimizer, settings)`` (settings as from
    :func:`manifest_settings`; empty when unknown). Returns key -> label, unique within the figure
    (see the module docstring for the rule).
    """
    # configurations without recorded settings (no manifest) are told apart by their key only
    every = [dict(s) for _, s in configs.values() if s]
    workload_keys = sorted({k for s in every for k in s if not k.startswith(OPTIMIZER_PREFIX) and k != "optimizer"})
    shared = [k for k in _differing(every, workload_keys) if not _implied_by_optimizer(k, configs)]
    labels: dict[str, str] = {}
    by_optimizer: dict[str, list[str]] = {}
    for key, (optimizer, _) in configs.items():
        by_optimizer.setdefault(optimizer, []).append(key)
    for optimizer, keys in by_optimizer.items():
        own = [dict(configs[k][1]) for k in keys]
        known = [s for s in own if s]
        opt_keys = sorted({k for s in known for k in s if k.startswith(OPTIMIZER_PREFIX)})
        named = _differing(known, opt_keys) if len(known) > 1 else []
        for key, settings in zip(keys, own, strict=True):
            parts = [f"{_short(k)}={format_value(settings[k])}" for k in [*named, *shared] if k in settings]
            labels[key] = " ".join([optimizer, *parts])
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    for key, label in labels.items():
        alone = len(by_optimizer[configs[key][0]]) == 1
        if counts[label] > 1 or not (configs[key][1] or alone):  # nothing recorded tells it apart: its id
            labels[key] = f"{label} [{key.rsplit('__', 1)[-1]}]"
    return labels


def with_labels(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (rows of one figure, with the ``config`` and ``settings`` columns of
    :func:`analysis.load.load_runs`) with a ``label`` column naming each row's configuration.

    A frame without a ``config`` column (assembled by hand) counts every (workload, optimizer) as one
    configuration."""
    if "config" not in runs:
        runs = runs.assign(config=runs["workload"].astype(str) + "__" + runs["optimizer"].astype(str))
    if "settings" not in runs:
        runs = runs.assign(settings="")
    first = runs.drop_duplicates("config")
    configs = {
        str(c): (str(o), json.loads(s) if isinstance(s, str) and s else {})
        for c, o, s in zip(first["config"], first["optimizer"], first["settings"], strict=True)
    }
    labels = label_configs(configs)
    out = runs.copy()
    out["label"] = out["config"].map(labels)
    return out
