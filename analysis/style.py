"""Shared look of every figure: optimizer colours and order, figure creation, stable PNG output.

Figures are built with the object-oriented API (:class:`matplotlib.figure.Figure`, no pyplot state),
so the package works the same under the Agg backend of the CLI and the inline backend of notebooks.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

#: Display order of the known optimizers (unknown names follow, alphabetically).
OPTIMIZER_ORDER: tuple[str, ...] = (
    "sgd",
    "nsgd",
    "sgd_normalized",
    "adam",
    "adamw",
    "kfac",
    "olbfgs",
    "sqn",
    "slbfgs",
    "mlbfgs",
)

#: Fixed colours, identical in every figure. mlbfgs is the only red.
OPTIMIZER_COLORS: dict[str, str] = {
    "sgd": "#1f77b4",
    "nsgd": "#17becf",
    "sgd_normalized": "#17becf",
    "adam": "#ff7f0e",
    "adamw": "#bcbd22",
    "kfac": "#2ca02c",
    "olbfgs": "#9467bd",
    "sqn": "#e377c2",
    "slbfgs": "#7f7f7f",
    "mlbfgs": "#d62728",
    # the peers (baselines/peers/); none from the fallback palette below, so an unknown name never shares one
    "adamw_schedulefree": "#5254a3",
    "muon": "#bd9e39",
    "soap": "#ce6dbd",
    "shampoo": "#8ca252",
}

#: Colours for optimizers not listed above, picked by a stable hash of the name.
_FALLBACK_COLORS: tuple[str, ...] = ("#8c564b", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")

#: The optimizer every figure emphasises.
HIGHLIGHT = "mlbfgs"

#: Resolution of saved figures.
DPI = 120

#: Matplotlib settings applied while a figure is built.
RC: dict[str, object] = {
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "font.family": "DejaVu Sans",
}


def optimizer_color(name: str) -> str:
    """Colour of optimizer ``name``: fixed for known names, a stable hash-picked one otherwise."""
    if name in OPTIMIZER_COLORS:
        return OPTIMIZER_COLORS[name]
    return _FALLBACK_COLORS[zlib.crc32(name.encode()) % len(_FALLBACK_COLORS)]


def optimizer_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting known optimizers in :data:`OPTIMIZER_ORDER`, the others after, by name."""
    if name in OPTIMIZER_ORDER:
        return (OPTIMIZER_ORDER.index(name), name)
    return (len(OPTIMIZER_ORDER), name)


def sort_optimizers(names: Iterable[str]) -> list[str]:
    """Distinct optimizer names in display order."""
    return sorted(set(names), key=optimizer_sort_key)


def line_style(name: str) -> dict[str, float]:
    """Line width, z-order and alpha of a curve: the highlighted optimizer is thicker and on top."""
    if name == HIGHLIGHT:
        return {"linewidth": 2.6, "zorder": 5, "alpha": 1.0}
    return {"linewidth": 1.4, "zorder": 3, "alpha": 0.9}


def beta_label(beta: float) -> str:
    """Legend label of an EMA coefficient, e.g. ``beta=0.99`` -> ``"β=0.99"``."""
    return f"β={beta:g}"


def beta_color(beta: float) -> str:
    """Colour of a run with EMA coefficient ``beta``: grey for 0 (no momentum), deeper red as beta -> 1.

    The shade follows ``-log10(1 - beta)`` (0.9 -> 1, 0.99 -> 2, 0.999 -> 3), so the same beta always
    gets the same colour.
    """
    if beta <= 0:
        return OPTIMIZER_COLORS["slbfgs"]
    depth = 3.0 if beta >= 1 else min(3.0, -math.log10(1.0 - beta))
    cmap = mpl.colormaps["Reds"]
    return mpl.colors.to_hex(cmap(0.35 + 0.6 * depth / 3.0))


def styled() -> AbstractContextManager:
    """Context applying :data:`RC`; wrap the whole construction of a figure in it."""
    return mpl.rc_context(RC)


def new_figure(nrows: int, ncols: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure with an ``nrows x ncols`` grid of axes (flattened list); call inside :func:`styled`."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


class PlainLogLocator(LogLocator):
    """Ticks at 1, 2, 5 x 10^k over a span of up to :data:`DENSE_DECADES` decades, at the decades alone
    beyond it (the 1-2-5 labels of a wider span run into each other)."""

    def __init__(self) -> None:
        super().__init__(subs=(1.0, 2.0, 5.0))

    def tick_values(self, vmin: float, vmax: float):  # type: ignore[no-untyped-def]
        lo, hi = sorted((vmin, vmax))
        wide = lo > 0 and math.isfinite(hi / lo) and math.log10(hi / lo) > DENSE_DECADES
        self.set_params(subs=(1.0,) if wide else (1.0, 2.0, 5.0))
        return super().tick_values(vmin, vmax)


DENSE_DECADES = 2.5


def plain_log_ticks(axis: Axis, suffix: str = "") -> None:
    """Label a log axis in plain numbers (``0.5``, ``20``) with ``suffix``: at 1, 2, 5 x 10^k, or at the
    decades alone on a span of more than :data:`DENSE_DECADES` decades (:class:`PlainLogLocator`)."""
    axis.set_major_locator(PlainLogLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}{suffix}"))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG at :data:`DPI` with fixed metadata (no software/version stamp), so the
    same figure gives the same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context(RC):
        fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def safe_name(text: str) -> str:
    """``text`` reduced to characters safe in a file name (letters, digits, ``-``, ``_``, ``.``)."""
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    return out or "unnamed"
