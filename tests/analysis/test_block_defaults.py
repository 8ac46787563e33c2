"""The block-default rule (analysis/block_defaults.py) on made-up runs whose outcome is known: it takes the simplest
admitted candidate, and a starving or worse candidate is never admitted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.block_defaults import (
    CANDIDATES,
    MIN_SEEDS,
    WORKLOADS,
    block_defaults_markdown,
    block_defaults_summary,
    chosen_default,
    plot_block_defaults,
)

NAMES = [name for name, _, _ in CANDIDATES]


def _data(acc: dict[tuple[str, str], list[float]], starving: set[tuple[str, str]] = frozenset()  # type: ignore[assignment]
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs with the given final accuracies per (workload, candidate); two blocks per multi-block candidate,
    the second getting 1% of the step for 50% of the gradient where starving, its gradient's share otherwise."""
    runs, pairs = [], []
    for (workload, name), values in acc.items():
        for seed, value in enumerate(values):
            runs.append({"workload": workload, "candidate": name, "seed": seed, "final_test_acc": value,
                         "variant": name, "optimizer": "mlbfgs"})
            if name == "model":
                continue
            step = 0.01 if (workload, name) in starving else 0.5
            for it in (10, 20, 30):
                for block, share in ((0, 1 - step), (1, step)):
                    pairs.append({"workload": workload, "candidate": name, "seed": seed, "iteration": it,
                                  "block": block, "grad_norm": 1.0, "direction_share": share, "variant": name})
    return pd.DataFrame(runs), pd.DataFrame(pairs)


def _all(values: dict[str, list[float]]) -> dict[tuple[str, str], list[float]]:
    return {(w, name): v for w in WORKLOADS for name, v in values.items()}


def test_the_simplest_level_candidate_is_chosen() -> None:
    acc = _all({"model": [0.80, 0.81, 0.79], "authors": [0.81, 0.80, 0.82], "layer": [0.82, 0.80, 0.81]})
    summary = block_defaults_summary(_data(acc))
    assert chosen_default(summary) == "model"
    assert "**Chosen default: `model`.**" in block_defaults_markdown(summary)


def test_a_worse_candidate_is_passed_over_for_the_next_simplest() -> None:
    acc = _all({"model": [0.80, 0.81, 0.79], "authors": [0.90, 0.91, 0.905], "layer": [0.90, 0.905, 0.91]})
    summary = block_defaults_summary(_data(acc))
    model = summary[(summary["candidate"] == "model")]
    assert (model["verdict"] == "worse").all() and not model["admitted"].any()
    assert chosen_default(summary) == "authors"


def test_a_starving_candidate_is_never_admitted_even_when_most_accurate() -> None:
    acc = _all({"model": [0.80, 0.70, 0.75], "layer": [0.90, 0.91, 0.905]})
    summary = block_defaults_summary(_data(acc, starving={("fmnist-resnet", "layer")}))
    row = summary[(summary["workload"] == "fmnist-resnet") & (summary["candidate"] == "layer")].iloc[0]
    assert np.isclose(row["starvation_ratio"], 0.02) and not row["admitted"]
    assert chosen_default(summary) is None  # model is worse everywhere, layer starves on the ResNet


def test_no_choice_while_a_workload_or_seeds_are_missing() -> None:
    acc = _all({"model": [0.80, 0.81, 0.79]})
    del acc[("fmnist-cnn", "model")]
    assert chosen_default(block_defaults_summary(_data(acc))) is None
    short = _all({"model": [0.80, 0.81][: MIN_SEEDS - 1]})
    summary = block_defaults_summary(_data(short))
    assert chosen_default(summary) is None
    assert "No default chosen" in block_defaults_markdown(summary)


@pytest.mark.parametrize("name", NAMES)
def test_every_candidate_has_a_row_and_a_figure_row(name: str) -> None:
    data = _data(_all({n: [0.8, 0.81, 0.82] for n in NAMES}))
    summary = block_defaults_summary(data)
    assert set(summary[summary["candidate"] == name]["workload"]) == set(WORKLOADS)
    fig = plot_block_defaults(data, summary)
    assert len(fig.axes) == len(WORKLOADS)


def test_no_choice_while_a_rule_workload_is_missing_even_with_another_one() -> None:
    acc = _all({"model": [0.80, 0.81, 0.79]})
    del acc[("fmnist-resnet", "model")]
    acc[("fmnist-vit", "model")] = [0.8, 0.81, 0.79]
    assert chosen_default(block_defaults_summary(_data(acc))) is None
