"""The final metrics of one run, read from its CSV: what the learning-rate sweep and the tuning trials rank.

The run CSV's schema is :data:`analysis.load.RUN_COLUMNS` (DEVELOPERS.md); the file is read and checked by
:func:`analysis.load.read_checked_csv`, like every other reader of the results tree.
"""

from __future__ import annotations

import math
from pathlib import Path

from analysis.load import RUN_COLUMNS, RUN_NUMERIC, read_checked_csv


def final_metrics(csv_path: Path | str) -> tuple[float, float]:
    """(final test accuracy, final training loss) of the run logged in ``csv_path``.

    The accuracy is ``test_acc`` of the last ``eval`` row (a fraction in [0, 1]), the loss ``train_loss``
    of the last ``train`` row (the mini-batch loss of the last step). The runner writes a value in that
    cell on every row of that kind, ``nan`` for a diverged one, so a run whose last loss is NaN keeps a
    NaN loss (an earlier finite value does not stand in for it) and ranks as diverged. Either is NaN when
    the file does not exist or has no row of that kind, and NaN/inf stay as they are.

    Raises :class:`analysis.load.SchemaError` (a ``ValueError``) when the file exists but is empty, not a
    CSV, misses a column of ``RUN_COLUMNS`` or holds a non-numeric value in a numeric column.
    """
    path = Path(csv_path)
    if not path.is_file():
        return math.nan, math.nan
    rows = read_checked_csv(path, RUN_COLUMNS, RUN_NUMERIC)
    accuracies = rows.loc[rows["kind"] == "eval", "test_acc"]
    losses = rows.loc[rows["kind"] == "train", "train_loss"]
    accuracy = float(accuracies.iloc[-1]) if len(accuracies) else math.nan
    loss = float(losses.iloc[-1]) if len(losses) else math.nan
    return accuracy, loss
