"""What one run is: workload config (with overrides), optimizer, seed, length; its id and file paths.

Run ids, ``<workload>__<optimizer>__s<seed>[__<hash>]``, name files and directories. For a built-in
workload the hash covers what differs from the workload's own JSON file (none: no hash), so the ids of
runs at its defaults stay short and stable. A workload given as a file contributes its ``name`` key, and
its hash covers its whole resolved content (what differs from the dataclasses' defaults,
:func:`canonical_identity`): editing the file changes the id, and the same content at another path has
the same id (the path, ``config.file``, is not part of it). An optimizer named by import path has its
``:`` and ``.`` replaced (:func:`optimizer_id`): ``torch.optim:RAdam`` -> ``torch-optim--RAdam``,
``my_pkg.opt:Lion`` -> ``my_pkg-opt--Lion``. Python identifiers hold neither ``-`` nor ``--``, so
the mapping is one-to-one (distinct paths, distinct ids) and no dot can be taken for a file
extension; the manifest and the CSV rows keep the import path itself. Built-in names are unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from baselines.registry import default_config, is_schedule_free
from experiments.workloads.config import (
    DataConfig,
    ModelConfig,
    ScheduleConfig,
    WorkloadConfig,
    apply_overrides,
    load_workload_dict,
    override_hash,
    workload_file,
    workload_from_dict,
)

# Settings that change where data comes from, how often state is saved or logged, or how the workload is
# described, not what is trained: they do not enter the run id.
NON_IDENTITY_KEYS = ("data.dir", "data.num_workers", "checkpoint_interval", "eval_batch_size", "log_interval",
                     "description")


@dataclass(frozen=True)
class RunSpec:
    """One run, the descriptor every part passes on: the suite plans it, hands it to the runner as a
    JSON request (:meth:`request`, read back by :meth:`from_request`), the runner trains and records it."""

    workload: WorkloadConfig
    optimizer: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)
    max_iters: int | None = None
    run_id: str = ""
    workload_arg: str = ""  # the workload as given: a built-in name or a workload file's path

    def request(self) -> dict[str, Any]:
        """What rebuilds this spec (:meth:`from_request`): JSON values only."""
        return {"workload": self.workload_arg or self.workload.name, "optimizer": self.optimizer, "seed": self.seed,
                "overrides": dict(self.overrides), "max_iters": self.max_iters}

    @classmethod
    def from_request(cls, request: dict[str, Any]) -> RunSpec:
        """The spec of a :meth:`request` (ValueError naming an unknown or missing key)."""
        keys = {"workload", "optimizer", "seed", "overrides", "max_iters"}
        unknown, missing = set(request) - keys, {"workload", "optimizer", "seed"} - set(request)
        if unknown or missing:
            raise ValueError(f"run request: keys must be {sorted(keys)} (workload, optimizer and seed required); "
                             f"unknown {sorted(unknown)}, missing {sorted(missing)}")
        return make_run_spec(request["workload"], request["optimizer"], request["seed"],
                             overrides=request.get("overrides") or {}, max_iters=request.get("max_iters"))

    def cli_args(self) -> list[str]:
        """The per-run arguments of ``python -m experiments.run`` that train this run alone (for manifests and
        people; the suite passes :meth:`request` instead)."""
        args = ["--workload", self.workload_arg or self.workload.name, "--optimizer", self.optimizer,
                "--seed", str(self.seed)]
        overrides = dict(self.overrides)
        if "epochs" in overrides:
            args += ["--epochs", str(overrides.pop("epochs"))]
        if self.max_iters is not None:
            args += ["--max-iters", str(self.max_iters)]
        if overrides:
            args += ["--set", *(f"{key}={cli_value(value)}" for key, value in overrides.items())]
        return args

    @cached_property
    def optimizer_settings(self) -> dict[str, Any]:
        """The optimizer's keyword arguments for this run (resolved once, from the workload's sections)."""
        return self.workload.optimizer_settings(self.optimizer)

    def optimizer_config(self) -> dict[str, Any]:
        """Every hyper-parameter the optimizer uses: the registry's defaults updated by the run's settings
        (what the manifest records as ``optimizer_config``)."""
        return {**default_config(self.optimizer), **self.optimizer_settings}

    def csv_path(self, out: str | Path) -> Path:
        return Path(out) / self.workload.name / f"{self.run_id}.csv"

    def manifest_path(self, out: str | Path) -> Path:
        return Path(out) / self.workload.name / f"{self.run_id}.json"

    def lock_path(self, out: str | Path) -> Path:
        """The file a process training the run locks (experiments/runner/runlock.py)."""
        return Path(out) / self.workload.name / f"{self.run_id}.lock"

    def curvature_path(self, out: str | Path) -> Path:
        return Path(out) / self.workload.name / f"{self.run_id}.curvature.csv"

    def checkpoint_dir(self, root: str | Path) -> Path:
        return Path(root) / self.workload.name / self.run_id


def _identity_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """A workload's JSON tree without the keys that do not identify a run (the optimizer sections and
    :data:`NON_IDENTITY_KEYS`); changes ``tree`` in place."""
    tree.pop("optimizers", None)
    tree.pop("optimizer_defaults", None)
    for key in NON_IDENTITY_KEYS:
        section, _, leaf = key.rpartition(".")
        node = tree[section] if section else tree
        node.pop(leaf, None)
    return tree


def _identity(raw: dict[str, Any], optimizer: str, max_iters: int | None) -> dict[str, Any]:
    cfg = workload_from_dict(raw)
    return {"workload": _identity_tree(cfg.to_dict()), "optimizer": cfg.optimizer_settings(optimizer),
            "max_iters": max_iters}


def _field_defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def canonical_identity() -> dict[str, Any]:
    """The identity a workload file's runs are hashed against: the defaults of the config dataclasses
    (:class:`~experiments.workloads.config.WorkloadConfig` and its sections), no optimizer settings, no iteration cap.

    Required keys (``name``, ``data.name``, ``model.name``, ``epochs``, ``batch_size``) have no default, so
    they always enter the hash; a key later added with a default that changes nothing leaves ids alone.
    """
    tree = _field_defaults(WorkloadConfig)
    tree.update(data=_field_defaults(DataConfig), model=_field_defaults(ModelConfig),
                schedule=dataclasses.asdict(ScheduleConfig()))
    return {"workload": _identity_tree(tree), "optimizer": {}, "max_iters": None}


def optimizer_id(optimizer: str) -> str:
    """The optimizer's part of a run id: a built-in name as is; an import path with ``:`` -> ``--`` and
    ``.`` -> ``-`` (``torch.optim:RAdam`` -> ``torch-optim--RAdam``; one-to-one, see the module docstring)."""
    return optimizer.replace(":", "--").replace(".", "-")


def _schedule_for(raw: dict[str, Any], optimizer: str) -> dict[str, Any]:
    """A schedule-free optimizer (Defazio et al. 2024) averages its iterates in place of a schedule: it trains
    at a constant lr after the workload's warm-up (``schedule.kind`` "constant"), as its authors run it, unless
    the run sets ``schedule.kind`` itself (overrides come after). Other optimizers keep the workload's."""
    if not is_schedule_free(optimizer):
        return raw
    return {**raw, "schedule": {**raw.get("schedule", {}), "kind": "constant"}}


def make_run_spec(
    workload: str,
    optimizer: str,
    seed: int,
    *,
    overrides: dict[str, Any] | None = None,
    epochs: int | None = None,
    max_iters: int | None = None,
) -> RunSpec:
    """Resolve the config and the run id ``<workload>__<optimizer>__s<seed>[__<hash>]`` (the hash: see the
    module docstring).

    ``workload``: a built-in name or the path of a workload JSON file (its ``name`` key then names the
    run; its absolute path goes to ``config.file``, outside the identity). ``optimizer``: a built-in name
    or an import path ``module.path:Class`` (its run-id form: :func:`optimizer_id`). ValueError for a bad
    workload, seed, length or override, naming it.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if max_iters is not None and max_iters <= 0:
        raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    default_raw = _schedule_for(load_workload_dict(workload), optimizer)
    raw = apply_overrides(default_raw, overrides, optimizer)
    cfg = workload_from_dict(raw)
    path = workload_file(workload)
    if path is not None:
        cfg = replace(cfg, file=str(path))
    # a built-in's reference is its own file (committed run ids depend on it); a file's, the dataclass defaults
    reference = _identity(default_raw, optimizer, None) if path is None else canonical_identity()
    suffix = override_hash(reference, _identity(raw, optimizer, max_iters))
    run_id = f"{default_raw['name']}__{optimizer_id(optimizer)}__s{seed}" + (f"__{suffix}" if suffix else "")
    return RunSpec(cfg, optimizer, seed, overrides, max_iters, run_id, str(workload))


def cli_value(value: Any) -> str:
    """A ``--set`` value as the runner parses it: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)
