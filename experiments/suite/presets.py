"""Suite presets: ``experiments/suite/presets/<name>.json`` lists the (workload x optimizer x seed) grid."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from experiments.workloads.config import (
    NAME_PATTERN,
    apply_overrides,
    available_workloads,
    is_workload_file,
    load_workload_dict,
    workload_from_dict,
)

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True)
class PresetRuns:
    """One workload with the optimizers to run it with and the run-length / config overrides."""

    workload: str
    optimizers: tuple[str, ...] | str  # names, or "all" (every registered optimizer)
    epochs: int | None = None
    max_iters: int | None = None
    set: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None  # this workload's seeds (default: the preset's)
    trial_fraction: float = 1.0  # tuning trials run this fraction of the epochs (experiments/suite/search.py)
    # data-parallel processes per run (torchrun --nproc_per_node), one GPU each: used when the machine has
    # at least two GPUs (as many as it has, up to this), else the run trains in one process
    # (experiments/suite/execution.py: launch_width)
    nproc_per_node: int = 1
    # a workload given by file in the preset: its absolute path (``workload`` is then the file's 'name' key);
    # set by load_preset, not a preset key
    workload_file: str | None = None

    @property
    def workload_arg(self) -> str:
        """What ``--workload`` of ``python -m experiments.run`` gets: the workload file, else its name."""
        return self.workload_file or self.workload


@dataclass(frozen=True)
class Preset:
    name: str
    runs: tuple[PresetRuns, ...]
    seeds: tuple[int, ...] = (0,)
    results: str = ""  # output folder (runs in <results>/runs); set by the command line, default runs/<name>
    description: str = ""
    analysis_args: tuple[str, ...] = ()  # arguments of `python -m analysis` (default: --results <results>)
    # learning-rate sweep before the finals (suite/stages/sweep.py): {"seed", "grids": {optimizer: [lr, ...]}}
    sweep: dict[str, Any] = field(default_factory=dict)
    # beta ablation after them: [{"workload", "optimizer", "betas": [...]}]
    ablation: tuple[dict[str, Any], ...] = ()
    # external tuning (experiments/suite/search.py): {"trials", "seed", "search_seed", "spaces": {optimizer: space}}
    tuning: dict[str, Any] = field(default_factory=dict)


PRESET_KEYS = tuple(f.name for f in fields(Preset) if f.name != "results")  # results: --out
RUN_KEYS = tuple(f.name for f in fields(PresetRuns) if f.name != "workload_file")
REQUIRED_KEYS = {"name": "it names the record suite_<name>.json and the default output folder runs/<name>",
                 "runs": '[{"workload": ..., "optimizers": [...]}, ...]'}
REQUIRED_RUN_KEYS = {"workload": "a built-in workload's name or the path of a workload JSON file",
                     "optimizers": "'all' or a list of optimizer names"}


def _check_keys(where: str, obj: dict[str, Any], allowed: tuple[str, ...], required: dict[str, str]) -> None:
    """ValueError naming ``where`` for a key not in ``allowed`` or a missing ``required`` key (with what it
    holds)."""
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    for key, what in required.items():
        if key not in obj:
            raise ValueError(f"{where}: missing required key {key!r} ({what})")


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (``quick``, ``full``: :func:`available_presets`) or by the path of a JSON file.

    A run entry's ``workload`` is a built-in workload's name or the path of a workload JSON file, relative
    to the preset file's folder, else to the current directory (the entry's ``workload`` is then the file's
    ``name`` key and ``workload_file`` its absolute path). ValueError ``<file>: <what is wrong and what is
    allowed>`` for a file that is not valid JSON or not an object, a missing ``name`` or ``runs``, an unknown
    key, a value of the wrong type or range (seeds, epochs, max_iters, nproc_per_node, trial_fraction), a
    workload that does not resolve, or a ``set`` key its workload does not have. The ``sweep``, ``tuning``
    and ``ablation`` sections' contents are checked by their stages (``experiments/stages``).
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(f"preset must be one of {available_presets()} or a JSON file, got {name_or_path!r}")
    raw = _read_object(path)
    if "results" in raw:
        raise ValueError(f"{path}: 'results' is not a preset key: the output folder is given with --out")
    _check_keys(str(path), raw, PRESET_KEYS, REQUIRED_KEYS)
    name = raw["name"]
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{path}: 'name' must be letters, digits, '-' and '_' ({REQUIRED_KEYS['name']}), "
                         f"got {name!r}")
    entries = raw["runs"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'runs' must be a non-empty list of run entries ({REQUIRED_KEYS['runs']}), "
                         f"got {entries!r}")
    runs = tuple(_run_entry(path, i, entry) for i, entry in enumerate(entries))
    seeds = _seeds(f"{path}: 'seeds'", raw.get("seeds", [0]))
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{path}: 'description' must be a string, got {description!r}")
    analysis_args = raw.get("analysis_args", [])
    if not isinstance(analysis_args, list) or not all(isinstance(a, str) for a in analysis_args):
        raise ValueError(f"{path}: 'analysis_args' must be a list of strings (arguments of python -m analysis), "
                         f"got {analysis_args!r}")
    for key in ("sweep", "tuning"):
        if not isinstance(raw.get(key, {}), dict):
            raise ValueError(f"{path}: {key!r} must be a JSON object (see experiments/stages), got {raw[key]!r}")
    ablation = raw.get("ablation", [])
    if not isinstance(ablation, list) or not all(isinstance(a, dict) for a in ablation):
        raise ValueError(f"{path}: 'ablation' must be a list of objects {{\"workload\", \"optimizer\", \"betas\"}}, "
                         f"got {ablation!r}")
    return Preset(name=name, runs=runs, seeds=seeds, results=str(Path("runs") / name), description=description,
                  analysis_args=tuple(analysis_args), sweep=raw.get("sweep", {}), ablation=tuple(ablation),
                  tuning=raw.get("tuning", {}))


def _read_object(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a preset is a JSON object with the keys {sorted(PRESET_KEYS)} ('name' and "
                         f"'runs' required), got a JSON {type(raw).__name__}")
    return raw


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _seeds(where: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(_is_int(s) and s >= 0 for s in value):
        raise ValueError(f"{where} must be a non-empty list of non-negative integers, e.g. [0, 1, 2], got {value!r}")
    return tuple(value)


def _positive_int_or_null(where: str, value: Any) -> int | None:
    if value is not None and not (_is_int(value) and value > 0):
        raise ValueError(f"{where} must be a positive integer or null, got {value!r}")
    return value


def resolve_workload(workload: str, preset_dir: Path) -> tuple[str, str | None]:
    """(name, absolute file path or None) of a preset entry's ``workload``: a built-in name, or the path of a
    workload JSON file relative to ``preset_dir`` (the preset file's folder), else to the current directory.
    ValueError naming both places, or what is wrong with the file
    (:func:`experiments.workloads.config.load_workload_dict`)."""
    if not is_workload_file(workload):
        load_workload_dict(workload)  # a built-in name (ValueError listing them otherwise)
        return workload, None
    given = Path(workload).expanduser()
    candidates = [given] if given.is_absolute() else [preset_dir / given, Path.cwd() / given]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ValueError(f"workload {workload!r}: no such file (looked for {[str(c) for c in candidates]}); a "
                         f"workload is one of {available_workloads()} or the path of a workload JSON file, "
                         "relative to the preset's folder or the current directory")
    file = str(found.resolve())
    return load_workload_dict(file)["name"], file


def _run_entry(path: Path, index: int, entry: Any) -> PresetRuns:
    where = f"{path}: runs[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a JSON object with 'workload' and 'optimizers', got {entry!r}")
    _check_keys(where, entry, RUN_KEYS, REQUIRED_RUN_KEYS)
    if not isinstance(entry["workload"], str) or not entry["workload"]:
        raise ValueError(f"{where}: 'workload' must be a string ({REQUIRED_RUN_KEYS['workload']}), "
                         f"got {entry['workload']!r}")
    try:
        workload, workload_file = resolve_workload(entry["workload"], path.parent)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    where = f"{path}: runs[{index}] ({workload})"
    opts = entry["optimizers"]
    if opts != "all":
        if not isinstance(opts, list) or not opts or not all(isinstance(o, str) and o for o in opts):
            raise ValueError(f"{where}: 'optimizers' must be 'all' or a non-empty list of names, got {opts!r}")
        opts = tuple(opts)
    epochs = _positive_int_or_null(f"{where}: 'epochs'", entry.get("epochs"))
    max_iters = _positive_int_or_null(f"{where}: 'max_iters'", entry.get("max_iters"))
    seeds = None if entry.get("seeds") is None else _seeds(f"{where}: 'seeds'", entry["seeds"])
    nproc = entry.get("nproc_per_node", 1)
    if not _is_int(nproc) or nproc < 1:
        raise ValueError(f"{where}: 'nproc_per_node' must be a positive integer, got {nproc!r}")
    fraction = entry.get("trial_fraction", 1.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"{where}: 'trial_fraction' must be a number in (0, 1], got {fraction!r}")
    overrides = entry.get("set", {})
    _check_set(where, workload_file or workload, overrides)
    return PresetRuns(workload=workload, optimizers=opts, epochs=epochs, max_iters=max_iters, set=dict(overrides),
                      seeds=seeds, trial_fraction=float(fraction), nproc_per_node=nproc, workload_file=workload_file)


def _check_set(where: str, workload: str, overrides: Any) -> None:
    """ValueError when ``overrides`` is not a mapping of dotted workload keys that the workload has."""
    if not isinstance(overrides, dict) or not all(isinstance(k, str) and k for k in overrides):
        raise ValueError(f"{where}: 'set' must be an object of dotted workload keys and values, e.g. "
                         f'{{"batch_size": 64, "optimizer.lr": 0.1}}, got {overrides!r}')
    bad = [k for k in overrides if not all(k.split("."))]
    if bad:
        raise ValueError(f"{where}: 'set' keys must be dotted names without empty parts, got {bad}")
    try:  # the workload's own checks, with the run's optimizer stood in by a registered name
        workload_from_dict(apply_overrides(load_workload_dict(workload), overrides, "sgd"))
    except ValueError as err:
        raise ValueError(f"{where}: 'set' {overrides}: {err}") from None
