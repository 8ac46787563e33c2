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
    table, _, _ = compare([runner_out], Selection(optimizers=("sgd",)), 0.01, None)
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


def test_reference_with_several_configurations_is_its_best(tmp_path: Path, runner_out: Path) -> None:
    """Two sgd learning rates in one folder: the target comes from the better one, named in the caption."""
    from analysis.targets import reference_label, time_to_target_markdown

    runs = with_labels(load_runs(runner_out))
    extra = runs[runs["optimizer"] == "mlbfgs"].copy()  # pose the two mlbfgs configurations as sgd ones
    extra["optimizer"] = "sgd"
    extra["run_id"] = extra["run_id"] + "_as_sgd"
    extra["config"] = extra["config"] + "_as_sgd"
    both = with_labels(pd.concat([runs[runs["optimizer"] == "mlbfgs"], extra], ignore_index=True))
    rule = TargetRule()
    label = reference_label(both, rule, 0.02)
    finals = {lab: g[g["kind"] == "eval"].sort_values("iteration").groupby("run_id")["test_acc"].last().mean()
              for lab, g in both[both["optimizer"] == "sgd"].groupby("label")}
    assert label == max(finals, key=finals.get)
    table = time_to_target(both, rule)
    assert len(table) == 4 and table["target"].notna().all()
    assert f"of {label} (the best of sgd's configurations)" in time_to_target_markdown(table, both, rule)


def test_labels_without_manifests_stay_short(runner_out: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(runner_out, folder)
    (next(folder.glob("mnist1d-mlp/*sgd__s1*.json"))).unlink()  # one seed of sgd lost its manifest
    runs = with_labels(load_runs(folder))
    labels = sorted(runs["label"].unique())
    assert all(len(lab) < 40 for lab in labels), labels
    assert "mlbfgs lr=0.2" in labels and any(lab.startswith("sgd [") for lab in labels)


def test_runner_output_beside_a_suite_runs_folder_is_read(runner_out: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "suite_out"
    shutil.copytree(runner_out, root / "runs")  # a suite's runs/ ...
    one = next(runner_out.glob("mnist1d-mlp/*sgd__s0*"))
    (root / "mnist1d-mlp").mkdir()
    for path in runner_out.glob("mnist1d-mlp/" + one.name.split(".")[0] + ".*"):  # ... and a runner's --out
        shutil.copy(path, root / "mnist1d-mlp" / path.name.replace("__s0", "__s7"))
    assert load_runs(root)["source"].nunique() == 5


def test_analysis_of_one_csv_writes_beside_it(runner_out: Path, tmp_path: Path) -> None:
    import shutil

    csv = tmp_path / "one.csv"
    shutil.copy(next(runner_out.glob("mnist1d-mlp/*sgd__s0*.csv")), csv)
    assert analysis_main(["--results", str(csv), "--quiet"]) == 0
    assert (tmp_path / "figures" / "convergence_mnist1d-mlp.png").is_file()


def test_compare_refuses_bad_filters_and_outputs(runner_out: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert analysis_main(["compare", str(runner_out), "--optimizer", "sgd", "adam"]) == 2
    assert "got ['adam']" in capsys.readouterr().err
    for bad in ("1.5", "-1", "nan"):
        assert analysis_main(["compare", str(runner_out), "--target", bad]) == 2
        assert "--target must be" in capsys.readouterr().err
    assert analysis_main(["compare", str(runner_out), "--out", str(tmp_path)]) == 2
    assert "--out must be a .png" in capsys.readouterr().err
    # the same folder under two spellings counts once; the status comes from the manifests
    table, _, _ = compare([runner_out, runner_out / ".." / runner_out.name], Selection(optimizers=("sgd",)), None, None)
    assert table["seeds"].tolist() == [2] and table["status"].tolist() == ["2 finished"]


def test_the_constant_schedule_of_schedule_free_optimizers_is_not_a_label() -> None:
    """The protocol trains schedule-free optimizers at a constant lr: their schedule.kind alone does not label
    every configuration of the figure; a schedule that differs among the others still does."""
    cosine, constant = {"schedule.kind": "cosine"}, {"schedule.kind": "constant"}
    labels = label_configs({"a": ("sgd", cosine), "b": ("mlbfgs", cosine), "c": ("adamw_schedulefree", constant)})
    assert labels == {"a": "sgd", "b": "mlbfgs", "c": "adamw_schedulefree"}
    labels = label_configs({"a": ("sgd", cosine), "b": ("mlbfgs", constant), "c": ("adamw_schedulefree", constant)})
    assert labels["a"] == "sgd schedule.kind=cosine" and labels["b"] == "mlbfgs schedule.kind=constant"
