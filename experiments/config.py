"""Workload configs: one JSON file per workload in ``experiments/workloads/``, read into dataclasses.

A new workload is a new file, not code. ``--set key=value`` overrides address the JSON tree with dotted
keys (``batch_size=64``, ``data.train_subset=5000``, ``schedule.warmup_iters=100``); the prefix
``optimizer.`` addresses the settings of the optimizer being run (``optimizer.lr=0.05``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKLOAD_DIR = Path(__file__).resolve().parent / "workloads"
SCHEDULE_KINDS = ("cosine", "constant")


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

    def optimizer_settings(self, optimizer: str) -> dict[str, Any]:
        """Keyword arguments for ``build_optimizer``: the shared defaults updated by the named entry."""
        settings = dict(self.optimizer_defaults)
        settings.update(self.optimizers.get(optimizer, {}))
        return settings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def available_workloads() -> list[str]:
    return sorted(p.stem for p in WORKLOAD_DIR.glob("*.json"))


def _check_keys(section: str, raw: dict[str, Any], cls: type) -> None:
    allowed = {f.name for f in dataclasses.fields(cls)}
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
    _positive_int(f"{n}.epochs", cfg.epochs)
    _positive_int(f"{n}.batch_size", cfg.batch_size)
    _positive_int(f"{n}.eval_batch_size", cfg.eval_batch_size)
    _positive_int(f"{n}.checkpoint_interval", cfg.checkpoint_interval)
    _positive_int(f"{n}.log_interval", cfg.log_interval)
    _positive_int(f"{n}.eval_interval", cfg.eval_interval, allow_none=True)
    _positive_int(f"{n}.data.train_subset", cfg.data.train_subset, allow_none=True)
    _positive_int(f"{n}.data.test_subset", cfg.data.test_subset, allow_none=True)
    if cfg.schedule.kind not in SCHEDULE_KINDS:
        raise ValueError(f"{n}.schedule.kind must be one of {list(SCHEDULE_KINDS)}, got {cfg.schedule.kind!r}")
    if not 0.0 <= cfg.schedule.final_fraction <= 1.0:
        raise ValueError(f"{n}.schedule.final_fraction must lie in [0, 1], got {cfg.schedule.final_fraction!r}")
    if cfg.schedule.warmup_iters < 0:
        raise ValueError(f"{n}.schedule.warmup_iters must be >= 0, got {cfg.schedule.warmup_iters!r}")
    for opt_name, settings in cfg.optimizers.items():
        if not isinstance(settings, dict):
            raise ValueError(f"{n}.optimizers.{opt_name} must be a mapping of keyword arguments")


def load_workload_dict(name: str) -> dict[str, Any]:
    """The raw JSON tree of a workload; ValueError listing the valid names for an unknown one."""
    path = WORKLOAD_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"workload must be one of {available_workloads()}, got {name!r}")
    with open(path) as f:
        raw = json.load(f)
    if raw.get("name") != name:
        raise ValueError(f"{path}: 'name' is {raw.get('name')!r}, expected {name!r} (the file name)")
    return raw


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
