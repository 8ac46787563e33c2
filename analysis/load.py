"""Read the results tree into DataFrames and check it against the CSV schemas of DEVELOPERS.md.

Layout read (every group optional)::

    <results>/runs/<workload>/<run_id>.csv             run CSV (train and eval rows)
    <results>/runs/<workload>/<run_id>.json            run manifest
    <results>/runs/<workload>/<run_id>.curvature.csv   curvature pairs (quasi-Newton optimizers)
    <results>/overhead/*.csv                           per-step / per-iteration timings
    <results>/overhead/direction_kernel.csv            the direction kernel against the bandwidth bound
    <results>/distributed/*.csv                        per-rank curvature memory and direction time

Run CSVs may also be given as the folder ``python -m experiments.run --out DIR`` wrote (``DIR`` holds
``<workload>/<run_id>.csv``), a workload folder, or one run CSV: see :func:`run_csv_paths`. Manifests
and curvature CSVs are read from next to the run CSVs.

A file that breaks its schema raises :class:`SchemaError` naming the file and the missing columns.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.configs import config_key, config_of_run_id, manifest_settings
from experiments.bench.schema import DISTRIBUTED_COLUMNS, KERNEL_COLUMNS, OVERHEAD_COLUMNS  # noqa: F401 - re-exported
from experiments.runner.schema import (  # noqa: F401 - re-exported: the analysis modules read them from here
    CURVATURE_DIAGNOSTICS,
    CURVATURE_NUMERIC,
    RUN_KINDS,
    RUN_NUMERIC,
    RUN_REQUIRED,
)
from experiments.runner.schema import CURVATURE_REQUIRED as CURVATURE_COLUMNS

# The schema is stated once, in experiments/runner/schema.py; a reader checks the columns every file has
# (RUN_COLUMNS here: the run CSV's columns less those added after runs were committed).
RUN_COLUMNS: tuple[str, ...] = RUN_REQUIRED

OVERHEAD_NUMERIC: tuple[str, ...] = ("repeat", "seconds")
OVERHEAD_MEASURES: tuple[str, ...] = ("step", "iteration")

DISTRIBUTED_NUMERIC: tuple[str, ...] = ("world_size", "rank", "blocks", "curvature_bytes", "direction_seconds")

KERNEL_FILE = Path("overhead") / "direction_kernel.csv"
KERNEL_NUMERIC: tuple[str, ...] = KERNEL_COLUMNS[1:]

#: Tables in overhead/ and distributed/ that their own figure groups read (analysis/groups.py), so
#: they are not reported as ignored by the overhead and scaling loaders.
TABLES_OF_OTHER_GROUPS: tuple[Path, ...] = (KERNEL_FILE, Path("distributed") / "sharding_modes.csv")

#: Suffix of curvature CSVs next to the run CSVs.
CURVATURE_SUFFIX = ".curvature.csv"

#: Columns always read as text.
_TEXT_COLUMNS: tuple[str, ...] = ("run_id", "workload", "optimizer", "kind", "block", "model", "measure")

#: Optimizers whose runs are stochastic L-BFGS without momentum (beta = 0 by definition).
ZERO_BETA_OPTIMIZERS: frozenset[str] = frozenset({"slbfgs"})


class SchemaError(ValueError):
    """A results file does not match the schema in DEVELOPERS.md."""


@dataclass
class Results:
    """Everything read from one results directory; a group is ``None`` when it has no files."""

    root: Path
    runs: pd.DataFrame | None
    manifests: pd.DataFrame | None
    curvature: pd.DataFrame | None
    overhead: pd.DataFrame | None
    distributed: pd.DataFrame | None
    kernel: pd.DataFrame | None = None
    #: CSVs found in overhead/ or distributed/ that belong to another table (see :func:`belongs_to`).
    ignored: list[str] = field(default_factory=list)


def read_checked_csv(path: Path, columns: Sequence[str], numeric: Sequence[str] = ()) -> pd.DataFrame:
    """Read ``path`` and check it has every column of ``columns`` (extra columns are kept).

    Columns in ``numeric`` are converted to float; a value that is neither empty nor a number raises
    :class:`SchemaError` naming the file, the column and the value. Text columns stay strings.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=True)
    except pd.errors.EmptyDataError as err:
        raise SchemaError(f"{path}: empty file; expected a header with columns {', '.join(columns)}") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SchemaError(f"{path}: not a readable CSV ({err})") from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {', '.join(missing)}; expected columns {', '.join(columns)}")
    for col in numeric:
        raw = df[col]
        converted = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = (
            converted.isna() & raw.notna() & ~raw.astype(str).str.strip().str.lower().isin({"", "nan", "none", "null"})
        )
        if bad.any():
            value = raw[bad].iloc[0]
            raise SchemaError(f"{path}: column {col} holds a non-numeric value {value!r}")
        df[col] = converted
    return df


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def run_csv_paths(path: Path | str) -> list[Path]:
    """The run CSVs under ``path``, sorted.

    ``path`` may be a results tree (its ``runs/`` folder is searched), the folder the runner wrote
    (``--out``: ``<out>/<workload>/<run_id>.csv``), one workload's folder, or one run CSV; a folder may
    be both (runner output written beside a suite's ``runs/``). Outside ``runs/``, only CSVs at most
    one folder deep whose header holds the run columns count (other tables sharing the folder are not
    runs); curvature CSVs never do. A file that is not a CSV raises :class:`SchemaError`.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".csv" or path.name.endswith(CURVATURE_SUFFIX):
            raise SchemaError(f"{path}: not a run CSV (a run is <run_id>.csv next to its <run_id>.json)")
        return [path]
    if not path.is_dir():
        return []
    runs_dir = path / "runs"
    tree = set(runs_dir.rglob("*.csv")) if runs_dir.is_dir() else set()
    # the runner writes <out>/<workload>/<run_id>.csv: look two levels deep, not into other groups' trees
    shallow = {p for pattern in ("*.csv", "*/*.csv") for p in path.glob(pattern)} - tree
    found = tree | {p for p in shallow if not p.name.endswith(CURVATURE_SUFFIX) and belongs_to(p, RUN_COLUMNS)}
    return sorted(p for p in found if not p.name.endswith(CURVATURE_SUFFIX))


def load_runs(results: Path | str) -> pd.DataFrame | None:
    """All run CSVs under ``results`` (see :func:`run_csv_paths`) in one DataFrame (``None`` when there
    are none).

    Adds the columns ``source`` (file path), ``beta`` (from the manifest, see :func:`manifest_beta`),
    ``config`` and ``settings`` (the run's configuration without the seed and its settings as JSON,
    see :mod:`analysis.configs`; runs are seeds of one configuration exactly when their ``config`` is
    equal), ``status`` (the manifest's: finished, running, failed; "unknown" without one) and
    ``epoch_progress`` (epochs completed as a float, see :func:`epoch_progress`) and ``process``
    (:func:`run_process`: runs with equal values shared one process and one clock). Eval rows
    with an empty ``wall_s`` or ``grad_evals`` take the value of the train row at the same iteration.
    """
    paths = run_csv_paths(results)
    frames = []
    for path in paths:
        df = read_checked_csv(path, RUN_COLUMNS, RUN_NUMERIC)
        if df.empty:  # a run that has not logged a row yet (its manifest still counts: load_manifests)
            continue
        kinds = set(df["kind"].dropna().unique())
        unknown = sorted(kinds - set(RUN_KINDS))
        if unknown:
            raise SchemaError(f"{path}: column kind holds {', '.join(unknown)}; allowed: train, eval")
        df["source"] = str(path)
        frames.append(df)
    runs = _concat(frames)
    if runs is None:
        return None
    manifests = _manifests_of(paths)
    known = {} if manifests is None else manifests.set_index("run_id")
    beta = {} if manifests is None else dict(zip(manifests["run_id"], manifests["beta"], strict=True))
    runs["beta"] = [_beta_of(rid, opt, beta) for rid, opt in zip(runs["run_id"], runs["optimizer"], strict=True)]
    config, settings, status = {}, {}, {}
    for rid in runs["run_id"].unique():
        if len(known) and rid in known.index:
            config[rid], settings[rid] = known.at[rid, "config"], known.at[rid, "settings"]
            status[rid] = known.at[rid, "status"]
        else:
            config[rid], settings[rid], status[rid] = config_of_run_id(str(rid)), "", "unknown"
    process = {} if manifests is None else dict(zip(manifests["run_id"], manifests["process"], strict=True))
    runs["process"] = runs["run_id"].map(lambda rid: process.get(rid, rid))
    runs["config"] = runs["run_id"].map(config)
    runs["settings"] = runs["run_id"].map(settings)
    runs["status"] = runs["run_id"].map(status)
    runs = _fill_eval_progress(runs)
    runs["epoch_progress"] = epoch_progress(runs)
    return runs


def _beta_of(run_id: str, optimizer: str, betas: Mapping[str, float]) -> float:
    if optimizer in ZERO_BETA_OPTIMIZERS:
        return 0.0
    value = betas.get(run_id)
    return float("nan") if value is None else float(value)


def _fill_eval_progress(runs: pd.DataFrame) -> pd.DataFrame:
    """Fill empty ``wall_s`` / ``grad_evals`` of eval rows from the last train row at or before them."""
    out = []
    for _, run in runs.groupby("run_id", sort=True):
        run = run.copy()
        train = run[run["kind"] == "train"].sort_values("iteration")
        evals = run["kind"] == "eval"
        if len(train) and evals.any():
            for col in ("wall_s", "grad_evals"):
                need = evals & run[col].isna()
                if need.any():
                    known = train[["iteration", col]].dropna()
                    if len(known):
                        idx = np.searchsorted(known["iteration"].to_numpy(), run.loc[need, "iteration"], "right")
                        vals = np.where(idx > 0, known[col].to_numpy()[np.maximum(idx - 1, 0)], 0.0)
                        run.loc[need, col] = vals
        out.append(run)
    return pd.concat(out).sort_index()


def epoch_progress(runs: pd.DataFrame) -> pd.Series:
    """Epochs completed at each row, as a float (the x-axis of "vs epoch" plots).

    When a run's train rows carry whole epoch numbers, the k-th train row of an epoch (of n rows per
    full epoch, n the largest count over epochs) gets ``(epoch - first epoch) + k / n``; so the last row
    of the first epoch sits at 1.0. Fractional epoch numbers are used as they are. Eval rows take the
    progress of the training iteration they follow (linear interpolation over iterations).
    """
    result = pd.Series(np.nan, index=runs.index, dtype=float)
    for _, run in runs.groupby("run_id", sort=False):
        train = run[(run["kind"] == "train") & run["iteration"].notna() & run["epoch"].notna()]
        train = train.sort_values("iteration", kind="stable")
        if train.empty:
            result.loc[run.index] = run["epoch"].astype(float)
            continue
        epochs = train["epoch"].to_numpy(dtype=float)
        if np.all(np.isclose(epochs, np.round(epochs))):
            counts = train.groupby("epoch").size()
            per_epoch = int(counts.max())
            rank = train.groupby("epoch").cumcount().to_numpy() + 1
            progress = (epochs - epochs.min()) + rank / per_epoch
        else:
            progress = epochs
        result.loc[train.index] = progress
        others = run.index.difference(train.index)
        if len(others):
            start = 0.0 if np.all(np.isclose(epochs, np.round(epochs))) else float(progress[0])
            xp = np.concatenate([[train["iteration"].iloc[0] - 1.0], train["iteration"].to_numpy(dtype=float)])
            fp = np.concatenate([[start], progress])
            result.loc[others] = np.interp(run.loc[others, "iteration"].to_numpy(dtype=float), xp, fp)
    return result


def manifest_beta(manifest: Mapping[str, Any]) -> float | None:
    """The momentum coefficient ``beta`` of the run's optimizer, read from its manifest.

    Looked up in this order: ``optimizer_config.beta`` (the resolved config the runner records),
    ``optimizer_settings.beta``, ``config.optimizer.beta``, ``config.optimizer_config.beta``,
    ``config.optimizers.<optimizer>.beta`` (the workload's default), ``config.beta``, ``beta``.
    Runs of ``slbfgs`` are beta = 0 whatever the manifest says. ``None`` when none is a number.
    """
    optimizer = manifest.get("optimizer")
    if optimizer in ZERO_BETA_OPTIMIZERS:
        return 0.0
    candidates: list[Any] = [
        _get(manifest, "optimizer_config", "beta"),
        _get(manifest, "optimizer_settings", "beta"),
        _get(manifest, "config", "optimizer", "beta"),
        _get(manifest, "config", "optimizer_config", "beta"),
        _get(manifest, "config", "optimizers", str(optimizer), "beta"),
        _get(manifest, "config", "beta"),
        _get(manifest, "beta"),
    ]
    return next((v for v in map(_finite_number, candidates) if v is not None), None)


def _get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...`` or ``None`` when a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def load_manifests(results: Path | str) -> pd.DataFrame | None:
    """One row per manifest: the ``<run_id>.json`` next to each run CSV under ``results`` (see
    :func:`run_csv_paths`). Columns: run_id, workload, optimizer, seed, beta, config, settings (see
    :func:`load_runs`), status, iterations_done and cpu_s (NaN when the manifest lacks them), process
    (:func:`run_process`), path and the parsed manifest (column ``manifest``). ``None`` when there are none."""
    return _manifests_of(run_csv_paths(results))


def _manifests_of(csv_paths: Sequence[Path]) -> pd.DataFrame | None:
    rows = []
    for path in (p.with_suffix(".json") for p in csv_paths):
        if not path.is_file():
            continue
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SchemaError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(manifest, dict):
            raise SchemaError(f"{path}: a manifest must be a JSON object")
        beta = manifest_beta(manifest)
        workload = manifest.get("workload", path.parent.name)
        settings = manifest_settings(manifest)
        rows.append(
            {
                "run_id": str(manifest.get("run_id", path.stem)),
                "workload": workload,
                "optimizer": manifest.get("optimizer"),
                "seed": manifest.get("seed"),
                "beta": float("nan") if beta is None else beta,
                "config": f"{workload}__{manifest.get('optimizer')}__{config_key(settings)}",
                "settings": json.dumps(settings, sort_keys=True, default=str),
                "status": str(manifest.get("status") or "unknown"),
                "iterations_done": _count_or_nan(manifest.get("iterations_done")),
                "cpu_s": _count_or_nan(manifest.get("cpu_s")),
                "process": run_process(manifest, path.stem),
                "path": str(path),
                "manifest": manifest,
            }
        )
    return pd.DataFrame(rows) if rows else None


def run_process(manifest: Mapping[str, Any], run_id: str) -> str:
    """A key of the process that trained the run: its lockstep group's run ids (sorted, joined by
    ``|``), or the run id alone for a run trained in a process of its own. Seconds compare only between
    runs with equal keys (one clock)."""
    group = (manifest.get("lockstep") or {}).get("group") if isinstance(manifest.get("lockstep"), dict) else None
    return "|".join(sorted(str(r) for r in group)) if group else str(manifest.get("run_id", run_id))


def _finite_number(value: Any) -> float | None:
    """A manifest's JSON number as float; None when absent, not a number (booleans included) or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _count_or_nan(value: Any) -> float:
    """A manifest's number (iterations, seconds) as float; NaN when :func:`_finite_number` finds none."""
    number = _finite_number(value)
    return float("nan") if number is None else number


def load_curvature(results: Path | str) -> pd.DataFrame | None:
    """The ``<run_id>.curvature.csv`` next to each run CSV under ``results`` (see :func:`run_csv_paths`)
    in one DataFrame, with ``accepted`` as bool."""
    frames = []
    for run_csv in run_csv_paths(results):
        path = run_csv.with_name(run_csv.stem + CURVATURE_SUFFIX)
        if not path.is_file():
            continue
        df = read_curvature_csv(path)
        df["source"] = str(path)
        frames.append(df)
    return _concat(frames)


def read_curvature_csv(path: Path) -> pd.DataFrame:
    """One curvature CSV, checked (:data:`CURVATURE_COLUMNS` required), with ``accepted`` as bool and
    the diagnostics columns as numbers (NaN in files written before they existed)."""
    df = read_checked_csv(path, CURVATURE_COLUMNS, CURVATURE_NUMERIC)
    for col in CURVATURE_DIAGNOSTICS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else float("nan")
    df["accepted"] = _to_bool(df["accepted"], path)
    return df


def _to_bool(values: pd.Series, path: Path) -> pd.Series:
    mapping = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    text = values.astype(str).str.strip().str.lower()
    unknown = sorted(set(text) - set(mapping))
    if unknown:
        raise SchemaError(f"{path}: column accepted holds {', '.join(unknown)}; expected true/false or 1/0")
    return text.map(mapping).astype(bool)


def belongs_to(path: Path, columns: Sequence[str]) -> bool:
    """Whether the CSV at ``path`` is meant to follow the schema ``columns``: its header holds at least
    half of them. Other CSVs sharing the folder (e.g. ``overhead/direction_kernel.csv``, another
    benchmark's table) are ignored instead of failing validation; a file of the schema that misses a
    column or two still fails with the missing columns named."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return True  # let read_checked_csv report it
    return 2 * len(set(columns) & set(header)) >= len(columns)


def _schema_files(folder: Path, columns: Sequence[str], ignored: list[str] | None) -> list[Path]:
    paths = []
    for path in sorted(folder.glob("*.csv")):
        if belongs_to(path, columns):
            paths.append(path)
        elif ignored is not None:
            ignored.append(str(path))
    return paths


def load_overhead(results: Path | str, ignored: list[str] | None = None) -> pd.DataFrame | None:
    """All overhead CSVs in ``results/overhead`` in one DataFrame; ``measure`` must be step or
    iteration. CSVs of other tables in that folder are skipped (listed in ``ignored`` when given)."""
    frames = []
    for path in _schema_files(Path(results) / "overhead", OVERHEAD_COLUMNS, ignored):
        df = read_checked_csv(path, OVERHEAD_COLUMNS, OVERHEAD_NUMERIC)
        unknown = sorted(set(df["measure"].dropna()) - set(OVERHEAD_MEASURES))
        if unknown:
            raise SchemaError(f"{path}: column measure holds {', '.join(unknown)}; allowed: step, iteration")
        df["source"] = str(path)
        frames.append(df)
    return _concat(frames)


def load_distributed(results: Path | str, ignored: list[str] | None = None) -> pd.DataFrame | None:
    """All distributed-scaling CSVs in ``results/distributed`` in one DataFrame (schema:
    :data:`DISTRIBUTED_COLUMNS`); CSVs of other tables there are skipped like in :func:`load_overhead`."""
    frames = []
    for path in _schema_files(Path(results) / "distributed", DISTRIBUTED_COLUMNS, ignored):
        df = read_checked_csv(path, DISTRIBUTED_COLUMNS, DISTRIBUTED_NUMERIC)
        df["source"] = str(path)
        frames.append(df)
    return _concat(frames)


def load_kernel(results: Path | str) -> pd.DataFrame | None:
    """``<results>/overhead/direction_kernel.csv`` (columns :data:`KERNEL_COLUMNS`, one row per repeat
    of ``python -m experiments.bench.overhead``'s kernel benchmark); ``None`` when absent."""
    path = Path(results) / KERNEL_FILE
    if not path.is_file():
        return None
    frame = read_checked_csv(path, KERNEL_COLUMNS, KERNEL_NUMERIC)
    frame["source"] = str(path)
    return frame


def load_results(results: Path | str) -> Results:
    """Read every group of the results tree (see the module docstring)."""
    root = Path(results)
    ignored: list[str] = []
    return Results(
        root=root,
        runs=load_runs(root),
        manifests=load_manifests(root),
        curvature=load_curvature(root),
        overhead=load_overhead(root, ignored),
        distributed=load_distributed(root, ignored),
        kernel=load_kernel(root),
        ignored=[p for p in ignored if Path(p) not in {root / f for f in TABLES_OF_OTHER_GROUPS}],
    )


def run_info(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run_id, workload, optimizer, seed, beta, config (sorted by run_id)."""
    cols = ["run_id", "workload", "optimizer", "seed", "beta", "config"]
    return runs[cols].drop_duplicates("run_id").sort_values("run_id").reset_index(drop=True)
