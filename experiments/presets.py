"""Suite presets: ``experiments/presets/<name>.json`` lists the (workload x optimizer x seed) grid."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from experiments.config import available_workloads

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
    trial_fraction: float = 1.0  # tuning trials run this fraction of the epochs (experiments/tuning.py)
    # data-parallel processes per run (torchrun --nproc_per_node), one GPU each: used when the machine has
    # at least two GPUs (as many as it has, up to this), else the run trains in one process
    # (experiments/execution.py: launch_width)
    nproc_per_node: int = 1


@dataclass(frozen=True)
class Preset:
    name: str
    runs: tuple[PresetRuns, ...]
    seeds: tuple[int, ...] = (0,)
    results: str = ""  # output folder (runs in <results>/runs); set by the command line, default runs/<name>
    description: str = ""
    analysis_args: tuple[str, ...] = ()  # arguments of `python -m analysis` (default: --results <results>)
    # learning-rate sweep before the finals (experiments/stages/sweep.py): {"seed", "grids": {optimizer: [lr, ...]}}
    sweep: dict[str, Any] = field(default_factory=dict)
    # beta ablation after them: [{"workload", "optimizer", "betas": [...]}]
    ablation: tuple[dict[str, Any], ...] = ()
    # external tuning (experiments/tuning.py): {"trials", "seed", "search_seed", "spaces": {optimizer: space}}
    tuning: dict[str, Any] = field(default_factory=dict)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str) -> Preset:
    """A preset by name (``quick``, ``full``) or by path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(f"preset must be one of {available_presets()} or a JSON file, got {name_or_path!r}")
    raw = json.loads(path.read_text())
    runs = []
    for entry in raw.pop("runs"):
        if entry["workload"] not in available_workloads():
            raise ValueError(
                f"{path}: workload must be one of {available_workloads()}, got {entry['workload']!r}"
            )
        opts = entry.pop("optimizers")
        if opts != "all":
            if isinstance(opts, str) or not all(isinstance(o, str) for o in opts):
                raise ValueError(f"{path}: optimizers must be 'all' or a list of names, got {opts!r}")
            opts = tuple(opts)
        if "seeds" in entry:
            entry["seeds"] = tuple(entry["seeds"])
        unknown = sorted(set(entry) - {f.name for f in fields(PresetRuns)})
        if unknown:
            raise ValueError(f"{path}: unknown run entry key(s) {unknown}; allowed: "
                             f"{sorted(f.name for f in fields(PresetRuns))}")
        nproc = entry.get("nproc_per_node", 1)
        if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
            raise ValueError(f"{path}: nproc_per_node of {entry['workload']} must be a positive integer, got {nproc!r}")
        runs.append(PresetRuns(optimizers=opts, **entry))
    if "results" in raw:
        raise ValueError(f"{path}: 'results' is not a preset key: the output folder is given with --out")
    raw["seeds"] = tuple(raw.get("seeds", (0,)))
    raw["analysis_args"] = tuple(raw.get("analysis_args", ()))
    raw["ablation"] = tuple(raw.get("ablation", ()))
    return Preset(runs=tuple(runs), results=str(Path("runs") / raw["name"]), **raw)
