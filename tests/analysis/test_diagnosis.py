"""The ResNet diagnosis table and block-share figure on made-up runs whose numbers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.diagnosis import diagnosis_markdown, diagnosis_summary, plot_block_shares


def _data() -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame({
        "workload": ["w"] * 6, "variant": ["mlbfgs blocks=layer"] * 3 + ["sgd_normalized momentum=0.94"] * 3,
        "optimizer": ["mlbfgs"] * 3 + ["sgd_normalized"] * 3, "seed": [0, 1, 2] * 2, "config": ["a"] * 3 + ["b"] * 3,
        "final_test_acc": [0.87, 0.88, 0.875, 0.92, 0.925, 0.922], "final_train_loss": [0.3] * 3 + [0.1] * 3,
    })
    rows = []
    for seed in (0, 1, 2):
        for it in (11, 21):
            # block 0 low curvature (damped mu 0.02), block 1 the classifier (1.5): spread 75; the classifier
            # holds 80% of the gradient but 1% of the step
            rows += [{"run_id": f"r{seed}", "iteration": it, "block": 0, "mu": 0.01, "accepted": True,
                      "damped_mu": 0.02, "gamma": 50.0, "grad_norm": 1.0, "direction_share": 0.99,
                      "variant": "mlbfgs blocks=layer", "seed": seed},
                     {"run_id": f"r{seed}", "iteration": it, "block": 1, "mu": 1.6, "accepted": True,
                      "damped_mu": 1.5, "gamma": 0.66, "grad_norm": 2.0, "direction_share": 0.01,
                      "variant": "mlbfgs blocks=layer", "seed": seed}]
    return runs, pd.DataFrame(rows)


def test_summary_names_the_starved_block_and_the_verdict() -> None:
    summary = diagnosis_summary(_data())
    ours = summary[summary["configuration"] == "mlbfgs blocks=layer"].iloc[0]
    assert ours["blocks"] == 2
    assert np.isclose(ours["damped_mu_spread_median"], 75.0)
    assert np.isclose(ours["last_block_step_share_median"], 0.01)
    assert np.isclose(ours["last_block_grad_share_median"], 0.8)
    assert ours["verdict"] == "worse" and ours["delta_high"] < 0
    assert summary.iloc[0]["configuration"] == "sgd_normalized momentum=0.94"  # sorted by accuracy
    text = diagnosis_markdown(summary)
    assert "worse" in text and "`mlbfgs blocks=layer`" in text


def test_block_share_figure_has_a_row_per_multi_block_configuration() -> None:
    data = _data()
    fig = plot_block_shares(data, diagnosis_summary(data))
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2  # one configuration with blocks: step share and gradient share
