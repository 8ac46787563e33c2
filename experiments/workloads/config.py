"""Workload configs: one JSON file per workload in ``experiments/workloads/``, read into dataclasses.

A new workload is a new file, not code: a built-in one in ``experiments/workloads/`` (named by its file
name), or any JSON file of the same schema given by path (``--workload path/to/my.json``: validated
alike; its runs are named by its ``name`` key, which must not be a built-in workload's name, and
their manifests record the file in ``config.file``). ``--set key=value`` overrides address the JSON
tree with dotted keys (``batch_size=64``, ``data.train_subset=5000``, ``schedule.warmup_iters=100``);
the prefix ``optimizer.`` addresses the settings of the optimizer being run (``optimizer.lr=0.05``).
``amp`` (``null``, ``"bf16"`` or ``"fp16"``; ``--amp`` sets it) is the run's mixed precision
(:mod:`experiments.runner.amp`); like every workload key it enters the run id when set.

The ``optimizers`` section is keyed by optimizer name: a built-in name or an import path
``module.path:Class`` (``"torch.optim:RAdam": {"lr": 0.003}``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKLOAD_DIR = Path(__file__).resolve().parent
SCHEDULE_KINDS = ("cosine", "constant")
# a workload's ``amp`` key: autocast dtype of the forward pass and loss (None: the parameters' precision);
# experiments/runner/amp.py says what each does
AMP_MODES = ("bf16", "fp16")
# a workload name names directories and run ids (file names): letters, digits, '-' and '_'
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
NOT_JSON_KEYS = ("file",)  # WorkloadConfig fields set by the loader, not by the JSON tree


@dataclass(frozen=True)
class DataConfig:
    """Where a workload's data comes from and which part of it is used."""

    name: str
    dir: str | None = None
    train_subset: int | None = None  # first N training examples (None: all)
    test_subset: int | None = None  # first N test examples used by evaluations (None: all)
    augment: bool = False
    image_size: int | None = None  # image-folder datasets only
    num_workers: int = 0  # image-folder datasets only (DataLoader workers)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleConfig:
    """Per-iteration LR factor: linear warm-up, then cosine from 1 to ``final_fraction``.

    lr_t = lr * (f + (1 - f) * (1 + cos(pi * t' / T')) / 2), with t' and T' counted after warm-up;
    the paper's lr 0.1 -> 1e-4 is final_fraction = 1e-3.
    """

    kind: str = "cosine"
    final_fraction: float = 1e-3
    warmup_iters: int = 0


@dataclass(frozen=True)
class WorkloadConfig:
    name: str
    data: DataConfig
    model: ModelConfig
    epochs: int
    batch_size: int
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    optimizer_defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    eval_interval: int | None = None  # iterations between evaluations (None: once per epoch)
    eval_batch_size: int = 1000
    checkpoint_interval: int = 200  # iterations between checkpoints (also at epoch ends 30 s apart)
    log_interval: int = 1  # iterations between train rows of the CSV (the last iteration is always logged)
    stop_on_nonfinite: bool = True  # stop the run when the training loss becomes NaN/inf
    amp: str | None = None  # mixed precision: None (off), "bf16" or "fp16" (experiments/runner/amp.py)
    file: str | None = None  # the JSON file given by path (absolute); None for a built-in workload

    def optimizer_settings(self, optimizer: str) -> dict[str, Any]:
        """Keyword arguments for ``build_optimizer``: the shared defaults updated by the named entry.

        For an optimizer named by import path (``module.path:Class``) a shared default
        (``optimizer_defaults``, e.g. ``weight_decay``) goes in only if the class's constructor has a
        parameter of that name (its module is imported to see); its own ``optimizers`` entry (and
        ``--set optimizer.x=...``) goes in whole, an argument the constructor lacks being an error.
        Built-in optimizers take every shared default.
        """
        settings = dict(self.optimizer_defaults)
        from baselines.registry import accepted_arguments, is_import_path

        if is_import_path(optimizer) and settings:
            accepted = set(accepted_arguments(optimizer))
            settings = {k: v for k, v in settings.items() if k in accepted}
        settings.update(self.optimizers.get(optimizer, {}))
        return settings

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON tree (``file`` and ``amp`` only when set: the trees of runs without them, and so
        their run ids and recorded configurations, are those of the runs written before the keys existed)."""
        tree = dataclasses.asdict(self)
        for key in ("file", "amp"):
            if tree[key] is None:
                del tree[key]
        return tree


def available_workloads() -> list[str]:
    """The built-in workload names (files of ``experiments/workloads/``); any workload JSON file is accepted too."""
    return sorted(p.stem for p in WORKLOAD_DIR.glob("*.json"))


def _check_keys(section: str, raw: dict[str, Any], cls: type) -> None:
    if not isinstance(raw, dict):
        raise ValueError(f"{section} must be a JSON object (a mapping of keys), got {raw!r}")
    allowed = {f.name for f in dataclasses.fields(cls)} - set(NOT_JSON_KEYS)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {unknown}; allowed keys: {sorted(allowed)}")


def _positive_int(section: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{section} must be a positive integer, got {value!r}")


def workload_from_dict(raw: dict[str, Any]) -> WorkloadConfig:
    """Validate a raw (JSON) workload tree and build the dataclasses."""
    raw = copy.deepcopy(raw)
    _check_keys("workload", raw, WorkloadConfig)
    for key in ("name", "data", "model", "epochs", "batch_size"):
        if key not in raw:
            raise ValueError(f"workload: missing required key {key!r}")
    name = raw["name"]
    _check_keys(f"{name}.data", raw["data"], DataConfig)
    _check_keys(f"{name}.model", raw["model"], ModelConfig)
    _check_keys(f"{name}.schedule", raw.get("schedule", {}), ScheduleConfig)
    data = DataConfig(**raw.pop("data"))
    model = ModelConfig(**raw.pop("model"))
    schedule = ScheduleConfig(**raw.pop("schedule", {}))
    cfg = WorkloadConfig(data=data, model=model, schedule=schedule, **raw)
    _validate(cfg)
    return cfg


def _validate(cfg: WorkloadConfig) -> None:
    n = cfg.name
    if not isinstance(n, str) or not NAME_PATTERN.fullmatch(n):
        raise ValueError(f"workload: 'name' must be letters, digits, '-' and '_' (it names the runs' directory and "
                         f"files), got {n!r}")
    _positive_int(f"{n}.epochs", cfg.epochs)
    _positive_int(f"{n}.batch_size", cfg.batch_size)
    _positive_int(f"{n}.eval_batch_size", cfg.eval_batch_size)
    _positive_int(f"{n}.checkpoint_interval", cfg.checkpoint_interval)
    _positive_int(f"{n}.log_interval", cfg.log_interval)
    _positive_int(f"{n}.eval_interval", cfg.eval_interval, allow_none=True)
    _positive_int(f"{n}.data.train_subset", cfg.data.train_subset, allow_none=True)
    _positive_int(f"{n}.data.test_subset", cfg.data.test_subset, allow_none=True)
    if cfg.amp is not None and cfg.amp not in AMP_MODES:
        raise ValueError(f"{n}.amp must be null (off) or one of {list(AMP_MODES)}, got {cfg.amp!r}")
    if cfg.schedule.kind not in SCHEDULE_KINDS:
        raise ValueError(f"{n}.schedule.kind must be one of {list(SCHEDULE_KINDS)}, got {cfg.schedule.kind!r}")
    if not 0.0 <= cfg.schedule.final_fraction <= 1.0:
        raise ValueError(f"{n}.schedule.final_fraction must lie in [0, 1], got {cfg.schedule.final_fraction!r}")
    if cfg.schedule.warmup_iters < 0:
        raise ValueError(f"{n}.schedule.warmup_iters must be >= 0, got {cfg.schedule.warmup_iters!r}")
    from baselines.registry import check_optimizer_name

    for opt_name, settings in cfg.optimizers.items():
        try:
            check_optimizer_name(opt_name, resolve=False)
        except ValueError as err:
            raise ValueError(f"{n}.optimizers: {err}") from None
        if not isinstance(settings, dict):
            raise ValueError(f"{n}.optimizers.{opt_name} must be a mapping of keyword arguments")


def is_workload_file(workload: str) -> bool:
    """Whether ``--workload`` names a JSON file (ends in ``.json`` or holds a path separator), not a built-in."""
    return workload.endswith(".json") or "/" in workload or "\\" in workload


def workload_file(workload: str) -> Path | None:
    """The absolute path of a workload given as a file (None for a built-in name); ValueError if it is absent."""
    if not is_workload_file(workload):
        return None
    path = Path(workload).expanduser()
    if not path.is_file():
        raise ValueError(f"workload: no file {workload!r} (a workload is one of {available_workloads()} or the path "
                         "of a workload JSON file)")
    return path.resolve()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a workload is a JSON object, got {type(raw).__name__}")
    return raw


def load_workload_dict(name: str) -> dict[str, Any]:
    """The raw JSON tree of a workload: a built-in name, or the path of a workload JSON file.

    ValueError listing the valid names for an unknown name; for a file, when it is absent, is not a JSON
    object, or its ``name`` key is missing, malformed or a built-in workload's name (runs are filed under
    it). The tree's schema is checked by :func:`workload_from_dict`.
    """
    path = workload_file(name)
    if path is not None:
        raw = _read_json(path)
        if "name" not in raw:
            raise ValueError(f"{path}: missing required key 'name' (names the workload's runs)")
        if raw["name"] in available_workloads():
            raise ValueError(f"{path}: 'name' is {raw['name']!r}, a built-in workload's name; give the file's "
                             f"workload its own name (built-in: {available_workloads()})")
        return raw
    path = WORKLOAD_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"workload must be one of {available_workloads()} or the path of a workload JSON file "
                         f"(ending in .json), got {name!r}")
    raw = _read_json(path)
    if raw.get("name") != name:
        raise ValueError(f"{path}: 'name' is {raw.get('name')!r}, expected {name!r} (the file name)")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], optimizer: str) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides applied (``optimizer.`` = the run's optimizer)."""
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] == "optimizer":
            parts = ["optimizers", optimizer, *parts[1:]]
            raw.setdefault("optimizers", {}).setdefault(optimizer, {})
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def override_hash(default: dict[str, Any], effective: dict[str, Any]) -> str:
    """Short hash of what differs between two resolved configs ('' when nothing does)."""
    diff = _diff(default, effective, "")
    if not diff:
        return ""
    blob = json.dumps(diff, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:8]


def _diff(a: Any, b: Any, prefix: str) -> dict[str, Any]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, Any] = {}
        for key in sorted(set(a) | set(b)):
            out.update(_diff(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return {} if a == b else {prefix.rstrip("."): b}
