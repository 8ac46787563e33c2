"""Analysis groups runs by configuration (never averaging runs that differ in anything but the seed),
reads the folder the runner wrote, refuses empty input, and compares chosen runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis.__main__ import main as analysis_main  # noqa: E402
from analysis.compare import Selection, compare, compare_table, parse_where  # noqa: E402
from analysis.configs import label_configs, manifest_settings, with_labels  # noqa: E402
from analysis.curves import plot_convergence  # noqa: E402
from analysis.load import load_runs  # noqa: E402
from analysis.targets import TargetRule, time_to_target  # noqa: E402
from experiments import run  # noqa: E402

ITERS = 12
TINY = ["eval_interval=6", "log_interval=1"]


@pytest.fixture(scope="module")
def runner_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a researcher writes with the runner into ONE folder: mlbfgs at two learning rates (same
    seed) and two seeds of sgd."""
    root = tmp_path_factory.mktemp("mixed")
    out = root / "runs"

    def train(optimizer: str, seed: int, *extra: str) -> None:
        assert run.main(["--workload", "mnist1d-mlp", "--optimizer", optimizer, "--seed", str(seed),
                         "--max-iters", str(ITERS), "--out", str(out), "--checkpoint-dir", str(root / "ck"),
                         "--no-progress", "--threads", "1", "--set", *TINY, *extra]) == 0

    train("mlbfgs", 0)
    train("mlbfgs", 0, "optimizer.lr=0.2")
    train("sgd", 0)
    train("sgd", 1)
    return out


def test_two_configurations_of_one_optimizer_are_not_averaged(runner_out: Path) -> None:
    runs = with_labels(load_runs(runner_out))  # the folder the runner wrote, not its parent
    seeds = runs.drop_duplicates("run_id").groupby("label")["seed"].nunique().to_dict()
    runs_per_label = runs.drop_duplicates("run_id").groupby("label").size().to_dict()
    assert runs_per_label == {"mlbfgs lr=0.05": 1, "mlbfgs lr=0.2": 1, "sgd": 2}
    assert seeds == {"mlbfgs lr=0.05": 1, "mlbfgs lr=0.2": 1, "sgd": 2}

    table = time_to_target(runs, TargetRule(value=0.0)).set_index("label")
    assert table["seeds"].to_dict() == {"sgd": 2, "mlbfgs lr=0.05": 1, "mlbfgs lr=0.2": 1}
    assert table["seeds_reached"].to_dict() == {"sgd": 2, "mlbfgs lr=0.05": 1, "mlbfgs lr=0.2": 1}

    fig = plot_convergence(runs, "mnist1d-mlp")
    legend = sorted(t.get_text() for t in fig.legends[0].get_texts())
    assert legend == ["mlbfgs lr=0.05 (1 seed)", "mlbfgs lr=0.2 (1 seed)", "sgd (2 seeds)"]


def test_cli_reads_the_runner_folder_and_refuses_empty_input(
    runner_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert analysis_main(["--results", str(runner_out), "--out", str(tmp_path / "fig"), "--quiet"]) == 0
    assert (tmp_path / "fig" / "convergence_mnist1d-mlp.png").is_file()
    assert "| mlbfgs lr=0.2 | 1/1 |" in (tmp_path / "fig" / "time_to_target.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert analysis_main(["--results", str(empty), "--out", str(tmp_path / "fig2")]) == 2
    assert "no results found" in capsys.readouterr().err
    assert analysis_main(["--results", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_compare_filters_and_tabulates(runner_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = next(runner_out.glob("mnist1d-mlp/*sgd__s1*.csv"))
    table, markdown, written = compare([runner_out], Selection(where=parse_where(["lr=0.2"])), None,
                                       tmp_path / "c.png")
    assert table["label"].tolist() == ["mlbfgs"] and written == [tmp_path / "c.png"]
    table, _, _ = compare([runner_out], Selection(optimizers=("sgd",)), 0.0, None)
    assert table["seeds"].tolist() == [2] and table["iterations"].tolist() == [ITERS]
    assert table["s_per_iteration"].iloc[0] > 0
    # a single run CSV is accepted too, and its final metrics are the CSV's last values
    table, _, _ = compare([one], Selection(), None, None)
    rows = pd.read_csv(one)
    assert table["final_test_acc"].iloc[0] == pytest.approx(rows[rows["kind"] == "eval"]["test_acc"].iloc[-1])
    assert analysis_main(["compare", str(runner_out), "--optimizer", "mlbfgs", "--out", str(tmp_path / "m.png")]) == 0
    printed = capsys.readouterr().out
    assert "| mlbfgs lr=0.05 | 1 |" in printed and "| mlbfgs lr=0.2 | 1 |" in printed and "sgd" not in printed
    assert (tmp_path / "m.png").is_file()
    assert analysis_main(["compare", str(runner_out), "--optimizer", "adam"]) == 2
    assert "--optimizer must be among ['mlbfgs', 'sgd']" in capsys.readouterr().err
    assert analysis_main(["compare", str(runner_out), "--where", "lr"]) == 2
    assert "SETTING=VALUE" in capsys.readouterr().err
    assert analysis_main(["compare", str(tmp_path / "nothing")]) == 2


def test_compare_table_by_hand() -> None:
    """Two seeds of one configuration: means and medians computed by hand."""
    rows = []
    for seed, accs, secs in ((0, (0.5, 0.8, 0.7), 2.0), (1, (0.6, 0.6, 0.9), 4.0)):
        rid = f"w__sgd__s{seed}"
        for it in (1, 2, 3):
            rows.append({"run_id": rid, "workload": "w", "optimizer": "sgd", "seed": seed, "kind": "train",
                         "iteration": it, "train_loss": 1.0 / it, "wall_s": secs * it / 3, "grad_evals": it})
            rows.append({"run_id": rid, "workload": "w", "optimizer": "sgd", "seed": seed, "kind": "eval",
                         "iteration": it, "test_acc": accs[it - 1], "wall_s": secs * it / 3, "grad_evals": it})
    table = compare_table(pd.DataFrame(rows), target=0.75, smooth_fraction=0.0).iloc[0]
    assert table["final_test_acc"] == pytest.approx((0.7 + 0.9) / 2)
    assert table["best_test_acc"] == pytest.approx((0.8 + 0.9) / 2)
    assert table["final_train_loss"] == pytest.approx(1 / 3)
    assert table["seeds_reached"] == 2
    assert table["iterations_to_target"] == pytest.approx((2 + 3) / 2)  # seed 0 at 2, seed 1 at 3
    assert table["s_per_iteration"] == pytest.approx((2 / 3 + 4 / 3) / 2)


def test_labels_name_what_differs() -> None:
    base = {"epochs": 5, "optimizer.lr": 0.1, "optimizer.beta": 0.999}
    labels = label_configs({
        "a": ("mlbfgs", base),
        "b": ("mlbfgs", {**base, "optimizer.beta": 0.9}),
        "c": ("sgd", {"epochs": 5, "optimizer.lr": 0.3}),
        "d": ("adam", {"epochs": 10, "optimizer.lr": 0.001}),
    })
    # a workload setting that differs anywhere in the figure is named in every label; an optimizer
    # setting only between configurations of the same optimizer
    assert labels == {"a": "mlbfgs beta=0.999 epochs=5", "b": "mlbfgs beta=0.9 epochs=5", "c": "sgd epochs=5",
                      "d": "adam epochs=10"}
    same = label_configs({"x__sgd__aa": ("sgd", {}), "x__sgd__bb": ("sgd", {})})
    assert same == {"x__sgd__aa": "sgd [aa]", "x__sgd__bb": "sgd [bb]"}


def test_manifest_settings_leave_out_the_seed_and_bookkeeping() -> None:
    manifest = {"seed": 3, "optimizer": "sgd", "max_iters": 7,
                "config": {"name": "w", "epochs": 2, "log_interval": 5, "data": {"dir": "/x", "name": "d"},
                           "optimizers": {"sgd": {"lr": 9}}, "optimizer_defaults": {"weight_decay": 1}},
                "optimizer_config": {"lr": 0.5, "momentum": 0.9}}
    assert manifest_settings(manifest) == {"epochs": 2, "data.name": "d", "optimizer": "sgd",
                                           "optimizer.lr": 0.5, "optimizer.momentum": 0.9, "max_iters": 7}
