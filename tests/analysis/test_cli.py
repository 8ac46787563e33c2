"""``python -m analysis``: files produced, byte-stable tables, skipped groups, README section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.__main__ import main
from analysis.readme import END_MARKER, START_MARKER, replace_between_markers
from tests.support import REPO
from tests.support.fixtures_results import WORKLOADS, write_results_tree

EXPECTED = {
    *(f"convergence_{w}.png" for w in WORKLOADS),
    *(f"stability_{w}.png" for w in WORKLOADS),
    "time_to_target.md",
    "time_to_target.csv",
    "performance_profiles.md",
    "performance_profiles.csv",
    "performance_profiles.png",
    "orderings.md",
    "orderings.csv",
    "target_sensitivity.md",
    "target_sensitivity.csv",
    "target_sensitivity.png",
    "stability.md",
    "stability.csv",
    "overhead.png",
    "overhead.md",
    "overhead.csv",
    "distributed_scaling.png",
    "distributed_scaling.md",
    "distributed_scaling.csv",
    "fairness.png",
    "fairness.md",
    "fairness.csv",
}

README_HEAD = "# mlbfgs\n\nSome introduction that must stay.\n\n## Results\n\n"
README_TAIL = "\n\n## License\n\nMIT, unchanged.\n"


@pytest.fixture(scope="module")
def generated(results_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("figures")
    assert main(["--results", str(results_tree), "--out", str(out)]) == 0
    return out


def test_cli_writes_every_figure_and_table(generated: Path) -> None:
    assert {p.name for p in generated.iterdir()} == EXPECTED
    for png in generated.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in png.read_bytes()  # no matplotlib version stamp
    csv_text = (generated / "time_to_target.csv").read_text()
    assert csv_text.splitlines()[0].startswith("workload,optimizer,label,metric,target,seeds,seeds_reached")
    assert "mnist1d_mlp,mlbfgs,mlbfgs,test_acc,0.891000,2,2,62.500000,62.500000,0.781250,0.625000" in csv_text


def test_convergence_figures_draw_the_time_to_target_tables_target(
    results_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analysis import report

    drawn: dict[str, tuple[str, float]] = {}
    real = report.convergence_figures

    def spy(runs, band, smooth_fraction, targets=None):
        drawn.update(targets or {})
        return real(runs, band, smooth_fraction, targets)

    monkeypatch.setattr(report, "convergence_figures", spy)
    assert main(["--results", str(results_tree), "--out", str(tmp_path)]) == 0
    table = (tmp_path / "time_to_target.csv").read_text().splitlines()
    mlp = next(line.split(",") for line in table if line.startswith("mnist1d_mlp,"))
    assert drawn["mnist1d_mlp"] == ("test_acc", float(mlp[4]))
    assert set(drawn) == set(WORKLOADS)


def test_regeneration_is_byte_identical(results_tree: Path, generated: Path, tmp_path: Path) -> None:
    assert main(["--results", str(results_tree), "--out", str(tmp_path)]) == 0
    for name in sorted(EXPECTED):
        assert (tmp_path / name).read_bytes() == (generated / name).read_bytes(), name


def test_python_dash_m_entry_point(results_tree: Path, tmp_path: Path) -> None:
    root = write_results_tree(tmp_path / "results", runs=False)
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "--results", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (root / "figures" / "overhead.png").is_file()  # default --out is <results>/figures
    assert (root / "figures" / "distributed_scaling.png").is_file()
    notices = [line for line in proc.stdout.splitlines() if line.startswith("skipping")]
    assert notices == [
        f"skipping convergence curves: no run CSVs under {root / 'runs'}",
        f"skipping time to target: no run CSVs under {root / 'runs'}",
        f"skipping stability: no run CSVs under {root / 'runs'}",
        f"skipping direction kernel: no {root / 'overhead' / 'direction_kernel.csv'}",
        f"skipping sharding modes: no {root / 'distributed' / 'sharding_modes.csv'}",
        f"skipping threads: no {root / 'threads' / 'threads.csv'}",
        f"skipping construction: no {root / 'construction' / 'construction.csv'}",
        f"skipping compiled step: no {root / 'compile'}/steps.csv and summary.csv",
        f"skipping runner overhead: no {root / 'runner' / 'runner.csv'}",
        f"skipping ours vs the authors' code: no finished runs under {root / 'authors' / 'runs'}",
        f"skipping ablations: no finished runs under {root / 'ablations' / 'runs'}",
        f"skipping resnet diagnosis: no finished runs under {root / 'resnet_diagnosis' / 'runs'}",
        f"skipping block default: no finished runs under {root / 'block_defaults' / 'runs'}",
        f"skipping lr sensitivity: no {root / 'tuning'}/*_trials.csv",
        f"skipping compute: no run manifests with cpu_s under {root / 'runs'} or {root / 'tuning' / 'runs'}",
        "skipping paper: no runs of the paper's workloads (cifar10-resnet18, cifar100-resnet18, cifar100-deit, "
        "imagenet-resnet50)",
    ]


def test_every_group_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["--results", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    from analysis.groups import GROUPS

    assert captured.out.count("skipping") == len(GROUPS) + 3  # the groups and the three drawn by the report
    assert "error: no results found under" in captured.err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_runs_without_ablation_skip_only_stability(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_results_tree(tmp_path / "r", overhead=False, distributed=False)
    for p in (root / "runs").rglob("*slbfgs*"):
        p.unlink()
    for p in (root / "runs").rglob("*mlbfgs-b0.9*"):
        p.unlink()
    assert main(["--results", str(root), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "skipping stability: no workload has mlbfgs/slbfgs runs with two or more beta values" in out
    assert (tmp_path / "out" / "convergence_mnist1d_mlp.png").is_file()
    assert not list((tmp_path / "out").glob("stability*"))


def test_schema_error_exits_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_results_tree(tmp_path / "r", runs=False, distributed=False)
    path = root / "overhead" / "overhead.csv"
    path.write_text(path.read_text().replace("measure,repeat", "kind,repeat", 1))
    assert main(["--results", str(root), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: missing column(s) measure;" in err


def _readme(path: Path) -> bytes:
    text = README_HEAD + START_MARKER + "\nold generated text\n" + END_MARKER + README_TAIL
    path.write_bytes(text.encode())
    return path.read_bytes()


def test_readme_section_is_replaced_and_the_rest_kept(results_tree: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    _readme(readme)
    out = tmp_path / "results_figures"
    args = ["--results", str(results_tree), "--out", str(out), "--readme", str(readme)]
    assert main(args) == 0
    text = readme.read_text()
    assert text.startswith(README_HEAD + START_MARKER + "\n")
    assert text.endswith(END_MARKER + README_TAIL)
    section = text[text.index(START_MARKER) : text.index(END_MARKER)]
    assert "old generated text" not in section
    assert "#### Time to target: mnist1d_mlp" in section
    assert "| mlbfgs | 2/2 | 62.5 | 62.5 | 0.78 | 0.625 | 0.625 | n/a |" in section
    assert "python -m analysis --results " in section and " --readme README.md" in section
    links = [line[line.index("](") + 2 : -1] for line in section.splitlines() if line.startswith("![")]
    assert len(links) == 2
    assert links[0] == "results_figures/convergence_mnist1d_mlp.png"  # the workload with the most betas
    assert links[1] == "results_figures/stability_mnist1d_mlp.png"
    assert all((tmp_path / link).is_file() for link in links)
    first = readme.read_bytes()
    assert main(args) == 0
    assert readme.read_bytes() == first  # idempotent


def test_readme_without_markers_is_left_alone(results_tree: Path, tmp_path: Path, capsys) -> None:
    readme = tmp_path / "README.md"
    original = b"# Title\n\nNo markers here.\r\nKeep CRLF too.\r\n"
    readme.write_bytes(original)
    root = write_results_tree(tmp_path / "r", runs=False, distributed=False)
    assert main(["--results", str(root), "--out", str(tmp_path / "o"), "--readme", str(readme)]) == 0
    assert readme.read_bytes() == original
    assert "no '<!-- results:start -->' / '<!-- results:end -->' markers" in capsys.readouterr().out


def test_replace_between_markers() -> None:
    text = f"a\n{START_MARKER}\nx\n{END_MARKER}\nb\n{START_MARKER} again"
    assert (
        replace_between_markers(text, "\nnew\n\n") == f"a\n{START_MARKER}\nnew\n{END_MARKER}\nb\n{START_MARKER} again"
    )
    assert replace_between_markers(f"{END_MARKER}\n{START_MARKER}", "x") is None
    assert replace_between_markers("no markers", "x") is None


def test_quiet_summarises_the_missing_groups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_results_tree(tmp_path / "results", runs=False)
    assert main(["--results", str(root), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "skipping" not in out
    assert "no CSVs for: convergence curves, time to target, stability, direction kernel" in out
    assert (tmp_path / "out" / "overhead.png").is_file()
