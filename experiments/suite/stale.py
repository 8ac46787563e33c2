"""Runs recorded under optimizer settings the code no longer builds for their ids (``experiments/runner/drift.py``),
set aside so that a preset's folder holds one configuration per optimizer again.

After a registry default changes, ``--retrain-stale`` sweeps the output folder before the stages run: every run
(finished or not) of the selected workloads and optimizers whose manifest records other settings than its
request builds today is moved, with its checkpoints, to ``<out>/stale/<time>/`` (ignored by git; nothing is
deleted). The stages then train whatever the preset plans and is missing, resumably. The sweep covers every
``runs`` folder under the output (finals, tuning trials, sweeps), so that a final whose settings the new tuning
no longer chooses does not linger beside the new ones.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from experiments.runner.drift import config_drift
from experiments.runner.spec import make_run_spec

RUN_FILE_SUFFIXES = (".csv", ".curvature.csv", ".json")  # the manifest last: it marks a run finished


def stale_folder(out: Path) -> Path:
    """``<out>/stale/<UTC time>``: where one sweep puts what it sets aside."""
    return out / "stale" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def set_aside(manifest: Path, out: Path, folder: Path) -> None:
    """Move a run's files (beside ``manifest``) and its checkpoints (``<runs>/../checkpoints/<workload>/<id>``)
    into ``folder``, under their paths relative to ``out``."""
    base = manifest.with_suffix("")
    for suffix in RUN_FILE_SUFFIXES:
        path = base.with_name(base.name + suffix)
        if path.exists():
            target = folder / path.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(target))
    checkpoints = manifest.parent.parent.parent / "checkpoints" / manifest.parent.name / base.name
    if checkpoints.is_dir():
        target = folder / checkpoints.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(checkpoints), str(target))


def sweep_stale(out: Path, workloads: Iterable[str] | None = None, optimizers: Iterable[str] | None = None,
                dry_run: bool = False) -> list[tuple[Path, dict[str, tuple[object, object]]]]:
    """Set aside every run under ``out`` (of ``workloads`` and ``optimizers`` when given) recorded under other
    optimizer settings than its request builds today; returns (manifest, drift) for each, moved unless
    ``dry_run``. A manifest whose request no longer builds (an optimizer since removed) is left alone."""
    wanted_w, wanted_o = set(workloads or ()), set(optimizers or ())
    folder = stale_folder(out)
    found = []
    for manifest in sorted(out.glob("**/runs/*/*.json")):
        if "stale" in manifest.relative_to(out).parts:
            continue
        try:
            raw = json.loads(manifest.read_text())
            if (wanted_w and raw["workload"] not in wanted_w) or (wanted_o and raw["optimizer"] not in wanted_o):
                continue
            spec = make_run_spec(raw["workload"], raw["optimizer"], int(raw["seed"]),
                                 overrides=raw.get("overrides") or {}, max_iters=raw.get("max_iters"))
        except (OSError, ValueError, KeyError, TypeError, ModuleNotFoundError):
            continue
        if spec.run_id != manifest.stem:
            continue  # recorded under another id scheme: not this check's to judge
        drift = config_drift(spec, manifest)
        if drift:
            found.append((manifest, drift))
            if not dry_run:
                set_aside(manifest, out, folder)
    return found
