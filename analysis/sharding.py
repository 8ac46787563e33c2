"""mL-BFGS's sharding modes side by side (``results/distributed/sharding_modes.csv``, written by
``python -m experiments.bench.distributed --tables modes``): DDP with whole blocks per rank, DDP with
every block's rows per rank, and FSDP2 (rows, no direction exchange), on 1, 2 and 4 ranks.

Schema (DEVELOPERS.md): one row per model, mode and world size; :data:`COLUMNS` are required. Bytes are
per rank and step (collective payloads); times are medians of the slowest rank, and only their ratios
to ``ddp-blocks`` at the same world size (measured in the same processes) are compared. A mode the
benchmark could not run has ``status`` ``missing: ...`` and no numbers; it stays in the table as such.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from analysis.load import read_checked_csv
from analysis.style import new_figure, plain_log_ticks, styled
from analysis.tables import fmt, markdown_table

FILE = Path("distributed") / "sharding_modes.csv"
COLUMNS: tuple[str, ...] = (
    "model", "mode", "world_size", "status", "curvature_bytes_max_rank", "optimizer_bytes_per_step",
    "optimizer_bytes_pair_step", "model_bytes_per_step", "bytes_source", "step_ratio", "pair_step_ratio",
)
NUMERIC: tuple[str, ...] = (
    "world_size", "curvature_bytes_max_rank", "optimizer_bytes_per_step", "optimizer_bytes_pair_step",
    "model_bytes_per_step", "step_ratio", "pair_step_ratio",
)
#: display order and colours (FSDP2, the mode without a direction exchange, in mL-BFGS's red)
MODES: tuple[str, ...] = ("ddp-blocks", "ddp-rows", "fsdp")
MODE_COLORS = {"ddp-blocks": "#1f77b4", "ddp-rows": "#ff7f0e", "fsdp": "#d62728"}
MODE_TEXT = {"ddp-blocks": "DDP, whole blocks", "ddp-rows": "DDP, rows", "fsdp": "FSDP2, rows"}
MIB, KIB = 2.0**20, 2.0**10

#: Columns of :func:`sharding_summary`.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model", "world_size", "mode", "status", "curvature_bytes_max_rank", "curvature_share",
    "optimizer_bytes_per_step", "optimizer_bytes_pair_step", "model_bytes_per_step", "bytes_source",
    "step_ratio", "pair_step_ratio",
)


def load_sharding(results: Path | str) -> pd.DataFrame | None:
    """The benchmark's rows, or None when ``<results>/distributed/sharding_modes.csv`` is absent."""
    path = Path(results) / FILE
    if not path.is_file():
        return None
    return read_checked_csv(path, COLUMNS, NUMERIC)


def _mode_key(mode: str) -> int:
    return MODES.index(mode) if mode in MODES else len(MODES)


def sharding_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model, world size and mode (display order): the status, the largest rank's curvature bytes and
    their share of the same mode on the fewest ranks (1/N is the ideal from one rank), the optimizer's bytes
    per plain and pair-forming step, the model's own bytes per step, where the optimizer's bytes come from,
    and the step-time ratios to ``ddp-blocks``."""
    out = frame.copy()
    out["_order"] = out["mode"].map(_mode_key)
    out = out.sort_values(["model", "world_size", "_order"], kind="stable")
    shares = []
    for _, r in out.iterrows():
        same = out[(out["model"] == r["model"]) & (out["mode"] == r["mode"])
                   & out["curvature_bytes_max_rank"].notna()]
        base = same.loc[same["world_size"].idxmin(), "curvature_bytes_max_rank"] if len(same) else np.nan
        value = r["curvature_bytes_max_rank"]
        shares.append(value / base if pd.notna(value) and base else np.nan)
    out["curvature_share"] = shares
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def sharding_markdown(summary: pd.DataFrame) -> str:
    """Markdown table of :func:`sharding_summary` (MiB, KiB, ratios)."""
    caption = (
        "mL-BFGS (blocks per layer, history 10, float32) spread over N gloo ranks on one CPU machine in three ways: "
        "DDP with whole blocks per rank and an all-gather of the directions, DDP with every block's rows per rank "
        "(a small all-reduce, then an all-gather of the rows' directions), and FSDP2 (rows, the all-reduce only). "
        "Curvature: the largest rank's state, and its share of the same mode on one rank (ideal 1/N). Bytes: per "
        "rank and step, collective payloads (an all-reduce's buffer, an all-gather's output); 'optimizer' is what "
        "MLBFGS exchanges (plain / pair-forming step), 'model' what DDP or FSDP2 exchange for the model "
        "(gradient all-reduce; FSDP2: two parameter all-gathers and a gradient reduce-scatter). Time: the "
        "optimizer step's median (slowest rank) as a ratio to DDP whole blocks at the same N, measured in the "
        "same processes, interleaved (below 1 = faster).\n"
    )
    header = ["model", "N", "mode", "curvature MiB (largest rank)", "share of 1 rank", "optimizer KiB / step",
              "pair step KiB", "model MiB / step", "step time / DDP blocks", "pair step / DDP blocks"]
    body = []
    for _, r in summary.iterrows():
        name = MODE_TEXT.get(r["mode"], r["mode"])
        if r["status"] != "measured":
            body.append([r["model"], str(int(r["world_size"])), name, str(r["status"])] + ["-"] * (len(header) - 4))
            continue
        body.append([
            r["model"], str(int(r["world_size"])), name, fmt(r["curvature_bytes_max_rank"] / MIB, 1),
            fmt(r["curvature_share"], 3), fmt(r["optimizer_bytes_per_step"] / KIB, 1),
            fmt(r["optimizer_bytes_pair_step"] / KIB, 1), fmt(r["model_bytes_per_step"] / MIB, 2),
            fmt(r["step_ratio"], 2), fmt(r["pair_step_ratio"], 2),
        ])
    return caption + "\n" + markdown_table(header, body, "lll" + "r" * (len(header) - 3))


def plot_sharding(frame: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """One row of three panels per model against the number of ranks, one colour per mode: the largest
    rank's curvature memory (dashed: 1/N of the fewest ranks), the optimizer's bytes per step (solid; dotted: the
    model's own collectives; log scale, N >= 2), and the optimizer step's time as a ratio to DDP whole blocks
    (solid: plain steps, dotted: pair-forming steps). The modes' legend is in the first panel of each row."""
    del frame
    measured = summary[summary["status"] == "measured"]
    models = sorted(summary["model"].unique())
    sizes = sorted(int(n) for n in summary["world_size"].unique())
    with styled():
        fig, axes = new_figure(len(models), 3, 13.5, 3.9 * len(models))
        for row, model in enumerate(models):
            ax_mem, ax_bytes, ax_time = axes[3 * row: 3 * row + 3]
            sub = measured[measured["model"] == model]
            for mode in MODES:
                s = sub[sub["mode"] == mode].sort_values("world_size")
                if s.empty:
                    continue
                color, label = MODE_COLORS[mode], MODE_TEXT[mode]
                n = s["world_size"].to_numpy(dtype=float)
                mem = s["curvature_bytes_max_rank"].to_numpy(dtype=float) / MIB
                ax_mem.plot(n, mem, "o-", color=color, label=label)
                many = s[s["world_size"] >= 2]
                ax_bytes.plot(many["world_size"], many["optimizer_bytes_per_step"] / KIB, "o-", color=color)
                ax_bytes.plot(many["world_size"], many["model_bytes_per_step"] / KIB, "s:", color=color,
                              markersize=4, alpha=0.7)
                ax_time.plot(n, s["step_ratio"], "o-", color=color)
                if s["pair_step_ratio"].notna().any():
                    ax_time.plot(n, s["pair_step_ratio"], "^:", color=color, alpha=0.8)
            first = sub[sub["world_size"] == sub["world_size"].min()]["curvature_bytes_max_rank"]
            if len(first):
                n0 = float(sub["world_size"].min())
                ideal = np.array(sorted(sub["world_size"].unique()), dtype=float)
                ax_mem.plot(ideal, float(first.max()) / MIB * n0 / ideal, "--", color="0.4", linewidth=1,
                            label=f"1/N of {int(n0)} rank{'s' if n0 > 1 else ''}")
            ax_time.axhline(1.0, color="0.5", linewidth=0.8)
            for ax in (ax_mem, ax_bytes, ax_time):
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_locator(FixedLocator(sizes if ax is not ax_bytes else [n for n in sizes if n >= 2]))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.set_xlabel("ranks N")
            ax_mem.set_yscale("log")
            plain_log_ticks(ax_mem.yaxis)
            if ax_bytes.has_data():
                ax_bytes.set_yscale("log")
            ax_mem.set_ylabel("MiB")
            ax_mem.set_title(f"{model}: curvature, largest rank")
            ax_bytes.set_ylabel("KiB per rank and step")
            ax_bytes.set_title("bytes per step (solid: optimizer, dotted: model)")
            ax_time.set_ylabel("time / DDP whole blocks")
            ax_time.set_title("step time (solid: plain, dotted: pair-forming)")
            ax_mem.legend(frameon=False, fontsize=8, loc="best")
        fig.suptitle("mL-BFGS over N ranks: DDP with whole blocks, DDP with rows, FSDP2 with rows")
    return fig
