"""``python -m analysis``: regenerate every figure and table (and optionally the README section), or
compare chosen runs.

python -m analysis [--results results] [--out results/figures] [--readme README.md]
python -m analysis compare RUN_OR_FOLDER [...] [--workload W] [--optimizer O ...] [--where lr=0.2 ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from analysis.compare import Selection, compare, parse_where  # noqa: E402
from analysis.load import SchemaError  # noqa: E402
from analysis.report import Options, generate, write_readme  # noqa: E402
from analysis.targets import TargetRule  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Regenerate the figures and tables of the mlbfgs benchmarks from the results CSVs.",
    )
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="results directory (default: results), or the folder `python -m experiments.run --out` wrote")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <results>/figures)")
    p.add_argument("--readme", type=Path, default=None, help="README whose marked results section to replace")
    p.add_argument(
        "--target-metric",
        choices=("test_acc", "train_loss"),
        default="test_acc",
        help="metric of the time-to-target table (default: test_acc)",
    )
    p.add_argument("--target-value", type=float, default=None, help="fixed target instead of the sgd-based rule")
    p.add_argument(
        "--target-fraction",
        type=float,
        default=0.99,
        help="target = fraction x sgd's final accuracy (loss: / fraction); default 0.99",
    )
    p.add_argument("--band", choices=("minmax", "std"), default="minmax", help="spread over seeds (default: minmax)")
    p.add_argument("--main-beta", type=float, default=0.999, help="mlbfgs beta of the main comparison (default 0.999)")
    p.add_argument("--quiet", action="store_true",
                   help="one summary line for the groups without CSVs instead of one line each")
    return p


def build_compare_parser() -> argparse.ArgumentParser:
    """The ``compare`` subcommand's interface."""
    p = argparse.ArgumentParser(
        prog="python -m analysis compare",
        description="Compare chosen runs: a table of final and best metrics, time to target and seconds per "
        "iteration per configuration (runs differing only in the seed are one configuration), and one "
        "convergence figure per workload.",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_FOLDER",
                   help="run CSVs, workload folders, folders `python -m experiments.run --out` wrote, or results trees")
    p.add_argument("--workload", nargs="+", default=[], help="only these workloads")
    p.add_argument("--optimizer", nargs="+", default=[], help="only these optimizers")
    p.add_argument("--where", nargs="+", default=[], metavar="SETTING=VALUE",
                   help="only runs whose configuration has these settings, e.g. lr=0.2 epochs=10")
    p.add_argument("--target", type=float, default=None,
                   help="target test accuracy (default: 0.99 x the best final test accuracy compared)")
    p.add_argument("--out", type=Path, default=Path("compare.png"),
                   help="the figure (default compare.png; with several workloads <stem>_<workload>.png)")
    p.add_argument("--no-figure", action="store_true", help="print the table only")
    return p


def compare_main(argv: Sequence[str]) -> int:
    """Run ``python -m analysis compare``; exit status 2 for bad input or no runs."""
    args = build_compare_parser().parse_args(argv)
    try:
        selection = Selection(tuple(args.workload), tuple(args.optimizer), parse_where(args.where))
        _, markdown, written = compare(args.paths, selection, args.target, None if args.no_figure else args.out)
    except (SchemaError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown)
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 on a schema error or when no results are found)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    args = build_parser().parse_args(argv)
    folder = args.results.parent if args.results.is_file() else args.results
    out = args.out if args.out is not None else folder / "figures"
    if not args.results.exists():
        print(f"error: --results {args.results}: no such file or directory", file=sys.stderr)
        return 2
    try:
        target = TargetRule(metric=args.target_metric, value=args.target_value, fraction=args.target_fraction)
        opts = Options(target=target, band=args.band, main_beta=args.main_beta)
        report = generate(args.results, out, opts, log=(lambda line: None) if args.quiet else print)
    except (SchemaError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not report.written:
        print(f"error: no results found under {args.results}: expected run CSVs (<results>/runs/<workload>/"
              "<run_id>.csv, or the folder `python -m experiments.run --out` wrote) or benchmark CSVs "
              "(overhead/, distributed/, ...)", file=sys.stderr)
        return 2
    if args.quiet and report.skipped:
        print(f"no CSVs for: {', '.join(report.skipped)}")
    print(f"wrote {len(report.written)} files to {out}")
    if args.readme is not None:
        write_readme(args.readme, args.results, out, report, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
