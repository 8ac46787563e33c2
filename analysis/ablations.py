"""Ablations of mL-BFGS at the long length (``<results>/ablations/runs``, written by
``python -m experiments.suite --preset long_ablations --out results``): one setting changed at a
time around the tuned configuration.

Runs are grouped by their full configuration (:mod:`analysis.variants`). The reference is found from
the runs themselves: the configuration that differs from the most other configurations in exactly
one setting (the centre of a one-at-a-time design, i.e. the tuned settings).
"""

from __future__ import annotations

import json

import pandas as pd

from analysis.variants import variant_table

FOLDER = "ablations"


def centre(runs: pd.DataFrame) -> str:
    """The label of the configuration that differs in exactly one setting from the most others."""
    configs = runs.drop_duplicates("variant")[["variant", "optimizer", "overrides"]]
    parsed = {r.variant: (r.optimizer, json.loads(r.overrides)) for r in configs.itertuples()}

    def one_apart(a: tuple[str, dict], b: tuple[str, dict]) -> bool:
        keys = set(a[1]) | set(b[1])
        changed = [k for k in keys if a[1].get(k) != b[1].get(k)] + (["optimizer"] if a[0] != b[0] else [])
        return len(changed) == 1

    scores = {v: sum(one_apart(c, d) for w, d in parsed.items() if w != v) for v, c in parsed.items()}
    return max(sorted(scores), key=lambda v: scores[v])


def ablation_markdown(summary: pd.DataFrame, reference: str) -> str:
    caption = (
        "mL-BFGS at the long length, one setting changed at a time around the tuned configuration "
        f"(`{reference}`, found as the centre of the design); seeds pooled per configuration, never "
        "configurations. Final test accuracy (last evaluation) and final train loss (mean of the last 5% of "
        "iterations), mean ± standard deviation over seeds; 'vs tuned' = mean final test accuracy minus the "
        "tuned configuration's.\n"
    )
    return caption + "\n" + variant_table(summary, "vs tuned")
